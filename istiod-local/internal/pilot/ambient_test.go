package pilot

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"testing"

	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	wasm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/wasm/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshconfig "istio.io/api/mesh/v1alpha1"
	"istio.io/istio/pilot/pkg/model"
	"istio.io/istio/pilot/pkg/simulation"
	"istio.io/istio/pilot/test/xdstest"
	"istio.io/istio/pkg/config/host"
	"istio.io/istio/pkg/wellknown"

	"github.com/sms-checker/sms-checker-mesh/istiod-local/internal/install"
	"github.com/sms-checker/sms-checker-mesh/istiod-local/internal/testcharts"
)

// The chart's ambient profile on Istio's control plane in its ambient
// profile: no sidecars; ztunnel (not run here: it is Istio's Rust node
// proxy, and no registry reachable here serves it) carries the pods'
// traffic; the waypoint Istio deploys for the chart's waypoint Gateway
// applies the mesh route and runs the filter's sidecar role per version;
// the ingress gateway sends each version's traffic through the waypoint.
// What runs: Istio's translation for each proxy (ingress, waypoint), as
// istiod would serve it.

const (
	waypoint    = "model-service-waypoint"
	waypointPod = "model-service-waypoint-0.default"
	// istiod's ambient profile, rendered from its chart.
	ambientProfile = "profile=ambient"
)

// Istio reads its feature flags once, when the process starts, as istiod
// reads its Deployment's environment: the ambient tests run in a second
// test process started with the environment of the istiod chart rendered
// in its ambient profile (PILOT_ENABLE_AMBIENT=true and what it implies).
func TestAmbient(t *testing.T) {
	if os.Getenv("ISTIOD_LOCAL_ENV_APPLIED") != "1" {
		istio, err := install.Read(parse(t, testcharts.Istiod(t, ambientProfile)).Kube)
		if err != nil {
			t.Fatal(err)
		}
		if istio.Env["PILOT_ENABLE_AMBIENT"] != "true" {
			t.Fatalf("istiod's ambient profile does not turn ambient on: %v", istio.Env)
		}
		env := os.Environ()
		keys := make([]string, 0, len(istio.Env))
		for k := range istio.Env {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			env = append(env, k+"="+istio.Env[k])
		}
		cmd := exec.Command(os.Args[0], "-test.run=^TestAmbient$", "-test.v", "-test.count=1")
		cmd.Env = append(env, "ISTIOD_LOCAL_ENV_APPLIED=1")
		out, err := cmd.CombinedOutput()
		var passed []string
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, "--- ") {
				passed = append(passed, strings.TrimSpace(line))
			}
		}
		if err != nil {
			t.Fatalf("ambient tests (PILOT_ENABLE_AMBIENT=true): %v\n%s", err, out)
		}
		if !slices.ContainsFunc(passed, func(l string) bool { return strings.HasPrefix(l, "--- PASS: TestAmbient ") }) {
			t.Fatalf("the ambient tests did not run:\n%s", out)
		}
		t.Log(strings.Join(passed, "\n"))
		return
	}
	for _, api := range []string{"WasmPlugin", "TrafficExtension"} {
		t.Run(api, func(t *testing.T) {
			m := startAmbientMesh(t, "filter.api="+api)
			t.Run("waypoint", func(t *testing.T) { checkWaypoint(t, m) })
			t.Run("ingress", func(t *testing.T) { checkAmbientIngress(t, m) })
		})
	}
	t.Run("a selector misses the waypoint", func(t *testing.T) {
		// The sidecar role attached as in sidecar mode, by the pods'
		// labels: the pods have no proxy and the waypoint does not carry
		// their labels, so no proxy runs it. The waypoint check then fails.
		app := editManifest(t, ambientApp(t, "filter.api=TrafficExtension"), "TrafficExtension", func(obj map[string]any) {
			name := obj["metadata"].(map[string]any)["name"].(string)
			if version, ok := strings.CutPrefix(name, "sms-checker-cohort-v"); ok {
				spec := obj["spec"].(map[string]any)
				delete(spec, "targetRefs")
				spec["selector"] = map[string]any{"matchLabels": map[string]any{"app": "model-service", "version": "v" + version}}
			}
		})
		m := startAmbientMeshFrom(t, app)
		for _, version := range []string{"v1", "v2", "v3"} {
			f := waypointFilters(t, m, vipChain("model-service-"+version))
			if len(f.roles) != 0 {
				t.Errorf("%s chain at the waypoint runs %v: a selector should not reach it", version, f.roles)
			}
		}
	})
}

func ambientApp(t *testing.T, sets ...string) string {
	t.Helper()
	return gatewayAPIApp(t, append([]string{"istio.dataplaneMode=ambient"}, sets...)...)
}

func startAmbientMesh(t *testing.T, sets ...string) *mesh {
	t.Helper()
	return startAmbientMeshFrom(t, ambientApp(t, sets...))
}

