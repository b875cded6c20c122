package pilot

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	kubeyaml "k8s.io/apimachinery/pkg/util/yaml"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	k8stesting "k8s.io/client-go/testing"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"

	"istio.io/istio/cni/pkg/util"
	"istio.io/istio/pilot/pkg/config/kube/gatewaycommon"
	"istio.io/istio/pilot/pkg/model"
	"istio.io/istio/pkg/config/mesh/meshwatcher"
	kubelib "istio.io/istio/pkg/kube"
	"istio.io/istio/pkg/kube/inject"
	"istio.io/istio/pkg/revisions"
	"istio.io/istio/pkg/test"

	"github.com/sms-checker/sms-checker-mesh/istiod-local/internal/cluster"
	"github.com/sms-checker/sms-checker-mesh/istiod-local/internal/install"
	"github.com/sms-checker/sms-checker-mesh/istiod-local/internal/testcharts"
)

// The chart's Gateway API mode on Istio's control plane: the Gateway API
// objects reach pilot's Gateway API controller through the API server (a
// fake clientset), as in a cluster, and the pods of each Gateway are the
// ones Istio's own gateway deployment controller renders for it.

const gatewayAPIGroup = "gateway.networking.k8s.io"

// kubeGatewayAPIObjects decodes the manifest's Gateway API objects: pilot's
// Gateway API controller reads them from the API server, not from the
// config store ParseManifest fills.
func kubeGatewayAPIObjects(t *testing.T, text string) []runtime.Object {
	t.Helper()
	reader := kubeyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(text)))
	decode := kubelib.IstioCodec.UniversalDeserializer().Decode
	var out []runtime.Object
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(meta.APIVersion, gatewayAPIGroup+"/") {
			continue
		}
		obj, _, err := decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("%s: %v", meta.Kind, err)
		}
		out = append(out, obj)
	}
}

