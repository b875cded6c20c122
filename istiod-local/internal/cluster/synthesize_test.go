package cluster

import (
	"encoding/json"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"istio.io/istio/pilot/cmd/pilot-agent/status"
	"istio.io/istio/pkg/kube/inject"
)

// rootPEM stands in for the mesh's root certificate; Synthesize only copies it.
const rootPEM = "-----BEGIN CERTIFICATE-----\ntest root\n-----END CERTIFICATE-----\n"

func synthesize(t *testing.T, cidr string) *Cluster {
	t.Helper()
	c, err := Synthesize(parse(t, readTestdata(t, "workloads.yaml")).Kube, istioInstall(t), netip.MustParsePrefix(cidr), rootPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func podsByName(c *Cluster) map[string]*corev1.Pod {
	out := map[string]*corev1.Pod{}
	for _, p := range c.Pods {
		out[p.Namespace+"/"+p.Name] = p
	}
	return out
}

// Replicas become pods in Deployment order (namespace, then name), with
// consecutive addresses after the node's, the first host of the network.
func TestSynthesizePods(t *testing.T) {
	cases := []struct {
		cidr string
		node string
		// Pods in start order, with their addresses.
		pods []string
		err  string
	}{
		{
			cidr: "10.244.0.0/24",
			node: "10.244.0.1",
			pods: []string{"data/db-0=10.244.0.2", "shop/web-0=10.244.0.3", "shop/web-1=10.244.0.4"},
		},
		{
			cidr: "192.168.7.128/25",
			node: "192.168.7.129",
			pods: []string{"data/db-0=192.168.7.130", "shop/web-0=192.168.7.131", "shop/web-1=192.168.7.132"},
		},
		{
			// The node and two pods fit; the third does not.
			cidr: "10.0.0.0/30",
			err:  "pod network 10.0.0.0/30 is full",
		},
	}
	in := istioInstall(t)
	objects := parse(t, readTestdata(t, "workloads.yaml")).Kube
	for _, tc := range cases {
		t.Run(tc.cidr, func(t *testing.T) {
			c, err := Synthesize(objects, in, netip.MustParsePrefix(tc.cidr), rootPEM)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("want error %q, got %v", tc.err, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.NodeIP.String() != tc.node {
				t.Errorf("node: got %s, want %s", c.NodeIP, tc.node)
			}
			var got []string
			for _, p := range c.Pods {
				got = append(got, p.Namespace+"/"+p.Name+"="+p.Status.PodIP)
				if p.Status.HostIP != tc.node || p.Spec.NodeName != NodeName {
					t.Errorf("%s: host %s on %s, want %s on %s", p.Name, p.Status.HostIP, p.Spec.NodeName, tc.node, NodeName)
				}
				if !podReady(p) {
					t.Errorf("%s: not Running and Ready: %+v", p.Name, p.Status)
				}
			}
			if !reflect.DeepEqual(got, tc.pods) {
				t.Errorf("pods: got %v, want %v", got, tc.pods)
			}
			var nodes []string
			for _, o := range c.Objects {
				if n, ok := o.(*corev1.Node); ok {
					for _, a := range n.Status.Addresses {
						nodes = append(nodes, n.Name+"="+a.Address)
					}
				}
			}
			if want := []string{NodeName + "=" + tc.node}; !reflect.DeepEqual(nodes, want) {
				t.Errorf("nodes: got %v, want %v", nodes, want)
			}
		})
	}
}

// Pods without a Running phase and a Ready condition get no endpoints in
// Istio's registry.
func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return p.Status.Phase == corev1.PodRunning && c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// Istio's injector, with the istiod chart's templates, runs on the pods
// that ask for it, and only on those.
func TestSynthesizeInjection(t *testing.T) {
	c := synthesize(t, podCIDR)
	statusPort := strconv.Itoa(int(istioInstall(t).Mesh.GetDefaultConfig().GetStatusPort()))
	cases := []struct {
		pod            string
		initContainers []string
		containers     []string
		// Annotations after injection; the original Prometheus ones move
		// to the proxy, which merges the app's metrics with its own.
		annotations map[string]string
		scrape      *status.PrometheusScrapeConfiguration
	}{
		{
			pod:            "shop/web-0",
			initContainers: []string{inject.InitContainerName},
			containers:     []string{"web", inject.ProxyContainerName},
			annotations: map[string]string{
				"prometheus.io/scrape": "true",
				"prometheus.io/port":   statusPort,
				"prometheus.io/path":   "/stats/prometheus",
			},
			scrape: &status.PrometheusScrapeConfiguration{Scrape: "true", Port: "9090", Path: "/metrics"},
		},
		{
			pod:            "shop/web-1",
			initContainers: []string{inject.InitContainerName},
			containers:     []string{"web", inject.ProxyContainerName},
		},
		{
			pod:        "data/db-0",
			containers: []string{"db"},
		},
	}
	pods := podsByName(c)
	for _, tc := range cases {
		t.Run(tc.pod, func(t *testing.T) {
			pod := pods[tc.pod]
			if pod == nil {
				t.Fatalf("no pod %s", tc.pod)
			}
			if got := containerNames(pod.Spec.InitContainers); !reflect.DeepEqual(got, tc.initContainers) {
				t.Errorf("init containers: got %v, want %v", got, tc.initContainers)
			}
			if got := containerNames(pod.Spec.Containers); !reflect.DeepEqual(got, tc.containers) {
				t.Errorf("containers: got %v, want %v", got, tc.containers)
			}
			_, injected := pod.Annotations["sidecar.istio.io/status"]
			if want := slices.Contains(tc.containers, inject.ProxyContainerName); injected != want {
				t.Errorf("sidecar.istio.io/status present: %v, want %v", injected, want)
			}
			for k, v := range tc.annotations {
				if pod.Annotations[k] != v {
					t.Errorf("annotation %s: got %q, want %q", k, pod.Annotations[k], v)
				}
			}
			if tc.scrape != nil {
				var got status.PrometheusScrapeConfiguration
				value := proxyEnv(pod, status.PrometheusScrapingConfig.Name)
				if err := json.Unmarshal([]byte(value), &got); err != nil {
					t.Fatalf("%s=%q: %v", status.PrometheusScrapingConfig.Name, value, err)
				}
				if !reflect.DeepEqual(&got, tc.scrape) {
					t.Errorf("%s: got %+v, want %+v", status.PrometheusScrapingConfig.Name, got, *tc.scrape)
				}
			}
		})
	}
}

func containerNames(cs []corev1.Container) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

func proxyEnv(pod *corev1.Pod, name string) string {
	for _, c := range pod.Spec.Containers {
		if c.Name != inject.ProxyContainerName {
			continue
		}
		for _, e := range c.Env {
			if e.Name == name {
				return e.Value
			}
		}
	}
	return ""
}

// The EndpointSlice controller's work: one slice per Service with a
// selector, its ready pods, and named target ports resolved against the
// pods' container ports.
func TestSynthesizeEndpointSlices(t *testing.T) {
	c := synthesize(t, podCIDR)
	byService := map[string]*discoveryv1.EndpointSlice{}
	for _, o := range c.Objects {
		if s, ok := o.(*discoveryv1.EndpointSlice); ok {
			byService[s.Namespace+"/"+s.Labels[discoveryv1.LabelServiceName]] = s
		}
	}
	cases := []struct {
		service string
		// Port name → the port the pods listen on; nil: no slice.
		ports map[string]int32
		// Endpoint address → its pod.
		endpoints map[string]string
	}{
		{
			service:   "shop/web",
			ports:     map[string]int32{"http": 8080, "metrics": 9090},
			endpoints: map[string]string{"10.244.0.3": "web-0", "10.244.0.4": "web-1"},
		},
		{
			service:   "data/db",
			ports:     map[string]int32{"tcp-sql": 5432},
			endpoints: map[string]string{"10.244.0.2": "db-0"},
		},
		{service: "data/legacy"},
	}
	for _, tc := range cases {
		t.Run(tc.service, func(t *testing.T) {
			s := byService[tc.service]
			if tc.ports == nil {
				if s != nil {
					t.Fatalf("a Service without a selector got a slice: %+v", s)
				}
				return
			}
			if s == nil {
				t.Fatalf("no EndpointSlice for %s", tc.service)
			}
			ports := map[string]int32{}
			for _, p := range s.Ports {
				ports[*p.Name] = *p.Port
			}
			if !reflect.DeepEqual(ports, tc.ports) {
				t.Errorf("ports: got %v, want %v", ports, tc.ports)
			}
			endpoints := map[string]string{}
			for _, e := range s.Endpoints {
				if e.Conditions.Ready == nil || !*e.Conditions.Ready || e.TargetRef == nil || e.TargetRef.Kind != "Pod" {
					t.Errorf("endpoint %v: want a ready Pod reference, got %+v", e.Addresses, e)
					continue
				}
				endpoints[strings.Join(e.Addresses, ",")] = e.TargetRef.Name
			}
			if !reflect.DeepEqual(endpoints, tc.endpoints) {
				t.Errorf("endpoints: got %v, want %v", endpoints, tc.endpoints)
			}
		})
	}
}

// Every namespace in use exists once, and holds the root certificate as
// istiod's namespace controller publishes it.
func TestSynthesizeNamespaces(t *testing.T) {
	c := synthesize(t, podCIDR)
	namespaces := map[string]map[string]string{}
	roots := map[string]string{}
	for _, o := range c.Objects {
		switch o := o.(type) {
		case *corev1.Namespace:
			if _, dup := namespaces[o.Name]; dup {
				t.Errorf("namespace %s twice", o.Name)
			}
			namespaces[o.Name] = o.Labels
		case *corev1.ConfigMap:
			if o.Name == "istio-ca-root-cert" {
				roots[o.Namespace] = o.Data["root-cert.pem"]
			}
		}
	}
	want := map[string]map[string]string{
		"data":         nil,
		"istio-system": nil,
		"shop":         {"team": "shop"},
	}
	if !reflect.DeepEqual(namespaces, want) {
		t.Errorf("namespaces: got %v, want %v", namespaces, want)
	}
	for ns := range want {
		if roots[ns] != rootPEM {
			t.Errorf("istio-ca-root-cert in %s: got %q, want the root", ns, roots[ns])
		}
	}
	if len(roots) != len(want) {
		t.Errorf("istio-ca-root-cert in %d namespaces, want %d", len(roots), len(want))
	}
}
