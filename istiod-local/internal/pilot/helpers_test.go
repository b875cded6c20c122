package pilot

import (
	"bufio"
	"errors"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kubeyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	extensions "istio.io/api/extensions/v1alpha1"
	networking "istio.io/api/networking/v1alpha3"
	"istio.io/istio/pilot/pkg/model"
	"istio.io/istio/pkg/config"
	"istio.io/istio/pkg/kube/inject"
	istiomodel "istio.io/istio/pkg/model"

	"github.com/sms-checker/sms-checker-mesh/istiod-local/internal/cluster"
	"github.com/sms-checker/sms-checker-mesh/istiod-local/internal/install"
	"github.com/sms-checker/sms-checker-mesh/istiod-local/internal/testcharts"
)

// Shared by this package's tests: the project's chart, Istio's istiod and
// gateway charts (from the pinned Istio module) rendered with helm the way
// meshctl renders them (meshctl/src/mesh/istio.rs, values.rs), and pilot
// started on them the way `istiod-local serve` starts it (cli.loadPlan).
//
// Pilot runs with Istio's default feature flags here: istiod-local applies
// the istiod chart's environment by re-executing itself, which a test
// binary does not. Routing does not depend on those flags.

const (
	podCIDR = "10.244.0.0/24"
	// The module the WasmPlugins load. Istio only copies the path into the
	// ECDS config (Envoy opens it), so it need not exist.
	wasmPath = "/plugins/sms_checker_filter.wasm"
	// Stands in for the mesh's root certificate, which pilot only publishes.
	rootPEM = "-----BEGIN CERTIFICATE-----\ntest root\n-----END CERTIFICATE-----\n"
)

var issued = time.Date(2026, 9, 1, 12, 0, 0, 0, time.UTC)