// startAmbientMeshFrom runs pilot in its ambient profile on the app, with
// each Gateway's status as istiod writes it, and the pods istio-cni would
// capture marked captured.
func startAmbientMeshFrom(t *testing.T, app string) *mesh {
	t.Helper()
	m := startGatewayAPIMeshWith(t, app, waypointStatus, ambientProfile)
	enrolled := m.enrollAmbientPods(t)
	var names []string
	for _, n := range enrolled {
		names = append(names, n.Name)
	}
	sort.Strings(names)
	if want := []string{"model-deployment-v1-0", "model-deployment-v2-0", "model-deployment-v3-0"}; !slices.Equal(names, want) {
		t.Fatalf("istio-cni would capture %v, want the model-service pods %v", names, want)
	}
	return m
}

// waypointStatus is the address istiod's Gateway status controller writes
// for a waypoint (its Service's name; the ambient index finds the waypoint
// by it), checked against the Service Istio's deployment controller made.
func waypointStatus(t *testing.T, objects []runtime.Object) {
	t.Helper()
	if !slices.ContainsFunc(objects, func(o runtime.Object) bool {
		svc, ok := o.(*corev1.Service)
		return ok && svc.Name == waypoint && svc.Namespace == "default"
	}) {
		t.Fatalf("Istio deployed no Service %s for the waypoint", waypoint)
	}
	for _, o := range objects {
		if gw, ok := o.(*gatewayv1.Gateway); ok && gw.Name == waypoint {
			hostname := gatewayv1.HostnameAddressType
			gw.Status.Addresses = []gatewayv1.GatewayStatusAddress{{Type: &hostname, Value: waypoint + ".default.svc.cluster.local"}}
		}
	}
}

// vipChain is the waypoint's filter chain for a Service it serves.
func vipChain(service string) string {
	return model.BuildSubsetKey(model.TrafficDirectionInboundVIP, "http",
		host.Name(service+".default.svc.cluster.local"), modelServicePort)
}

// waypointCluster is the waypoint's cluster for a version's Service.
func waypointCluster(version string) string {
	return model.BuildSubsetKey(model.TrafficDirectionInboundVIP, "http",
		host.Name("model-service-"+version+".default.svc.cluster.local"), modelServicePort)
}

func waypointProxy(t *testing.T, m *mesh) *model.Proxy {
	t.Helper()
	proxy := m.proxy(t, waypointPod)
	if proxy.Type != model.Waypoint {
		t.Fatalf("%s is a %s, want a waypoint", waypointPod, proxy.Type)
	}
	// The waypoint Gateway's infrastructure annotations reach its pods: the
	// stat tags that make the sidecar role's metrics labelled.
	if tags := (*meshconfig.ProxyConfig)(proxy.Metadata.ProxyConfig).GetExtraStatTags(); !slices.Contains(tags, "version") {
		t.Fatalf("%s: extraStatTags %v lack the filter's", waypointPod, tags)
	}
	return proxy
}

// waypointFilters are the cohort filters of one of the waypoint's chains.
func waypointFilters(t *testing.T, m *mesh, chain string) chainFilters {
	t.Helper()
	proxy := waypointProxy(t, m)
	sim := simulation.NewSimulation(t, m.FakeDiscoveryServer, proxy)
	return cohortFilters(t, m, proxy, sim, simulation.Result{ListenerMatched: "main_internal", FilterChainMatched: chain})
}

// sidecarConfig is what the waypoint's cohort filter of a chain is told.
type sidecarConfig struct {
	Role     string `json:"role"`
	Version  string `json:"version"`
	Mirrored bool   `json:"mirrored"`
}

