package pilot

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	wasm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/wasm/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	networking "istio.io/api/networking/v1alpha3"
	"istio.io/istio/pilot/pkg/model"
	"istio.io/istio/pilot/pkg/networking/core/route/retry"
	"istio.io/istio/pilot/pkg/simulation"
	"istio.io/istio/pilot/test/xdstest"
	"istio.io/istio/pkg/config/host"
	"istio.io/istio/pkg/wellknown"
)

// The model-service as Istio names it, and its port (modelService.port).
const (
	modelService     = host.Name("model-service.default.svc.cluster.local")
	modelServicePort = 8081
	cohortHeader     = "x-experiment-cohort"
)

// subset is the cluster Istio builds for a DestinationRule subset of the
// model-service ("" for the whole Service).
func subset(name string) string {
	return model.BuildSubsetKey(model.TrafficDirectionOutbound, name, modelService, modelServicePort)
}

// outcome is where a request lands: the route (the VirtualService's http
// route name), its cluster or weighted clusters ("cluster=weight ..."), and
// the mirror's cluster; or the simulation's error.
type outcome struct {
	route, to, mirror string
	err               error
}

func (o outcome) String() string {
	if o.err != nil {
		return "error: " + o.err.Error()
	}
	return fmt.Sprintf("route %q to %q mirror %q", o.route, o.to, o.mirror)
}

// request sends an HTTP request through a proxy: Istio's simulation walks
// listener, filter chain and virtual host as Envoy does; routes are matched
// here on path and headers, which the simulation leaves out (it matches the
// path only), so the cohort header picks the route as in Envoy.
func request(t *testing.T, sim *simulation.Simulation, call simulation.Call) (outcome, simulation.Result, *route.Route) {
	t.Helper()
	res := sim.Run(call)
	if res.Error != nil {
		return outcome{err: res.Error}, res, nil
	}
	rc := xdstest.ExtractRouteConfigurations(sim.Routes)[res.RouteConfigMatched]
	var vh *route.VirtualHost
	for _, v := range rc.GetVirtualHosts() {
		if v.Name == res.VirtualHostMatched {
			vh = v
		}
	}
	if vh == nil {
		t.Fatalf("virtual host %q not in route config %q", res.VirtualHostMatched, res.RouteConfigMatched)
	}
	call = call.FillDefaults()
	for _, r := range vh.Routes {
		if !routeMatches(t, r.Match, call) {
			continue
		}
		out := outcome{route: r.Name}
		action := r.GetRoute()
		if wc := action.GetWeightedClusters(); wc != nil {
			var parts []string
			for _, c := range wc.Clusters {
				parts = append(parts, fmt.Sprintf("%s=%d", c.Name, c.GetWeight().GetValue()))
			}
			out.to = strings.Join(parts, " ")
		} else {
			out.to = action.GetCluster()
		}
		var mirrors []string
		for _, m := range action.GetRequestMirrorPolicies() {
			mirrors = append(mirrors, m.Cluster)
		}
		out.mirror = strings.Join(mirrors, " ")
		return out, res, r
	}
	return outcome{err: simulation.ErrNoRoute}, res, nil
}

// routeMatches is Envoy's route match for what Istio generates from a
// VirtualService: a path and header matchers. Anything else fails the test
// rather than match by accident.
func routeMatches(t *testing.T, m *route.RouteMatch, call simulation.Call) bool {
	t.Helper()
	switch p := m.GetPathSpecifier().(type) {
	case *route.RouteMatch_Prefix:
		if !strings.HasPrefix(call.Path, p.Prefix) {
			return false
		}
	case *route.RouteMatch_Path:
		if call.Path != p.Path {
			return false
		}
	default:
		t.Fatalf("route match %T not supported here", p)
	}
	if len(m.QueryParameters) > 0 || m.RuntimeFraction != nil || m.Grpc != nil || m.TlsContext != nil {
		t.Fatalf("route match %v not supported here", m)
	}
	for _, h := range m.Headers {
		values, present := call.Headers[http.CanonicalHeaderKey(h.Name)]
		if !present && h.TreatMissingHeaderAsEmpty {
			values, present = []string{""}, true
		}
		var ok bool
		switch spec := h.GetHeaderMatchSpecifier().(type) {
		case *route.HeaderMatcher_PresentMatch:
			ok = present == spec.PresentMatch
		case *route.HeaderMatcher_StringMatch:
			if !present {
				// Envoy: a missing header fails a value match, inverted or not.
				return false
			}
			ok = stringMatches(t, spec.StringMatch, strings.Join(values, ","))
		default:
			t.Fatalf("header matcher %T not supported here", spec)
		}
		if ok == h.InvertMatch {
			return false
		}
	}
	return true
}