// istioVersion is what the build stamps into istiod-local and the agent
// (mk/istio.mk): the module's VERSION, which gates Istio's features.
func istioVersion(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(testcharts.IstioFile(t, "VERSION"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(data)) + "-dev"
}

func parse(t *testing.T, text string) *cluster.Manifest {
	t.Helper()
	m, err := cluster.ParseManifest(text)
	if err != nil {
		t.Fatalf("ParseManifest: %v", err)
	}
	return m
}

// renderApp is the project's chart with `sets` (helm --set), as
// `meshctl run --set` renders it.
func renderApp(t *testing.T, sets ...string) string {
	t.Helper()
	args := []string{"sms-checker", filepath.Join(testcharts.ModuleDir(t), "..", "manifests", "sms-checker"),
		"--set", "filter.url=file://" + wasmPath}
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	return testcharts.Helm(t, args...)
}

// ingress is a gateway the app's Gateway selects: meshctl installs Istio's
// gateway chart as release istio-<selector>, in the namespace of the
// WasmPlugin that selects it (else istio-system).
type ingress struct {
	selector, namespace string
}

func (i ingress) pod() string { return "istio-" + i.selector + "-0." + i.namespace }

func ingresses(app *cluster.Manifest) []ingress {
	var out []ingress
	for _, c := range app.Istio {
		gw, ok := c.Spec.(*networking.Gateway)
		if !ok {
			continue
		}
		in := ingress{selector: gw.Selector["istio"], namespace: "istio-system"}
		if plugin := gatewayPlugin(app.Istio, in.selector); plugin != nil {
			in.namespace = plugin.Namespace
		}
		out = append(out, in)
	}
	return out
}

// gatewayPlugin is the WasmPlugin or TrafficExtension that selects the
// gateway pods.
func gatewayPlugin(configs []config.Config, selector string) *config.Config {
	for i, c := range configs {
		var labels map[string]string
		switch spec := c.Spec.(type) {
		case *extensions.WasmPlugin:
			labels = spec.GetSelector().GetMatchLabels()
		case *extensions.TrafficExtension:
			labels = spec.GetSelector().GetMatchLabels()
		}
		if selector != "" && labels["istio"] == selector {
			return &configs[i]
		}
	}
	return nil
}

// mesh is pilot running on a rendered install.
type mesh struct {
	*Server
	app      *cluster.Manifest
	configs  []config.Config
	cluster  *cluster.Cluster
	plan     *cluster.Plan
	gateway  ingress
	gateways []string
	// Istio resources of Istio's own install, kept across applies.
	install []config.Config
}

// startMesh runs pilot on the app's manifest, the ingress gateways its
// Gateways select and Istio's install, as `istiod-local serve` does.
func startMesh(t *testing.T, appText string) *mesh {
	t.Helper()
	istioManifest := parse(t, testcharts.Istiod(t))
	istio, err := install.Read(istioManifest.Kube)
	if err != nil {
		t.Fatal(err)
	}
	m := &mesh{app: parse(t, appText), install: istioManifest.Istio}
	for i, g := range ingresses(m.app) {
		if i == 0 {
			m.gateway = g
		}
		m.gateways = append(m.gateways, testcharts.Helm(t, "istio-"+g.selector, testcharts.IstioFile(t, "manifests/charts/gateway"),
			"--namespace", g.namespace,
			"-f", filepath.Join(testcharts.ModuleDir(t), "..", "manifests", "istio", "gateway-values.yaml")))
	}
	var kube []runtime.Object
	m.configs, kube = m.manifests(t, m.app)
	m.cluster, err = cluster.Synthesize(kube, istio, netip.MustParsePrefix(podCIDR), rootPEM)
	if err != nil {
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

// manifests joins the app's parsed manifest with the gateways' and Istio's
// install, as the control plane does at start and on every apply.
func (m *mesh) manifests(t *testing.T, app *cluster.Manifest) ([]config.Config, []runtime.Object) {
	t.Helper()
	configs := slices.Clone(app.Istio)
	kube := slices.Clone(app.Kube)
	for _, text := range m.gateways {
		parsed := parse(t, text)
		configs = append(configs, parsed.Istio...)
		kube = append(kube, parsed.Kube...)
	}
	return append(configs, m.install...), kube
}

// node is what the agent of the pod's proxy (`name.namespace`) announces
// (nodeOf, as Dump builds it), with the version the build stamps.
func (m *mesh) node(t *testing.T, pod string) *istiomodel.Node {
	t.Helper()
	for _, p := range m.plan.Pods {
		if p.Name+"."+p.Namespace != pod {
			continue
		}
		for _, c := range p.Containers {
			if c.Name != inject.ProxyContainerName {
				continue
			}
			node, err := nodeOf(p, c, t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			node.Metadata.IstioVersion = istioVersion(t)
			return node
		}
	}
	t.Fatalf("no proxy in pod %s", pod)
	return nil
}

// proxy is the model.Proxy pilot makes of the pod's proxy when it
// connects: the node parsed as istiod's initProxyMetadata parses it.
func (m *mesh) proxy(t *testing.T, pod string) *model.Proxy {
	t.Helper()
	node := m.node(t, pod)
	meta, err := model.ParseMetadata(node.Metadata.NodeMetadata.ToStruct())
	if err != nil {
		t.Fatal(err)
	}
	proxy, err := model.ParseServiceNodeWithMetadata(node.ID, meta)
	if err != nil {
		t.Fatal(err)
	}
	proxy.ConfigNamespace = model.GetProxyConfigNamespace(proxy)
	// istiod takes the labels from the registry; SetupProxy does not.
	proxy.Labels = proxy.Metadata.Labels
	return m.SetupProxy(proxy)
}

// gatewayPort is the port the gateway pods listen on for a Gateway server
// port: their Service's target port for it, else the port itself (Istio's
// rule, as meshctl's gateway_target_port).
func (m *mesh) gatewayPort(port int32) int {
	for _, o := range m.cluster.Objects {
		svc, ok := o.(*corev1.Service)
		if !ok || svc.Namespace != m.gateway.namespace || svc.Spec.Selector["istio"] != m.gateway.selector {
			continue
		}
		for _, p := range svc.Spec.Ports {
			if p.Port == port && p.TargetPort.IntVal != 0 {
				return int(p.TargetPort.IntVal)
			}
		}
	}
	return int(port)
}

// editManifest changes every object of `kind` in a rendered manifest, as a
// user edits `helm template` output before `meshctl run --manifest`.
func editManifest(t *testing.T, text, kind string, edit func(obj map[string]any)) string {
	t.Helper()
	reader := kubeyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(text)))
	var docs []string
	edited := 0
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		var obj map[string]any
		if err := yaml.Unmarshal(doc, &obj); err != nil {
			t.Fatal(err)
		}
		if obj["kind"] == kind {
			edit(obj)
			if doc, err = yaml.Marshal(obj); err != nil {
				t.Fatal(err)
			}
			edited++
		}
		docs = append(docs, string(doc))
	}
	if edited == 0 {
		t.Fatalf("no %s to edit", kind)
	}
	return strings.Join(docs, "\n---\n")
}

func (m *mesh) clusterIP(t *testing.T, namespace, name string) string {
	t.Helper()
	for _, o := range m.cluster.Objects {
		if svc, ok := o.(*corev1.Service); ok && svc.Namespace == namespace && svc.Name == name {
			return svc.Spec.ClusterIP
		}
	}
	t.Fatalf("no Service %s.%s", name, namespace)
	return ""
}