// deployGateways runs Istio's gateway deployment controller (what istiod
// runs for Gateways of its classes: istio, istio-waypoint) with the
// templates and values of the rendered istiod chart, and returns what it
// applies for each Gateway (ServiceAccount, Deployment, Service), as the
// API server would store them.
func deployGateways(t *testing.T, istio *install.Install, objects []runtime.Object) []runtime.Object {
	t.Helper()
	var gateways []*gatewayv1.Gateway
	namespaces := map[string]bool{}
	for _, o := range objects {
		if gw, ok := o.(*gatewayv1.Gateway); ok {
			gateways = append(gateways, gw)
			namespaces[gw.Namespace] = true
		}
	}
	if len(gateways) == 0 {
		return nil
	}
	seed := []runtime.Object{}
	for ns := range namespaces {
		seed = append(seed, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	}
	for _, gw := range gateways {
		seed = append(seed, gw.DeepCopy())
	}
	client := kubelib.NewFakeClient(seed...)
	// The controller applies with server-side apply, which the fake API
	// server does not implement: keep what it applies instead.
	var applied []string
	client.Dynamic().(*dynamicfake.FakeDynamicClient).PrependReactor("patch", "*",
		func(action k8stesting.Action) (bool, runtime.Object, error) {
			patch, ok := action.(k8stesting.PatchAction)
			if !ok {
				return false, nil, nil
			}
			applied = append(applied, string(patch.GetPatch()))
			return true, nil, nil
		})
	env := model.NewEnvironment()
	env.Watcher = meshwatcher.NewTestWatcher(istio.Mesh)
	stop := test.NewStop(t)
	tags := revisions.NewTagWatcher(client, "", istio.Namespace)
	go tags.Run(stop)
	webhook := func() inject.WebhookConfig {
		return inject.WebhookConfig{Templates: istio.Injector.Templates, Values: istio.Values, MeshConfig: istio.Mesh}
	}
	controller := gatewaycommon.NewDeploymentController(client, "Kubernetes", env, webhook, func(func()) {}, tags, "", istio.Namespace)
	client.RunAndWait(stop)
	deadline := time.Now().Add(10 * time.Second)
	for !tags.HasSynced() {
		if time.Now().After(deadline) {
			t.Fatal("Istio's tag watcher did not sync")
		}
		time.Sleep(5 * time.Millisecond)
	}
	for _, gw := range gateways {
		if err := controller.Reconcile(types.NamespacedName{Namespace: gw.Namespace, Name: gw.Name}); err != nil {
			t.Fatalf("Istio's gateway deployment controller on Gateway %s.%s: %v", gw.Name, gw.Namespace, err)
		}
	}
	var out []runtime.Object
	decode := kubelib.IstioCodec.UniversalDeserializer().Decode
	for _, doc := range applied {
		obj, _, err := decode([]byte(doc), nil, nil)
		if err != nil {
			t.Fatalf("applied object: %v\n%s", err, doc)
		}
		switch o := obj.(type) {
		case *corev1.Service:
			// The API server's defaulting (SetDefaults_Service): a port
			// without a target port targets the same number.
			for i, p := range o.Spec.Ports {
				if p.TargetPort.IntVal == 0 && p.TargetPort.StrVal == "" {
					o.Spec.Ports[i].TargetPort = intstr.FromInt32(p.Port)
				}
			}
			out = append(out, o)
		case *appsv1.Deployment, *corev1.ServiceAccount:
			out = append(out, obj)
		}
	}
	deployed := 0
	for _, o := range out {
		if _, ok := o.(*appsv1.Deployment); ok {
			deployed++
		}
	}
	if deployed != len(gateways) {
		t.Fatalf("Istio deployed %d of %d Gateways (applied %d objects)", deployed, len(gateways), len(applied))
	}
	return out
}

// startGatewayAPIMesh runs pilot on the app's manifest with its Gateways
// deployed by Istio.
func startGatewayAPIMesh(t *testing.T, appText string) *mesh {
	t.Helper()
	return startGatewayAPIMeshWith(t, appText, func(*testing.T, []runtime.Object) {})
}

// startGatewayAPIMeshWith is startGatewayAPIMesh on Istio's install
// rendered with `istiodSets`, where `adjust` may complete the objects (a
// status a controller would write) before the API server holds them.
func startGatewayAPIMeshWith(t *testing.T, appText string, adjust func(*testing.T, []runtime.Object), istiodSets ...string) *mesh {
	t.Helper()
	istioManifest := parse(t, testcharts.Istiod(t, istiodSets...))
	istio, err := install.Read(istioManifest.Kube)
	if err != nil {
		t.Fatal(err)
	}
	m := &mesh{app: parse(t, appText), install: istioManifest.Istio}
	gatewayAPI := kubeGatewayAPIObjects(t, appText)
	kube := slices.Concat(m.app.Kube, gatewayAPI, deployGateways(t, istio, gatewayAPI))
	adjust(t, kube)
	m.configs = slices.Concat(m.app.Istio, m.install)
	if m.cluster, err = cluster.Synthesize(kube, istio, netip.MustParsePrefix(podCIDR), rootPEM); err != nil {
		t.Fatal(err)
	}
	if m.plan, err = m.cluster.PlanFor(podCIDR, issued); err != nil {
		t.Fatal(err)
	}
	if m.Server, err = Start(t, Options{Istio: istio, Objects: m.cluster.Objects, Configs: m.configs}); err != nil {
		t.Fatal(err)
	}
	return m
}

// enrollAmbientPods does istio-cni's part for the pods it would capture:
// its enablement selectors (Istio's cni chart, rendered) decide, and its
// node agent's annotation marks each captured pod, which pilot's ambient
// index requires before it sends the pod's traffic through ztunnel.
func (m *mesh) enrollAmbientPods(t *testing.T) []types.NamespacedName {
	t.Helper()
	selectors := ambientEnablementSelectors(t)
	namespaceLabels := map[string]map[string]string{}
	for _, o := range m.cluster.Objects {
		if ns, ok := o.(*corev1.Namespace); ok {
			namespaceLabels[ns.Name] = ns.Labels
		}
	}
	var enrolled []types.NamespacedName
	for _, pod := range m.cluster.Pods {
		if !selectors.Matches(pod, namespaceLabels[pod.Namespace]) {
			continue
		}
		if err := util.AnnotateEnrolledPod(m.KubeClient().Kube(), &pod.ObjectMeta); err != nil {
			t.Fatalf("annotate pod %s.%s: %v", pod.Name, pod.Namespace, err)
		}
		enrolled = append(enrolled, types.NamespacedName{Namespace: pod.Namespace, Name: pod.Name})
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, name := range enrolled {
		for {
			pod, err := m.KubeClient().Kube().CoreV1().Pods(name.Namespace).Get(context.Background(), name.Name, metav1.GetOptions{})
			if err == nil && util.PodFullyEnrolled(pod) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("pod %s not annotated: %v", name, err)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	m.EnsureSynced(t)
	return enrolled
}

// ambientEnablementSelectors are the pods istio-cni captures: its chart's
// AMBIENT_ENABLEMENT_SELECTOR, parsed and compiled as the CNI agent does.
func ambientEnablementSelectors(t *testing.T) *util.CompiledEnablementSelectors {
	t.Helper()
	chart := parse(t, testcharts.Helm(t, "istio-cni", testcharts.IstioFile(t, "manifests/charts/istio-cni"),
		"--namespace", "istio-system", "--set", "profile=ambient"))
	for _, o := range chart.Kube {
		cm, ok := o.(*corev1.ConfigMap)
		if !ok || cm.Name != "istio-cni-config" {
			continue
		}
		var selectors []util.EnablementSelector
		if err := yaml.Unmarshal([]byte(cm.Data["AMBIENT_ENABLEMENT_SELECTOR"]), &selectors); err != nil {
			t.Fatal(err)
		}
		compiled, err := util.NewCompiledEnablementSelectors(selectors)
		if err != nil {
			t.Fatal(err)
		}
		return compiled
	}
	t.Fatal("Istio's cni chart rendered no istio-cni-config ConfigMap")
	return nil
}
