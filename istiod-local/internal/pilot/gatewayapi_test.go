package pilot

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	wasm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/wasm/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"

	meshconfig "istio.io/api/mesh/v1alpha1"
	"istio.io/istio/pilot/pkg/model"
	"istio.io/istio/pilot/pkg/simulation"
	"istio.io/istio/pilot/test/xdstest"
	"istio.io/istio/pkg/config/host"
	"istio.io/istio/pkg/wellknown"

	"github.com/sms-checker/sms-checker-mesh/istiod-local/internal/cluster"
)

// The chart with istio.routingApi=GatewayAPI: a Gateway of class istio
// whose pods Istio's own deployment controller renders, HTTPRoutes to one
// Service per version, and the cohort filter attached to the Gateway by
// reference (WasmPlugin or TrafficExtension).

const (
	// The chart's Gateway, and the pod Istio deploys for it (`<name>-istio`).
	apiGateway    = "sms-checker-gateway"
	apiGatewayPod = "sms-checker-gateway-istio-0.default"
)

// versionCluster is the cluster Istio builds for a version's own Service.
func versionCluster(version string) string {
	return model.BuildSubsetKey(model.TrafficDirectionOutbound, "",
		host.Name("model-service-"+version+".default.svc.cluster.local"), modelServicePort)
}

// gatewayAPIApp renders the chart in Gateway API mode with `sets`.
func gatewayAPIApp(t *testing.T, sets ...string) string {
	t.Helper()
	return renderApp(t, append([]string{"istio.routingApi=GatewayAPI"}, sets...)...)
}

// ingressProxy is the proxy of the pod Istio deployed for the chart's
// Gateway. The pod has no `istio` label, which is why the chart attaches the
// gateway filter to the Gateway by reference: a selector would miss it.
func ingressProxy(t *testing.T, m *mesh) *model.Proxy {
	t.Helper()
	proxy := m.proxy(t, apiGatewayPod)
	if proxy.Type != model.Router || proxy.Labels["gateway.networking.k8s.io/gateway-name"] != apiGateway {
		t.Fatalf("%s: type %s, labels %v", apiGatewayPod, proxy.Type, proxy.Labels)
	}
	if v, ok := proxy.Labels["istio"]; ok {
		t.Fatalf("%s carries istio=%s: the selector case would not be shown", apiGatewayPod, v)
	}
	// The Gateway's infrastructure annotations reach the pods Istio
	// deploys: the filter's stat tags, for its metrics' labels.
	if tags := (*meshconfig.ProxyConfig)(proxy.Metadata.ProxyConfig).GetExtraStatTags(); !slices.Contains(tags, "cohort") {
		t.Fatalf("%s: extraStatTags %v lack the filter's", apiGatewayPod, tags)
	}
	return proxy
}

// mirrorFraction is the share of requests a route mirrors, in percent.
func mirrorFraction(t *testing.T, r *route.Route) float64 {
	t.Helper()
	policies := r.GetRoute().GetRequestMirrorPolicies()
	if len(policies) != 1 {
		t.Fatalf("route %s mirrors %d times", r.Name, len(policies))
	}
	f := policies[0].GetRuntimeFraction().GetDefaultValue()
	denominators := map[typev3.FractionalPercent_DenominatorType]float64{
		typev3.FractionalPercent_HUNDRED: 100, typev3.FractionalPercent_TEN_THOUSAND: 10_000, typev3.FractionalPercent_MILLION: 1_000_000,
	}
	return float64(f.GetNumerator()) * 100 / denominators[f.GetDenominator()]
}

