package pilot

import (
	"reflect"
	"strings"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	corev1 "k8s.io/api/core/v1"

	v3 "istio.io/istio/pilot/pkg/xds/v3"
	"istio.io/istio/pkg/kube/kclient"
	"istio.io/istio/pkg/test"
	"istio.io/istio/pkg/test/util/retry"

	"github.com/sms-checker/sms-checker-mesh/istiod-local/internal/testcharts"
)

// A proxy's answers as the control API reports them: WaitSynced returns
// once the proxy answered what it was sent, and Rejections lists what it
// last refused (an xDS NACK), until it accepts that type again. The proxy
// is Istio's ADS test client, connected with the pod's node.
func TestWaitSyncedAndRejections(t *testing.T) {
	m := startMesh(t, testcharts.Testdata(t, "shop.yaml"))
	node := m.node(t, "web-0.shop")
	ads := m.ConnectADS().WithID(node.ID).WithMetadata(node.Metadata.NodeMetadata).WithTimeout(10 * time.Second)
	// What Envoy reports when it refuses a resource; the test client's own.
	const refusal = "Test request NACK"
	steps := []struct {
		name     string
		typeURL  string
		refuse   bool
		rejected []Rejection
	}{
		{name: "clusters accepted", typeURL: v3.ClusterType},
		{
			name:     "listeners refused",
			typeURL:  v3.ListenerType,
			refuse:   true,
			rejected: []Rejection{{Proxy: "web-0.shop", Type: "LDS", Error: refusal}},
		},
		{name: "listeners accepted again", typeURL: v3.ListenerType},
	}
	for _, step := range steps {
		t.Run(step.name, func(t *testing.T) {
			before := m.SentNonces()
			req := &discovery.DiscoveryRequest{TypeUrl: step.typeURL}
			if step.refuse {
				ads.RequestResponseNack(t, req)
			} else {
				ads.RequestResponseAck(t, req)
			}
			synced, err := m.WaitSynced(before, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if len(synced) != 1 || !strings.HasPrefix(synced[0], "web-0.shop-") {
				t.Errorf("synced: got %v, want the connection of web-0.shop", synced)
			}
			if got := m.Rejections(); !reflect.DeepEqual(got, step.rejected) {
				t.Errorf("rejections: got %+v, want %+v", got, step.rejected)
			}
		})
	}
}

// Namespaces are where Istio looks them up by name, with the labels the
// manifest gave them (Istio reads namespace labels for injection, ambient
// mode, discovery selectors).
func TestNamespaces(t *testing.T) {
	m := startMesh(t, testcharts.Testdata(t, "shop.yaml"))
	namespaces := kclient.New[*corev1.Namespace](m.KubeClient())
	m.KubeClient().RunAndWait(test.NewStop(t))
	retry.UntilOrFail(t, namespaces.HasSynced)
	cases := []struct {
		name   string
		labels map[string]string
	}{
		{name: "shop", labels: map[string]string{"team": "shop"}},
		{name: "istio-system"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ns := namespaces.Get(tc.name, "")
			if ns == nil {
				t.Fatalf("Istio's client finds no namespace %s", tc.name)
			}
			if !reflect.DeepEqual(ns.Labels, tc.labels) {
				t.Errorf("labels: got %v, want %v", ns.Labels, tc.labels)
			}
		})
	}
}