// checkWaypoint: each version's Service has a chain at the waypoint whose
// HTTP filters run the cohort filter in the sidecar role for that version
// (v3 marked mirrored) before the router; the model-service's chain
// carries the mesh route: the cohort header picks the version, the weights
// split the rest, every route mirrors to v3.
func checkWaypoint(t *testing.T, m *mesh) {
	proxy := waypointProxy(t, m)
	listeners := m.Listeners(proxy)
	main := xdstest.ExtractListener("main_internal", listeners)
	if main == nil {
		t.Fatalf("waypoint has no main_internal listener: %v", xdstest.ExtractListenerNames(listeners))
	}
	for _, version := range []string{"v1", "v2", "v3"} {
		chain := vipChain("model-service-" + version)
		f := waypointFilters(t, m, chain)
		want := "default.sms-checker-cohort-" + version
		at, ok := f.roles[want]
		if !ok || len(f.roles) != 1 || f.router < 0 || at.index > f.router {
			t.Errorf("%s: HTTP filters %v (cohort filters %v): want only %s, before %s", chain, f.names, f.roles, want, wellknown.Router)
			continue
		}
		config := served(t, m, proxy, f.names[at.index])
		if config != (sidecarConfig{Role: "sidecar", Version: version, Mirrored: version == "v3"}) {
			t.Errorf("%s: the filter is told %+v", chain, config)
		}
	}
	routes := inlineRoutes(t, xdstest.ExtractFilterChain(vipChain("model-service"), main))
	canary := routes["cohort-canary"]
	if canary == nil || canary.GetRoute().GetCluster() != waypointCluster("v2") || !matchesCohort(canary, "canary") {
		t.Errorf("cohort-canary: %v", canary)
	}
	split := routes["split"]
	var weights []string
	for _, c := range split.GetRoute().GetWeightedClusters().GetClusters() {
		weights = append(weights, fmt.Sprintf("%s=%d", c.Name, c.GetWeight().GetValue()))
	}
	if want := []string{waypointCluster("v1") + "=90", waypointCluster("v2") + "=10"}; !slices.Equal(weights, want) {
		t.Errorf("split: %v, want %v", weights, want)
	}
	for name, r := range routes {
		if name == "cohort-canary" || name == "cohort-stable" || name == "split" {
			mirrors := r.GetRoute().GetRequestMirrorPolicies()
			if len(mirrors) != 1 || mirrors[0].Cluster != waypointCluster("v3") || mirrorFraction(t, r) != 100 {
				t.Errorf("%s mirrors %v", name, mirrors)
			}
		}
	}
	if len(routes) < 3 {
		t.Errorf("mesh routes at the waypoint: %v", routes)
	}
}

// checkAmbientIngress: the ingress gateway runs the gateway role, routes on
// the cohort header with the mirror, and sends every version's requests to
// the waypoint (istio.io/ingress-use-waypoint) over HBONE, not to the pods.
func checkAmbientIngress(t *testing.T, m *mesh) {
	proxy := ingressProxy(t, m)
	sim := simulation.NewSimulation(t, m.FakeDiscoveryServer, proxy)
	got, res, matched := request(t, sim, cohortRequest("sms-checker.local", "canary", 80, simulation.CallModeGateway))
	if want := (outcome{route: "cohort-canary", to: versionCluster("v2"), mirror: versionCluster("v3")}); got != want {
		t.Fatalf("got %v\nwant %v", got, want)
	}
	if share := mirrorFraction(t, matched); share != 100 {
		t.Errorf("mirror %v%%", share)
	}
	f := cohortFilters(t, m, proxy, sim, res)
	if at, ok := f.roles["default.sms-checker-cohort-gateway"]; !ok || at.role != "gateway" || at.index > f.router {
		t.Errorf("HTTP filters %v: want the gateway's cohort filter before the router", f.names)
	}
	waypointIP := ""
	for _, p := range m.plan.Pods {
		if p.Name+"."+p.Namespace == waypointPod {
			waypointIP = p.IP
		}
	}
	endpoints := xdstest.ExtractLoadAssignments(m.Endpoints(proxy))
	for _, version := range []string{"v1", "v2", "v3"} {
		vip := m.clusterIP(t, "default", "model-service-"+version)
		want := []string{fmt.Sprintf("connect_originate;%s:%d;%s:15008", vip, modelServicePort, waypointIP)}
		if got := endpoints[versionCluster(version)]; !slices.Equal(got, want) {
			t.Errorf("ingress endpoints of %s: %v, want %v (through the waypoint)", version, got, want)
		}
	}
}

// served is the configuration Istio serves over ECDS for a filter.
func served(t *testing.T, m *mesh, proxy *model.Proxy, name string) sidecarConfig {
	t.Helper()
	exts := m.ConfigGen.BuildExtensionConfiguration(proxy, m.PushContext(), []string{name}, nil)
	if len(exts) != 1 {
		t.Fatalf("ECDS %s: %d configs", name, len(exts))
	}
	var filter wasm.Wasm
	if err := exts[0].GetTypedConfig().UnmarshalTo(&filter); err != nil {
		t.Fatal(err)
	}
	var value wrapperspb.StringValue
	if err := filter.GetConfig().GetConfiguration().UnmarshalTo(&value); err != nil {
		t.Fatal(err)
	}
	var c sidecarConfig
	if err := json.Unmarshal([]byte(value.Value), &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// inlineRoutes are the routes of a waypoint chain's HTTP connection
// manager (waypoints carry their route configuration inline), by name.
func inlineRoutes(t *testing.T, chain *listener.FilterChain) map[string]*route.Route {
	t.Helper()
	if chain == nil {
		t.Fatal("no such filter chain at the waypoint")
	}
	out := map[string]*route.Route{}
	for _, vh := range xdstest.ExtractHTTPConnectionManager(t, chain).GetRouteConfig().GetVirtualHosts() {
		for _, r := range vh.Routes {
			out[r.Name] = r
		}
	}
	return out
}

func matchesCohort(r *route.Route, cohort string) bool {
	for _, h := range r.GetMatch().GetHeaders() {
		if h.Name == cohortHeader && h.GetStringMatch().GetExact() == cohort {
			return true
		}
	}
	return false
}