// Requests through the gateway Istio deploys for the chart's Gateway land
// where Istio's translation of the HTTPRoute sends them, for the seed's
// values and a few more; the cohort filter runs there, before the router,
// in the gateway role, delivered by either API.
func TestGatewayAPIGatewaySimulation(t *testing.T) {
	canary := outcome{route: "cohort-canary", to: versionCluster("v2"), mirror: versionCluster("v3")}
	stable := outcome{route: "cohort-stable", to: versionCluster("v1"), mirror: versionCluster("v3")}
	split := func(stableWeight, canaryWeight int) outcome {
		return outcome{
			route:  "split",
			to:     fmt.Sprintf("%s=%d %s=%d", versionCluster("v1"), stableWeight, versionCluster("v2"), canaryWeight),
			mirror: versionCluster("v3"),
		}
	}
	noHost := outcome{err: simulation.ErrNoVirtualHost}
	type req struct {
		host, cohort string
		want         outcome
	}
	cases := []struct {
		name     string
		sets     []string
		mirror   float64
		requests []req
	}{
		{
			name:   "WasmPlugin",
			mirror: 100,
			requests: []req{
				{"sms-checker.local", "canary", canary},
				{"sms-checker.local", "stable", stable},
				{"sms-checker.local", "", split(90, 10)},
				{"sms-checker.local", "nobody", split(90, 10)},
				{"other.local", "canary", noHost},
			},
		},
		{
			name:   "TrafficExtension",
			sets:   []string{"filter.api=TrafficExtension"},
			mirror: 100,
			requests: []req{
				{"sms-checker.local", "canary", canary},
				{"sms-checker.local", "stable", stable},
				{"sms-checker.local", "", split(90, 10)},
			},
		},
		{
			name:   "split 95/5, a share mirrored",
			sets:   []string{"filter.api=TrafficExtension", "istio.trafficSplit.stable=95", "istio.trafficSplit.canary=5", "istio.mirror.percentage=12.5"},
			mirror: 12.5,
			requests: []req{
				{"sms-checker.local", "canary", canary},
				{"sms-checker.local", "", split(95, 5)},
			},
		},
		{
			name:   "custom host",
			sets:   []string{"istio.host=custom.grader.local"},
			mirror: 100,
			requests: []req{
				{"custom.grader.local", "canary", canary},
				{"custom.grader.local", "", split(90, 10)},
				{"sms-checker.local", "canary", noHost},
			},
		},
		{
			name:   "canary off",
			sets:   []string{"versions.v2.enabled=false", "filter.api=TrafficExtension"},
			mirror: 100,
			requests: []req{
				{"sms-checker.local", "canary", outcome{route: "split", to: versionCluster("v1"), mirror: versionCluster("v3")}},
				{"sms-checker.local", "stable", stable},
				{"sms-checker.local", "", outcome{route: "split", to: versionCluster("v1"), mirror: versionCluster("v3")}},
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := startGatewayAPIMesh(t, gatewayAPIApp(t, tc.sets...))
			proxy := ingressProxy(t, m)
			sim := simulation.NewSimulation(t, m.FakeDiscoveryServer, proxy)
			for _, r := range tc.requests {
				t.Run(fmt.Sprintf("%s %s=%q", r.host, cohortHeader, r.cohort), func(t *testing.T) {
					got, res, matched := request(t, sim, cohortRequest(r.host, r.cohort, 80, simulation.CallModeGateway))
					if got != r.want {
						t.Fatalf("got %v\nwant %v", got, r.want)
					}
					if got.err != nil {
						return
					}
					if share := mirrorFraction(t, matched); share != tc.mirror {
						t.Errorf("route %s mirrors %v%%, want %v%%", matched.Name, share, tc.mirror)
					}
					f := cohortFilters(t, m, proxy, sim, res)
					at, ok := f.roles["default.sms-checker-cohort-gateway"]
					if !ok || at.role != "gateway" || f.router < 0 || at.index > f.router {
						t.Errorf("HTTP filters %v: want the gateway's cohort filter before %s", f.names, wellknown.Router)
					}
				})
			}
			t.Run("validate configs", func(t *testing.T) {
				xdstest.ValidateListeners(t, sim.Listeners)
				xdstest.ValidateClusters(t, sim.Clusters)
				xdstest.ValidateRouteConfigurations(t, sim.Routes)
			})
		})
	}
}