func stringMatches(t *testing.T, m *matcher.StringMatcher, value string) bool {
	t.Helper()
	fold := func(s string) string {
		if m.IgnoreCase {
			return strings.ToLower(s)
		}
		return s
	}
	value = fold(value)
	switch p := m.GetMatchPattern().(type) {
	case *matcher.StringMatcher_Exact:
		return value == fold(p.Exact)
	case *matcher.StringMatcher_Prefix:
		return strings.HasPrefix(value, fold(p.Prefix))
	case *matcher.StringMatcher_Suffix:
		return strings.HasSuffix(value, fold(p.Suffix))
	case *matcher.StringMatcher_Contains:
		return strings.Contains(value, fold(p.Contains))
	case *matcher.StringMatcher_SafeRegex:
		return regexp.MustCompile("^(?:" + p.SafeRegex.Regex + ")$").MatchString(value)
	default:
		t.Fatalf("string matcher %T not supported here", p)
		return false
	}
}

// cohortRequest is a request with the cohort header set by the gateway
// filter ("" when the filter did not set it).
func cohortRequest(hostHeader, cohort string, port int, mode simulation.CallMode) simulation.Call {
	call := simulation.Call{
		Port:       port,
		Protocol:   simulation.HTTP,
		HostHeader: hostHeader,
		Path:       "/predict",
		CallMode:   mode,
		Headers:    http.Header{},
	}
	if cohort != "" {
		call.Headers.Set(cohortHeader, cohort)
	}
	return call
}

