package pilot

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	wasm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/wasm/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"istio.io/istio/pilot/pkg/model"
	"istio.io/istio/pilot/test/xdstest"

	"github.com/sms-checker/sms-checker-mesh/istiod-local/internal/testcharts"
)

// resources unmarshals dumped xDS resources of type T.
func resources[T any, PT interface {
	*T
	proto.Message
}](t *testing.T, raw []json.RawMessage) []PT {
	t.Helper()
	var out []PT
	for _, r := range raw {
		var a anypb.Any
		if err := protojson.Unmarshal(r, &a); err != nil {
			t.Fatal(err)
		}
		msg := PT(new(T))
		if err := a.UnmarshalTo(msg); err != nil {
			t.Fatal(err)
		}
		out = append(out, msg)
	}
	return out
}

// Dump connects as each proxy of a small app and records what pilot serves
// it: the ingress gateway as a router, the app's pod as a sidecar with its
// Service's clusters and endpoints and its inbound Wasm filter over ECDS.
func TestDump(t *testing.T) {
	m := startMesh(t, testcharts.Testdata(t, "shop.yaml"))
	dumps, err := m.Dump(t, m.plan, testcharts.IstioFile(t, "tools/packaging/common/envoy_bootstrap.json"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	web := "outbound|80||web.shop.svc.cluster.local"
	cases := []struct {
		pod, namespace, typ, ip string
		listener                string
		clusters                []string
		// Endpoint addresses of `web`, as EDS serves them.
		endpoints  []string
		extensions []string
	}{
		{
			pod: "istio-ingressgateway-0", namespace: "istio-system", typ: "router", ip: "10.244.0.2",
			listener:  "0.0.0.0_80",
			clusters:  []string{web},
			endpoints: []string{"10.244.0.3:8080"},
		},
		{
			pod: "web-0", namespace: "shop", typ: "sidecar", ip: "10.244.0.3",
			listener:   model.VirtualInboundListenerName,
			clusters:   []string{web, "inbound|8080||"},
			endpoints:  []string{"10.244.0.3:8080"},
			extensions: []string{model.TrafficExtensionResourceNamePrefix + "shop.web-metrics"},
		},
	}
	if len(dumps) != len(cases) {
		var got []string
		for _, d := range dumps {
			got = append(got, d.Pod+"."+d.Namespace)
		}
		t.Fatalf("dumped %v, want %d proxies", got, len(cases))
	}
	for i, tc := range cases {
		d := dumps[i]
		t.Run(tc.pod, func(t *testing.T) {
			wantID := tc.typ + "~" + tc.ip + "~" + tc.pod + "." + tc.namespace + "~" + tc.namespace + ".svc.cluster.local"
			if d.Pod != tc.pod || d.Namespace != tc.namespace || d.Type != tc.typ || d.ID != wantID {
				t.Fatalf("got %s.%s %s %s, want %s.%s %s %s", d.Pod, d.Namespace, d.Type, d.ID, tc.pod, tc.namespace, tc.typ, wantID)
			}
			var boot struct {
				Node struct {
					ID       string         `json:"id"`
					Metadata map[string]any `json:"metadata"`
				} `json:"node"`
			}
			if err := json.Unmarshal(d.Bootstrap, &boot); err != nil {
				t.Fatalf("bootstrap: %v", err)
			}
			if boot.Node.ID != d.ID || boot.Node.Metadata["NAMESPACE"] != tc.namespace {
				t.Errorf("bootstrap node: id %q, namespace %v", boot.Node.ID, boot.Node.Metadata["NAMESPACE"])
			}
			var listeners, clusters, endpoints, extensions []string
			for _, l := range resources[listener.Listener](t, d.Listeners) {
				listeners = append(listeners, l.Name)
			}
			for _, c := range resources[clusterv3.Cluster](t, d.Clusters) {
				clusters = append(clusters, c.Name)
			}
			for _, cla := range resources[endpoint.ClusterLoadAssignment](t, d.Endpoints) {
				if cla.ClusterName == web {
					endpoints = xdstest.ExtractEndpoints(cla)
				}
			}
			for _, e := range resources[core.TypedExtensionConfig](t, d.ExtensionConfigs) {
				var filter wasm.Wasm
				if err := e.GetTypedConfig().UnmarshalTo(&filter); err != nil {
					t.Fatalf("ECDS %s: %v", e.Name, err)
				}
				if got := filter.GetConfig().GetVmConfig().GetCode().GetLocal().GetFilename(); got != "/plugins/metrics.wasm" {
					t.Errorf("ECDS %s loads %q", e.Name, got)
				}
				extensions = append(extensions, e.Name)
			}
			if !slices.Contains(listeners, tc.listener) {
				t.Errorf("listeners %v lack %s", listeners, tc.listener)
			}
			for _, c := range tc.clusters {
				if !slices.Contains(clusters, c) {
					t.Errorf("clusters %v lack %s", clusters, c)
				}
			}
			if !slices.Equal(endpoints, tc.endpoints) {
				t.Errorf("endpoints of %s: got %v, want %v", web, endpoints, tc.endpoints)
			}
			if len(extensions) != len(tc.extensions) {
				t.Fatalf("extension configs: got %v, want %v", extensions, tc.extensions)
			}
			for i, prefix := range tc.extensions {
				if !strings.HasPrefix(extensions[i], prefix) {
					t.Errorf("extension config %q, want %s...", extensions[i], prefix)
				}
			}
		})
	}
}