// The same gateway filter attached by `selector: {istio: ingressgateway}`,
// as it is for Istio's gateway chart, is absent from the gateway Istio
// deploys for a Gateway API Gateway: the reason the chart attaches it by
// reference, and the proof that the check above can fail.
func TestGatewayAPIGatewayMissedBySelector(t *testing.T) {
	app := editManifest(t, gatewayAPIApp(t, "filter.api=TrafficExtension"), "TrafficExtension", func(obj map[string]any) {
		spec := obj["spec"].(map[string]any)
		if obj["metadata"].(map[string]any)["name"] != "sms-checker-cohort-gateway" {
			return
		}
		delete(spec, "targetRefs")
		spec["selector"] = map[string]any{"matchLabels": map[string]any{"istio": "ingressgateway"}}
	})
	m := startGatewayAPIMesh(t, app)
	proxy := ingressProxy(t, m)
	sim := simulation.NewSimulation(t, m.FakeDiscoveryServer, proxy)
	got, res, _ := request(t, sim, cohortRequest("sms-checker.local", "canary", 80, simulation.CallModeGateway))
	if got.err != nil {
		t.Fatal(got.err)
	}
	f := cohortFilters(t, m, proxy, sim, res)
	if at, ok := f.roles["default.sms-checker-cohort-gateway"]; ok {
		t.Fatalf("a selector reached the gateway Istio deployed (filter at %d of %v)", at.index, f.names)
	}
	if f.router < 0 {
		t.Fatalf("no router in %v", f.names)
	}
}

// In-mesh callers of the model-service Service get the mesh HTTPRoute
// (GAMMA: the Service as parent) from their sidecar when
// istio.meshRouting is on, and Istio's default route when it is off.
func TestGatewayAPIMeshSimulation(t *testing.T) {
	plain := outcome{route: "default", to: subset("")}
	cases := []struct {
		name   string
		sets   []string
		cohort string
		want   outcome
	}{
		{"mesh routing, canary", nil, "canary", outcome{route: "cohort-canary", to: versionCluster("v2"), mirror: versionCluster("v3")}},
		{"mesh routing, no cohort", nil, "", outcome{
			route:  "split",
			to:     fmt.Sprintf("%s=90 %s=10", versionCluster("v1"), versionCluster("v2")),
			mirror: versionCluster("v3"),
		}},
		{"no mesh routing, canary", []string{"istio.meshRouting=false"}, "canary", plain},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := startGatewayAPIMesh(t, gatewayAPIApp(t, tc.sets...))
			proxy := m.proxy(t, "model-deployment-v1-0.default")
			if proxy.Type != model.SidecarProxy {
				t.Fatalf("caller is a %s, want a sidecar", proxy.Type)
			}
			sim := simulation.NewSimulation(t, m.FakeDiscoveryServer, proxy)
			call := cohortRequest(string(modelService), tc.cohort, modelServicePort, simulation.CallModeOutbound)
			call.Address = m.clusterIP(t, "default", "model-service")
			got, _, _ := request(t, sim, call)
			if got != tc.want {
				t.Fatalf("got %v\nwant %v", got, tc.want)
			}
		})
	}
}

