package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"sync"
	"time"

	"istio.io/istio/pkg/config"

	"github.com/sms-checker/sms-checker-mesh/istiod-local/internal/cluster"
	"github.com/sms-checker/sms-checker-mesh/istiod-local/internal/pilot"
)

// controller takes new manifests while the control plane runs, the way
// `kubectl apply` hands them to the API server and istiod picks them up.
type controller struct {
	mu      sync.Mutex
	server  *pilot.Server
	world   *world
	configs []config.Config
	plan    *cluster.Plan
}

// applyRequest carries the rendered manifests that replace the current ones
// (the same set serve was started with: application, ingress gateway).
type applyRequest struct {
	Manifests []string `json:"manifests"`
}

type applyResponse struct {
	pilot.Change
	// Proxies that received new configuration and answered it.
	Synced []string `json:"synced,omitempty"`
	// What proxies refused (Envoy's NACKs), e.g. a Wasm plugin that did not
	// accept its configuration: Envoy keeps what it had before.
	Rejected []pilot.Rejection `json:"rejected,omitempty"`
	Warnings []string          `json:"warnings,omitempty"`
	Seconds  float64           `json:"seconds"`
}

type errorResponse struct {
	Error string `json:"error"`
}

// timeouts for a change to be in the push context, and to be acknowledged.
const (
	commitTimeout = 10 * time.Second
	syncTimeout   = 20 * time.Second
)

func (c *controller) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /apply", c.apply)
	mux.HandleFunc("GET /status", c.status)
	mux.Handle("/debug/", c.server.DiscoveryDebug)
	return mux
}

func (c *controller) apply(w http.ResponseWriter, r *http.Request) {
	started := time.Now()
	var req applyRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || len(req.Manifests) == 0 {
		reply(w, http.StatusBadRequest, errorResponse{"body must be {\"manifests\": [\"<rendered YAML>\", ...]}"})
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	next, err := parseManifests(req.Manifests)
	var invalid *cluster.Invalid
	if errors.As(err, &invalid) {
		reply(w, http.StatusUnprocessableEntity, errorResponse{err.Error()})
		return
	}
	if err != nil {
		reply(w, http.StatusBadRequest, errorResponse{err.Error()})
		return
	}
	_, plan, err := c.world.plan(next.Kube)
	if err != nil {
		reply(w, http.StatusUnprocessableEntity, errorResponse{err.Error()})
		return
	}
	if diff := podDifference(c.plan, plan); diff != "" {
		reply(w, http.StatusConflict, errorResponse{fmt.Sprintf(
			"the new values change the workloads (%s); the local mesh applies Istio resources live, "+
				"and workload changes when it starts again", diff)})
		return
	}
	before := c.server.SentNonces()
	configs := append(next.Istio, c.world.installConfigs...)
	change, err := c.server.Apply(c.configs, configs)
	if err != nil {
		reply(w, http.StatusInternalServerError, errorResponse{err.Error()})
		return
	}
	c.configs = configs
	resp := applyResponse{Change: change, Warnings: next.Warnings}
	if !change.Empty() {
		if err := c.server.WaitCommitted(commitTimeout); err != nil {
			reply(w, http.StatusGatewayTimeout, errorResponse{err.Error()})
			return
		}
		synced, err := c.server.WaitSynced(before, syncTimeout)
		if err != nil {
			reply(w, http.StatusGatewayTimeout, errorResponse{err.Error()})
			return
		}
		resp.Synced = synced
		resp.Rejected = c.server.Rejections()
	}
	resp.Seconds = time.Since(started).Seconds()
	reply(w, http.StatusOK, resp)
}

// statusResponse is how the proxies stand with the control plane.
type statusResponse struct {
	Connected []string          `json:"connected"`
	Rejected  []pilot.Rejection `json:"rejected,omitempty"`
}

func (c *controller) status(w http.ResponseWriter, _ *http.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var resp statusResponse
	for _, p := range c.server.Proxies() {
		resp.Connected = append(resp.Connected, p.ID)
	}
	resp.Rejected = c.server.Rejections()
	reply(w, http.StatusOK, resp)
}

// podDifference names the first pod that is added, removed or changed.
func podDifference(before, after *cluster.Plan) string {
	old := map[string]cluster.PodPlan{}
	for _, p := range before.Pods {
		old[p.Namespace+"/"+p.Name] = p
	}
	seen := map[string]bool{}
	for _, p := range after.Pods {
		key := p.Namespace + "/" + p.Name
		seen[key] = true
		prev, ok := old[key]
		switch {
		case !ok:
			return "new pod " + key
		case !reflect.DeepEqual(prev, p):
			return "pod " + key + " changes"
		}
	}
	for key := range old {
		if !seen[key] {
			return "pod " + key + " goes away"
		}
	}
	return ""
}

func reply(w http.ResponseWriter, status int, body any) {
	w.Header().Set("content-type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}
