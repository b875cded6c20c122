package cluster

import (
	"encoding/base64"
	"encoding/json"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"istio.io/istio/pkg/bootstrap"
	"istio.io/istio/pkg/kube/inject"

	"github.com/sms-checker/sms-checker-mesh/istiod-local/internal/install"
)

var issued = time.Date(2026, 9, 1, 12, 0, 0, 0, time.UTC)

// noInjection is an install for manifests whose pods do not ask for
// Istio's sidecar: the injector is never called.
var noInjection = &install.Install{Namespace: "istio-system"}

func synthesizeObjects(t *testing.T, in *install.Install, objects []runtime.Object) *Cluster {
	t.Helper()
	c, err := Synthesize(objects, in, netip.MustParsePrefix(podCIDR), rootPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func planFor(t *testing.T, c *Cluster, at time.Time) *Plan {
	t.Helper()
	plan, err := c.PlanFor(podCIDR, at)
	if err != nil {
		t.Fatal(err)
	}
	return plan
}

func findContainer(t *testing.T, plan *Plan, pod, container string) ContainerPlan {
	t.Helper()
	for _, p := range plan.Pods {
		if p.Namespace+"/"+p.Name != pod {
			continue
		}
		for _, c := range append(p.InitContainers, p.Containers...) {
			if c.Name == container {
				return c
			}
		}
	}
	t.Fatalf("no container %s in pod %s", container, pod)
	return ContainerPlan{}
}

func files(c ContainerPlan) map[string]string {
	out := map[string]string{}
	for _, f := range c.Files {
		out[f.Path] = f.Content
	}
	return out
}

func env(c ContainerPlan) map[string]string {
	out := map[string]string{}
	for _, e := range c.Env {
		out[e.Name] = e.Value
	}
	return out
}

// tokenClaims reads a projected service account token the way the
// synthesized API server's TokenReview does.
func tokenClaims(t *testing.T, token string) map[string]any {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", token)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	return claims
}

// The kubelet's rules, on a pod spec that uses each of them. Expected
// values follow the Kubernetes API reference: $(VAR) is expanded in `value`,
// command and args, with variables defined earlier (env) or at all
// (command, args); `$$` escapes a reference; unknown references stay;
// values read from fieldRef are not expanded; resource values are divided
// by the divisor and rounded up.
func TestPlanForKubeletRules(t *testing.T) {
	c := synthesizeObjects(t, noInjection, parse(t, readTestdata(t, "kubelet.yaml")).Kube)
	plan := planFor(t, c, issued)
	if len(plan.Pods) != 1 {
		t.Fatalf("want one pod, got %d", len(plan.Pods))
	}
	pod := plan.Pods[0]
	if want := []Sysctl{{Name: "net.ipv4.ip_unprivileged_port_start", Value: "0"}}; !reflect.DeepEqual(pod.Sysctls, want) {
		t.Errorf("sysctls: got %v, want %v", pod.Sysctls, want)
	}
	api := findContainer(t, plan, "shop/api-0", "api")

	wantEnv := []EnvVar{
		{"POD_NAME", "api-0"},
		{"POD_IP", "10.244.0.2"},
		{"NODE_IP", "10.244.0.1"},
		{"ACCOUNT", "api"},
		{"APP", "api"},
		{"NOTE", "$(POD_NAME)"},
		{"CPU_MILLIS", "500"},
		{"CPUS", "1"},
		{"MEMORY_MI", "64"},
		{"GREETING", "hello api-0 at 10.244.0.2"},
		{"EARLY", "$(LATER)"},
		{"LATER", "later"},
		{"ESCAPED", "$(POD_NAME)"},
	}
	checks := []struct {
		what      string
		got, want any
	}{
		{"env", api.Env, wantEnv},
		{"command", api.Command, []string{"/bin/api", "--pod=api-0"}},
		{"args", api.Args, []string{"--later=later", "--literal=$(POD_NAME)", "--unknown=$(NOPE)", "--cost=$5"}},
		{"uid/gid", []int64{*api.UID, *api.GID}, []int64{1001, 2000}},
		{"readiness", api.Ready, &HTTPProbe{Port: 8080, Path: "/ready"}},
		{"ports", api.Ports, []Port{{Name: "http", Port: 8080}}},
		{"dirs", api.Dirs, []Mount{
			{Path: "/etc/podinfo"}, {Path: "/var/run/projected", ReadOnly: true}, {Path: "/etc/settings"}, {Path: "/tmp"},
		}},
	}
	for _, check := range checks {
		if !reflect.DeepEqual(check.got, check.want) {
			t.Errorf("%s:\n got %v\nwant %v", check.what, check.got, check.want)
		}
	}

	got := files(api)
	token := got["/var/run/projected/token"]
	delete(got, "/var/run/projected/token")
	wantFiles := map[string]string{
		"/etc/podinfo/labels":         `app="api"`,
		"/etc/podinfo/annotations":    "note=\"$(POD_NAME)\"\nowner=\"team a\"",
		"/etc/podinfo/cpu_request":    "100",
		"/var/run/projected/name":     "api-0",
		"/var/run/projected/mode.txt": "fast",
		"/etc/settings/level":         "3",
		"/etc/settings/mode":          "fast",
		"/etc/settings/region":        "north",
		"/etc/settings/tier":          "gold",
		"/etc/settings/zone":          "a",
	}
	if !reflect.DeepEqual(got, wantFiles) {
		t.Errorf("files:\n got %q\nwant %q", got, wantFiles)
	}
	claims := tokenClaims(t, token)
	wantClaims := map[string]any{
		"sub": "system:serviceaccount:shop:api",
		"aud": []any{"istio-ca"},
		"iat": float64(issued.Unix()),
	}
	for k, v := range wantClaims {
		if !reflect.DeepEqual(claims[k], v) {
			t.Errorf("token claim %s: got %v, want %v", k, claims[k], v)
		}
	}
}

// The proxy container Istio's injector adds, resolved: its arguments use
// $(POD_NAMESPACE), its agent reads the pod's labels from a downward API
// file, authenticates with a token for istiod's CA and trusts the root
// certificate from the istio-ca-root-cert ConfigMap.
func TestPlanForInjectedProxy(t *testing.T) {
	c := synthesize(t, podCIDR)
	plan := planFor(t, c, issued)
	pod := podsByName(c)["shop/web-0"]
	proxy := findContainer(t, plan, "shop/web-0", inject.ProxyContainerName)

	if !strings.Contains(strings.Join(proxy.Args, " "), "--domain shop.svc.cluster.local") {
		t.Errorf("args: got %q, want --domain resolved to the pod's namespace", proxy.Args)
	}
	wantEnv := map[string]string{
		"POD_NAME":             "web-0",
		"POD_NAMESPACE":        "shop",
		"INSTANCE_IP":          pod.Status.PodIP,
		"HOST_IP":              c.NodeIP.String(),
		"SERVICE_ACCOUNT":      "default",
		"ISTIO_META_NODE_NAME": NodeName,
	}
	gotEnv := env(proxy)
	for k, v := range wantEnv {
		if gotEnv[k] != v {
			t.Errorf("env %s: got %q, want %q", k, gotEnv[k], v)
		}
	}
	var spec corev1.Container
	for _, c := range pod.Spec.Containers {
		if c.Name == inject.ProxyContainerName {
			spec = c
		}
	}
	if want := strconv.FormatInt(spec.Resources.Limits.Memory().Value(), 10); gotEnv["GOMEMLIMIT"] != want {
		t.Errorf("GOMEMLIMIT: got %q, want the memory limit %s", gotEnv["GOMEMLIMIT"], want)
	}

	got := files(proxy)
	for _, f := range []struct {
		path string
		want map[string]string
	}{
		{"/etc/istio/pod/labels", pod.Labels},
		{"/etc/istio/pod/annotations", pod.Annotations},
	} {
		parsed, err := bootstrap.ParseDownwardAPI(got[f.path])
		if err != nil {
			t.Fatalf("%s: %v", f.path, err)
		}
		if !reflect.DeepEqual(parsed, f.want) {
			t.Errorf("%s as Istio's agent reads it:\n got %v\nwant %v", f.path, parsed, f.want)
		}
	}
	if got["/var/run/secrets/istio/root-cert.pem"] != rootPEM {
		t.Errorf("root certificate: got %q", got["/var/run/secrets/istio/root-cert.pem"])
	}
	if aud := tokenClaims(t, got["/var/run/secrets/tokens/istio-token"])["aud"]; !reflect.DeepEqual(aud, []any{"istio-ca"}) {
		t.Errorf("token audience: got %v", aud)
	}
	for path := range got {
		if strings.HasPrefix(path, "/var/run/secrets/istio/crl/") {
			t.Errorf("the optional, absent istio-ca-crl ConfigMap projected %s", path)
		}
	}
	if *proxy.UID != 1337 || proxy.Ready == nil || proxy.Ready.Path != "/healthz/ready" {
		t.Errorf("proxy: uid %v, readiness %+v", *proxy.UID, proxy.Ready)
	}
}

// A plan for the same pods and issue time is the same plan, whatever the
// order maps are read in: the control plane compares plans to tell a change
// of Istio resources from a change of workloads.
func TestPlanForIsStable(t *testing.T) {
	in := istioInstall(t)
	objects := func() []runtime.Object {
		return append(parse(t, readTestdata(t, "kubelet.yaml")).Kube, parse(t, readTestdata(t, "workloads.yaml")).Kube...)
	}
	first := planFor(t, synthesizeObjects(t, in, objects()), issued)
	for i := range 5 {
		again := planFor(t, synthesizeObjects(t, in, objects()), issued)
		if !reflect.DeepEqual(first, again) {
			t.Fatalf("plan %d differs from the first for the same pods and issue time", i+1)
		}
	}
	later := planFor(t, synthesizeObjects(t, in, objects()), issued.Add(time.Second))
	if reflect.DeepEqual(first, later) {
		t.Errorf("a later issue time gave the same tokens")
	}
}

// What the kubelet would refuse to start is an error naming the pod and
// container.
func TestPlanForErrors(t *testing.T) {
	cases := []struct {
		name   string
		change func(*corev1.Pod)
		err    string
	}{
		{
			name: "unsupported field path",
			change: func(p *corev1.Pod) {
				p.Spec.Containers[0].Env[0].ValueFrom.FieldRef.FieldPath = "spec.hostname"
			},
			err: "env POD_NAME: unsupported field path spec.hostname",
		},
		{
			name: "secret source",
			change: func(p *corev1.Pod) {
				p.Spec.Containers[0].Env[0].ValueFrom = &corev1.EnvVarSource{
					SecretKeyRef: &corev1.SecretKeySelector{Key: "k"},
				}
			},
			err: "env POD_NAME: only fieldRef and resourceFieldRef",
		},
		{
			name:   "mount without volume",
			change: func(p *corev1.Pod) { p.Spec.Volumes = p.Spec.Volumes[1:] },
			err:    "volume mount podinfo names no volume",
		},
		{
			name: "missing ConfigMap",
			change: func(p *corev1.Pod) {
				p.Spec.Volumes[2].ConfigMap.Name = "absent"
			},
			err: "volume settings: ConfigMap absent.shop does not exist",
		},
		{
			name: "readiness probe on an unknown port name",
			change: func(p *corev1.Pod) {
				p.Spec.Containers[0].ReadinessProbe.HTTPGet.Port.StrVal = "admin"
			},
			err: `readiness probe: no container port named "admin"`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := synthesizeObjects(t, noInjection, parse(t, readTestdata(t, "kubelet.yaml")).Kube)
			tc.change(c.Pods[0])
			_, err := c.PlanFor(podCIDR, issued)
			want := "pod api-0.shop container api: " + tc.err
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("want error %q, got %v", want, err)
			}
		})
	}
}
