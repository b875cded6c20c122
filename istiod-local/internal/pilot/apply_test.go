package pilot

import (
	"reflect"
	"slices"
	"testing"
	"time"

	networking "istio.io/api/networking/v1alpha3"
	"istio.io/istio/pkg/config/schema/gvk"
)

// Apply brings the store to each new set of Istio resources, and a set
// equal to the current one changes nothing, also once pilot has built a
// push context from the store (which rewrites what it holds, e.g. a
// DestinationRule's short host): the store's copies must not be the
// caller's.
func TestApply(t *testing.T) {
	const (
		dr       = "DestinationRule/model-service.default"
		vs       = "VirtualService/model-service.default"
		peerAuth = "PeerAuthentication/model-service.default"
		gateway  = "WasmPlugin/sms-checker-cohort-gateway.istio-system"
		v1       = "WasmPlugin/sms-checker-cohort-v1.default"
		v2       = "WasmPlugin/sms-checker-cohort-v2.default"
		v3       = "WasmPlugin/sms-checker-cohort-v3.default"
	)
	var (
		split95    = []string{"istio.trafficSplit.stable=95", "istio.trafficSplit.canary=5"}
		canaryOff  = []string{"versions.v2.enabled=false"}
		peerAuthOn = append(canaryOff, "security.peerAuthentication.enabled=true")
	)
	// Changes are reported sorted. The cohort weights are in every cohort
	// filter's configuration as well as in the routes.
	steps := []struct {
		name string
		sets []string
		want Change
		// The split route's weights in the store afterwards.
		weights []int32
	}{
		{name: "same values", weights: []int32{90, 10}},
		{name: "new split", sets: split95, want: Change{Updated: []string{vs, gateway, v1, v2, v3}}, weights: []int32{95, 5}},
		{name: "same split again", sets: split95, weights: []int32{95, 5}},
		{
			name:    "canary off",
			sets:    canaryOff,
			want:    Change{Updated: []string{dr, vs, gateway, v1, v3}, Deleted: []string{v2}},
			weights: []int32{100},
		},
		{name: "canary off again", sets: canaryOff, weights: []int32{100}},
		{name: "peer authentication on", sets: peerAuthOn, want: Change{Created: []string{peerAuth}}, weights: []int32{100}},
		{
			name:    "back to defaults",
			want:    Change{Created: []string{v2}, Updated: []string{dr, vs, gateway, v1, v3}, Deleted: []string{peerAuth}},
			weights: []int32{90, 10},
		},
		{name: "defaults again", weights: []int32{90, 10}},
	}
	m := startMesh(t, renderApp(t))
	current := m.configs
	for _, step := range steps {
		t.Run(step.name, func(t *testing.T) {
			next, _ := m.manifests(t, parse(t, renderApp(t, step.sets...)))
			change, err := m.Apply(current, next)
			if err != nil {
				t.Fatal(err)
			}
			current = next
			if !reflect.DeepEqual(change, step.want) {
				t.Fatalf("got %+v\nwant %+v", change, step.want)
			}
			// Let pilot build its push context from the new store.
			if err := m.WaitCommitted(10 * time.Second); err != nil {
				t.Fatal(err)
			}
			m.PushContext()
			stored := m.Store().Get(gvk.VirtualService, "model-service", "default")
			if stored == nil {
				t.Fatal("the VirtualService is not in the store")
			}
			var weights []int32
			for _, r := range stored.Spec.(*networking.VirtualService).Http {
				if r.Name == "split" {
					for _, d := range r.Route {
						weights = append(weights, d.Weight)
					}
				}
			}
			if !reflect.DeepEqual(weights, step.weights) {
				t.Errorf("split weights in the store: got %v, want %v", weights, step.weights)
			}
			present := m.Store().Get(gvk.PeerAuthentication, "model-service", "default") != nil
			if want := slices.Contains(step.sets, "security.peerAuthentication.enabled=true"); present != want {
				t.Errorf("PeerAuthentication in the store: %v, want %v", present, want)
			}
		})
	}
}