// A TrafficExtension Istio's validation refuses is refused before anything
// runs, with Istio's own message (what `meshctl run` and the API server's
// validating webhook print).
func TestBadTrafficExtensionRefusedWithIstiosMessage(t *testing.T) {
	for _, tc := range []struct {
		name string
		sets []string
		edit func(spec map[string]any)
		want string
	}{
		{
			// A targetRef to the route instead of the Gateway.
			name: "target kind",
			sets: []string{"istio.routingApi=GatewayAPI"},
			edit: func(spec map[string]any) {
				spec["targetRefs"] = []any{map[string]any{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "model-service"}}
			},
			want: "targetRef must be to one of",
		},
		{
			name: "selector and targetRefs",
			edit: func(spec map[string]any) {
				spec["targetRefs"] = []any{map[string]any{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": apiGateway}}
			},
			want: "only one of targetRefs or workloadSelector can be set",
		},
		{
			name: "module url",
			edit: func(spec map[string]any) {
				spec["wasm"].(map[string]any)["url"] = "ftp://example.com/plugin.wasm"
			},
			want: "url contains unsupported scheme: ftp",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app := renderApp(t, append([]string{"filter.api=TrafficExtension"}, tc.sets...)...)
			app = editManifest(t, app, "TrafficExtension", func(obj map[string]any) {
				if obj["metadata"].(map[string]any)["name"] == "sms-checker-cohort-gateway" {
					tc.edit(obj["spec"].(map[string]any))
				}
			})
			_, err := cluster.ParseManifest(app)
			invalid, ok := err.(*cluster.Invalid)
			if !ok {
				t.Fatalf("want Istio's refusal, got %v", err)
			}
			if len(invalid.Problems) != 1 || !strings.HasPrefix(invalid.Problems[0], "TrafficExtension/sms-checker-cohort-gateway.") ||
				!strings.Contains(invalid.Problems[0], tc.want) {
				t.Fatalf("want TrafficExtension/sms-checker-cohort-gateway refused with %q, got %q", tc.want, invalid.Problems)
			}
		})
	}
}

// With filter.api=TrafficExtension on Istio's gateway chart (VirtualService
// routing), the filter reaches the gateway and each sidecar by selector, as
// the WasmPlugin does, and Envoy gets the same filter: Istio turns a
// WasmPlugin into a TrafficExtension, so the ECDS configuration of each
// proxy is the same but for its name (no cost to switching).
func TestTrafficExtensionOnClassicGateway(t *testing.T) {
	served := map[string]map[string]*wasm.Wasm{}
	for _, api := range []string{"WasmPlugin", "TrafficExtension"} {
		m := startMesh(t, renderApp(t, "filter.api="+api))
		served[api] = map[string]*wasm.Wasm{}
		for _, pod := range []string{m.gateway.pod(), "model-deployment-v1-0.default", "model-deployment-v3-0.default"} {
			proxy := m.proxy(t, pod)
			sim := simulation.NewSimulation(t, m.FakeDiscoveryServer, proxy)
			var names []string
			for _, l := range sim.Listeners {
				for _, fc := range append(l.FilterChains, l.DefaultFilterChain) {
					if fc == nil {
						continue
					}
					for _, f := range xdstest.ExtractHTTPConnectionManager(t, fc).GetHttpFilters() {
						if f.GetConfigDiscovery() != nil && strings.HasPrefix(f.Name, model.TrafficExtensionResourceNamePrefix) && !slices.Contains(names, f.Name) {
							names = append(names, f.Name)
						}
					}
				}
			}
			exts := m.ConfigGen.BuildExtensionConfiguration(proxy, m.PushContext(), names, nil)
			if len(exts) != 1 {
				t.Fatalf("%s %s: cohort filters %v", api, pod, names)
			}
			var filter wasm.Wasm
			if err := exts[0].GetTypedConfig().UnmarshalTo(&filter); err != nil {
				t.Fatal(err)
			}
			// The names differ by design (`~istio-translated-wasmplugin`),
			// and the resource version is the time the store took it.
			filter.Config.Name, filter.Config.RootId = "", ""
			if vm := filter.GetConfig().GetVmConfig(); vm != nil {
				vm.VmId = ""
				if version := vm.GetEnvironmentVariables().GetKeyValues(); version["ISTIO_META_WASM_PLUGIN_RESOURCE_VERSION"] != "" {
					version["ISTIO_META_WASM_PLUGIN_RESOURCE_VERSION"] = ""
				} else {
					t.Fatalf("%s %s: no resource version in %v", api, pod, vm)
				}
			}
			served[api][pod] = &filter
			if pod == m.gateway.pod() {
				got, res, _ := request(t, sim, cohortRequest("sms-checker.local", "canary", m.gatewayPort(80), simulation.CallModeGateway))
				if want := (outcome{route: "cohort-canary", to: subset("v2"), mirror: subset("v3")}); got != want {
					t.Fatalf("%s: got %v\nwant %v", api, got, want)
				}
				assertCohortFilter(t, m, proxy, sim, res)
			}
		}
	}
	for pod, plugin := range served["WasmPlugin"] {
		if !proto.Equal(plugin, served["TrafficExtension"][pod]) {
			t.Errorf("%s: the filter differs\nWasmPlugin:       %v\nTrafficExtension: %v", pod, plugin, served["TrafficExtension"][pod])
		}
	}
}
