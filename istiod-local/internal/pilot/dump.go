package pilot

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"

	agentconfig "istio.io/istio/pilot/cmd/pilot-agent/config"
	"istio.io/istio/pilot/pkg/model"
	v3 "istio.io/istio/pilot/pkg/xds/v3"
	"istio.io/istio/pilot/test/xdstest"
	"istio.io/istio/pkg/bootstrap"
	"istio.io/istio/pkg/kube/inject"
	"istio.io/istio/pkg/test"

	localcluster "github.com/sms-checker/sms-checker-mesh/istiod-local/internal/cluster"
)

// ProxyDump is one proxy's configuration: the bootstrap its agent writes
// and every xDS resource it is served, each as Envoy's JSON.
type ProxyDump struct {
	Pod       string            `json:"pod"`
	Namespace string            `json:"namespace"`
	Type      string            `json:"type"`
	ID        string            `json:"id"`
	Bootstrap json.RawMessage   `json:"bootstrap"`
	Listeners []json.RawMessage `json:"listeners"`
	Routes    []json.RawMessage `json:"routes"`
	Clusters  []json.RawMessage `json:"clusters"`
	Endpoints []json.RawMessage `json:"endpoints"`
	// ECDS: the Wasm filters (WasmPlugins), by name.
	ExtensionConfigs []json.RawMessage `json:"extensionConfigs"`
}

// Dump connects to the server as each pod's proxy would (same node ID and
// metadata as its agent builds from the pod's environment and downward API
// files, which it reads from `workDir`) and records what it is served.
func (s *Server) Dump(t test.Failer, plan *localcluster.Plan, template, workDir string) ([]ProxyDump, error) {
	var out []ProxyDump
	for _, pod := range plan.Pods {
		for _, c := range pod.Containers {
			if c.Name != inject.ProxyContainerName {
				continue
			}
			d, err := s.dumpProxy(t, pod, c, template, filepath.Join(workDir, pod.Namespace, pod.Name))
			if err != nil {
				return nil, fmt.Errorf("pod %s.%s: %w", pod.Name, pod.Namespace, err)
			}
			out = append(out, d)
		}
	}
	return out, nil
}

func (s *Server) dumpProxy(t test.Failer, pod localcluster.PodPlan, c localcluster.ContainerPlan, template, root string) (ProxyDump, error) {
	node, err := nodeOf(pod, c, root)
	if err != nil {
		return ProxyDump{}, err
	}
	d := ProxyDump{Pod: pod.Name, Namespace: pod.Namespace, ID: node.ID, Type: strings.Split(node.ID, "~")[0]}
	var boot bytes.Buffer
	if err := bootstrap.New(bootstrap.Config{Node: node}).WriteTo(template, &boot); err != nil {
		return d, fmt.Errorf("bootstrap: %w", err)
	}
	d.Bootstrap = boot.Bytes()

	ads := s.ConnectADS().WithID(node.ID).WithMetadata(node.Metadata.NodeMetadata)
	fetch := func(typeURL string, names []string) []*anypb.Any {
		return ads.RequestResponseAck(t, &discovery.DiscoveryRequest{TypeUrl: typeURL, ResourceNames: names}).Resources
	}
	clusterRes := fetch(v3.ClusterType, nil)
	var clusters []*cluster.Cluster
	for _, r := range clusterRes {
		clusters = append(clusters, xdstest.UnmarshalAny[cluster.Cluster](t, r))
	}
	listenerRes := fetch(v3.ListenerType, nil)
	var listeners []*listener.Listener
	for _, r := range listenerRes {
		listeners = append(listeners, xdstest.UnmarshalAny[listener.Listener](t, r))
	}
	routeRes := fetch(v3.RouteType, xdstest.ExtractRoutesFromListeners(listeners))
	var endpointRes []*anypb.Any
	if names := xdstest.ExtractEdsClusterNames(clusters); len(names) > 0 {
		endpointRes = fetch(v3.EndpointType, names)
	}
	var extensionRes []*anypb.Any
	if names := extensionConfigNames(t, listeners); len(names) > 0 {
		extensionRes = fetch(v3.ExtensionConfigurationType, names)
	}
	for _, set := range []struct {
		from []*anypb.Any
		to   *[]json.RawMessage
	}{
		{clusterRes, &d.Clusters}, {listenerRes, &d.Listeners}, {routeRes, &d.Routes},
		{endpointRes, &d.Endpoints}, {extensionRes, &d.ExtensionConfigs},
	} {
		for _, r := range set.from {
			raw, err := protojson.Marshal(r)
			if err != nil {
				return d, err
			}
			*set.to = append(*set.to, raw)
		}
	}
	return d, nil
}

// nodeOf builds the node the pod's agent announces: pilot-agent's own proxy
// config merge (mesh defaults, PROXY_CONFIG, the pod's proxy.istio.io/config)
// and Istio's bootstrap metadata, reading the downward API files from the
// pod's root as the agent does from its working directory.
func nodeOf(pod localcluster.PodPlan, c localcluster.ContainerPlan, root string) (*model.Node, error) {
	env := map[string]string{}
	var environ []string
	for _, e := range c.Env {
		env[e.Name] = e.Value
		environ = append(environ, e.Name+"="+e.Value)
	}
	for _, f := range c.Files {
		path := filepath.Join(root, f.Path)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(path, []byte(f.Content), 0o644); err != nil {
			return nil, err
		}
	}
	cwd, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	if err := os.Chdir(root); err != nil {
		return nil, err
	}
	defer func() { _ = os.Chdir(cwd) }()
	proxyConfig, err := agentconfig.ConstructProxyConfig("", "istio-proxy", env["PROXY_CONFIG"], 0)
	if err != nil {
		return nil, fmt.Errorf("proxy config: %w", err)
	}
	role := "sidecar"
	if len(c.Args) > 1 && c.Args[0] == "proxy" {
		role = c.Args[1]
	}
	id := fmt.Sprintf("%s~%s~%s.%s~%s.svc.cluster.local", role, pod.IP, pod.Name, pod.Namespace, pod.Namespace)
	return bootstrap.GetNodeMetaData(bootstrap.MetadataOptions{
		ID:                  id,
		Envs:                environ,
		InstanceIPs:         []string{pod.IP},
		ProxyConfig:         proxyConfig,
		EnvoyPrometheusPort: 15090,
		EnvoyStatusPort:     15021,
	})
}

// extensionConfigNames are the ECDS names the listeners' HTTP filters ask for.
func extensionConfigNames(t test.Failer, listeners []*listener.Listener) []string {
	seen := map[string]bool{}
	var names []string
	for _, l := range listeners {
		for _, fc := range append(l.FilterChains, l.DefaultFilterChain) {
			if fc == nil {
				continue
			}
			// Found by filter name, as Istio names it and its EnvoyFilter
			// patching looks it up; a chain has at most one (it is terminal).
			manager := xdstest.ExtractHTTPConnectionManager(t, fc)
			for _, h := range manager.GetHttpFilters() {
				if cd := h.GetConfigDiscovery(); cd != nil && !seen[h.Name] {
					seen[h.Name] = true
					names = append(names, h.Name)
				}
			}
		}
	}
	return names
}