// Requests through the ingress gateway land where Istio's config for the
// rendered chart sends them, for the seed's values and a few more, and the
// gateway's HTTP filters carry the cohort filter before routing.
func TestGatewaySimulation(t *testing.T) {
	var (
		canary = outcome{route: "cohort-canary", to: subset("v2"), mirror: subset("v3")}
		stable = outcome{route: "cohort-stable", to: subset("v1"), mirror: subset("v3")}
		split  = func(stableWeight, canaryWeight int) outcome {
			return outcome{
				route:  "split",
				to:     fmt.Sprintf("%s=%d %s=%d", subset("v1"), stableWeight, subset("v2"), canaryWeight),
				mirror: subset("v3"),
			}
		}
		stableOnly = outcome{route: "split", to: subset("v1"), mirror: subset("v3")}
		noHost     = outcome{err: simulation.ErrNoVirtualHost}
	)
	type req struct {
		host, cohort string
		want         outcome
	}
	defaultGateway := ingress{selector: "ingressgateway", namespace: "istio-system"}
	cases := []struct {
		name string
		sets []string
		// An edit of the rendered VirtualService's routes.
		retries *networking.HTTPRetry
		// The gateway the chart's Gateway and WasmPlugin select.
		gateway  ingress
		requests []req
	}{
		{
			name: "defaults",
			requests: []req{
				{"sms-checker.local", "canary", canary},
				{"sms-checker.local", "stable", stable},
				{"sms-checker.local", "", split(90, 10)},
				{"sms-checker.local", "nobody", split(90, 10)},
				{"other.local", "canary", noHost},
			},
		},
		{
			name: "split 95/5",
			sets: []string{"istio.trafficSplit.stable=95", "istio.trafficSplit.canary=5"},
			requests: []req{
				{"sms-checker.local", "canary", canary},
				{"sms-checker.local", "stable", stable},
				{"sms-checker.local", "", split(95, 5)},
			},
		},
		{
			name: "custom host",
			sets: []string{"istio.host=custom.grader.local"},
			requests: []req{
				{"custom.grader.local", "canary", canary},
				{"custom.grader.local", "", split(90, 10)},
				{"sms-checker.local", "canary", noHost},
			},
		},
		{
			name: "canary off",
			sets: []string{"versions.v2.enabled=false"},
			requests: []req{
				// No canary route: everything goes to the stable version.
				{"sms-checker.local", "canary", stableOnly},
				{"sms-checker.local", "stable", stable},
				{"sms-checker.local", "", stableOnly},
			},
		},
		{
			name:    "custom gateway selector",
			sets:    []string{"istio.gateway.ingressGatewaySelector=custom-gateway"},
			gateway: ingress{selector: "custom-gateway", namespace: "istio-system"},
			requests: []req{
				{"sms-checker.local", "canary", canary},
				{"sms-checker.local", "", split(90, 10)},
			},
		},
		{
			name:    "gateway in its own namespace",
			sets:    []string{"istio.gateway.namespace=ingress"},
			gateway: ingress{selector: "ingressgateway", namespace: "ingress"},
			requests: []req{
				{"sms-checker.local", "canary", canary},
				{"sms-checker.local", "", split(90, 10)},
			},
		},
		{
			name: "wildcard host",
			sets: []string{"istio.host=*.grader.local"},
			requests: []req{
				{"a.grader.local", "canary", canary},
				{"a.grader.local", "", split(90, 10)},
				{"grader.local", "canary", noHost},
			},
		},
		{
			name:    "VirtualService edited with retries",
			retries: &networking.HTTPRetry{Attempts: 3, RetryOn: "gateway-error,503"},
			requests: []req{
				{"sms-checker.local", "canary", canary},
				{"sms-checker.local", "", split(90, 10)},
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			app := renderApp(t, tc.sets...)
			if tc.retries != nil {
				app = editManifest(t, app, "VirtualService", func(vs map[string]any) {
					for _, r := range vs["spec"].(map[string]any)["http"].([]any) {
						r.(map[string]any)["retries"] = map[string]any{"attempts": tc.retries.Attempts, "retryOn": tc.retries.RetryOn}
					}
				})
			}
			m := startMesh(t, app)
			want := tc.gateway
			if want == (ingress{}) {
				want = defaultGateway
			}
			if m.gateway != want {
				t.Fatalf("gateway: got %+v, want %+v", m.gateway, want)
			}
			proxy := m.proxy(t, m.gateway.pod())
			if proxy.Type != model.Router || proxy.Labels["istio"] != m.gateway.selector || proxy.ConfigNamespace != m.gateway.namespace {
				t.Fatalf("gateway proxy: type %s, istio=%q, namespace %s", proxy.Type, proxy.Labels["istio"], proxy.ConfigNamespace)
			}
			sim := simulation.NewSimulation(t, m.FakeDiscoveryServer, proxy)
			port := m.gatewayPort(80)
			for _, r := range tc.requests {
				name := fmt.Sprintf("%s %s=%s", r.host, cohortHeader, r.cohort)
				if r.cohort == "" {
					name = r.host + " without " + cohortHeader
				}
				t.Run(name, func(t *testing.T) {
					got, res, matched := request(t, sim, cohortRequest(r.host, r.cohort, port, simulation.CallModeGateway))
					if got != r.want {
						t.Fatalf("got %v\nwant %v", got, r.want)
					}
					if got.err != nil {
						return
					}
					assertCohortFilter(t, m, proxy, sim, res)
					if tc.retries != nil {
						policy := matched.GetRoute().GetRetryPolicy()
						if want := retry.ConvertPolicy(tc.retries, false); !proto.Equal(policy, want) {
							t.Errorf("retry policy:\n got %v\nwant %v", policy, want)
						}
						if !slices.Contains(policy.GetRetriableStatusCodes(), http.StatusServiceUnavailable) {
							t.Errorf("retriable status codes %v lack 503", policy.GetRetriableStatusCodes())
						}
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

// assertCohortFilter checks that the HTTP filters of the chain the request
// took ask for the gateway's cohort filter over ECDS, before the router,
// and that Istio serves it as the chart's module in the gateway role.
func assertCohortFilter(t *testing.T, m *mesh, proxy *model.Proxy, sim *simulation.Simulation, res simulation.Result) {
	t.Helper()
	plugin := gatewayPlugin(m.configs, m.gateway.selector)
	if plugin == nil {
		t.Fatalf("no WasmPlugin or TrafficExtension selects istio=%s", m.gateway.selector)
	}
	f := cohortFilters(t, m, proxy, sim, res)
	if at, ok := f.roles[plugin.Namespace+"."+plugin.Name]; !ok || at.role != "gateway" || f.router < 0 || at.index > f.router {
		t.Errorf("HTTP filters %v: want %s.%s (the cohort filter in the gateway role, served over ECDS) before %s",
			f.names, plugin.Namespace, plugin.Name, wellknown.Router)
	}
}

// filterAt is a cohort filter in an HTTP filter chain: its position and
// the role of the configuration Istio serves it with.
type filterAt struct {
	index int
	role  string
}

// chainFilters are the HTTP filters of one filter chain: their names, the
// router's position, and the cohort filters by the `namespace.name` of the
// WasmPlugin or TrafficExtension they come from.
type chainFilters struct {
	names  []string
	router int
	roles  map[string]filterAt
}

// cohortFilters reads the HTTP filters of the chain a request took, and
// for each filter served over ECDS, the configuration Istio serves for it
// (BuildExtensionConfiguration, the ECDS generator's own code): the chart's
// module, and the role in its pluginConfig.
func cohortFilters(t *testing.T, m *mesh, proxy *model.Proxy, sim *simulation.Simulation, res simulation.Result) chainFilters {
	t.Helper()
	l := xdstest.ExtractListener(res.ListenerMatched, sim.Listeners)
	fc := xdstest.ExtractFilterChain(res.FilterChainMatched, l)
	manager := xdstest.ExtractHTTPConnectionManager(t, fc)
	if manager == nil {
		t.Fatalf("filter chain %q of %s has no HTTP connection manager", res.FilterChainMatched, res.ListenerMatched)
	}
	out := chainFilters{router: -1, roles: map[string]filterAt{}}
	for i, f := range manager.HttpFilters {
		out.names = append(out.names, f.Name)
		if f.Name == wellknown.Router {
			out.router = i
		}
		if f.GetConfigDiscovery() == nil || !strings.HasPrefix(f.Name, model.TrafficExtensionResourceNamePrefix) {
			continue
		}
		for _, ext := range m.ConfigGen.BuildExtensionConfiguration(proxy, m.PushContext(), []string{f.Name}, nil) {
			var filter wasm.Wasm
			if err := ext.GetTypedConfig().UnmarshalTo(&filter); err != nil {
				t.Fatalf("ECDS %s: %v", f.Name, err)
			}
			var pluginConfig wrapperspb.StringValue
			if err := filter.GetConfig().GetConfiguration().UnmarshalTo(&pluginConfig); err != nil {
				t.Fatalf("ECDS %s configuration: %v", f.Name, err)
			}
			var cfg struct{ Role string }
			if err := json.Unmarshal([]byte(pluginConfig.Value), &cfg); err != nil {
				t.Fatal(err)
			}
			if filter.GetConfig().GetVmConfig().GetCode().GetLocal().GetFilename() != wasmPath {
				continue
			}
			// A translated WasmPlugin is served as `<name>~istio-translated-wasmplugin`.
			source, _, _ := strings.Cut(strings.TrimPrefix(f.Name, model.TrafficExtensionResourceNamePrefix), "~")
			out.roles[source] = filterAt{index: i, role: cfg.Role}
		}
	}
	return out
}

// In-mesh callers of the model-service get the VirtualService's routes
// from their sidecar when istio.meshRouting is on, and Istio's default
// route to the whole Service when it is off.
func TestSidecarSimulation(t *testing.T) {
	plain := outcome{route: "default", to: subset("")}
	cases := []struct {
		name   string
		sets   []string
		cohort string
		want   outcome
	}{
		{"mesh routing, canary", nil, "canary", outcome{route: "cohort-canary", to: subset("v2"), mirror: subset("v3")}},
		{"mesh routing, no cohort", nil, "", outcome{
			route:  "split",
			to:     fmt.Sprintf("%s=90 %s=10", subset("v1"), subset("v2")),
			mirror: subset("v3"),
		}},
		{"no mesh routing, canary", []string{"istio.meshRouting=false"}, "canary", plain},
		{"no mesh routing, no cohort", []string{"istio.meshRouting=false"}, "", plain},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := startMesh(t, renderApp(t, tc.sets...))
			// The caller: the sidecar of the stable version's pod.
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
