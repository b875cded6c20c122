package cluster

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/sms-checker/sms-checker-mesh/istiod-local/internal/install"
)

// Shared by this package's tests: the hand-written manifests in testdata/,
// and Istio's install rendered from the istiod chart of the pinned Istio
// module with helm, as meshctl renders it.

// podCIDR is meshctl's default pod network; the node takes 10.244.0.1.
const podCIDR = "10.244.0.0/24"

func readTestdata(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// parse reads a manifest that must be valid.
func parse(t *testing.T, text string) *Manifest {
	t.Helper()
	m, err := ParseManifest(text)
	if err != nil {
		t.Fatalf("ParseManifest: %v", err)
	}
	return m
}

// moduleDir is istiod-local's module folder (go test runs in the package's).
func moduleDir(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's folder")
		}
		dir = parent
	}
}

// helm renders a chart; a missing helm fails the test rather than skip it.
func helm(t *testing.T, args ...string) string {
	t.Helper()
	bin := os.Getenv("HELM_BIN")
	if bin == "" {
		bin = filepath.Join(moduleDir(t), "..", ".tools", "bin", "helm")
	}
	if _, err := exec.LookPath(bin); err != nil {
		t.Fatalf("helm not found at %s: set HELM_BIN, or run `make tools` (%v)", bin, err)
	}
	var stderr strings.Builder
	cmd := exec.Command(bin, append([]string{"template"}, args...)...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm template %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

var istioModule = sync.OnceValues(func() (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "istio.io/istio").Output()
	return strings.TrimSpace(string(out)), err
})

// istioChart is one of the charts shipped in the pinned Istio module.
func istioChart(t *testing.T, path string) string {
	t.Helper()
	dir, err := istioModule()
	if err != nil || dir == "" {
		t.Fatalf("go list -m istio.io/istio: %v", err)
	}
	return filepath.Join(dir, "manifests", "charts", path)
}

// istioInstall is Istio's install as meshctl renders it (see
// meshctl/src/mesh/istio.rs, render_istiod), read by install.Read.
func istioInstall(t *testing.T) *install.Install {
	t.Helper()
	text := helm(t, "istiod", istioChart(t, "istio-control/istio-discovery"),
		"--namespace", "istio-system",
		"-f", filepath.Join(moduleDir(t), "istiod-values.yaml"),
		"--set", "meshConfig.defaultConfig.discoveryAddress=10.244.0.1:15012",
		"--set", "global.caAddress=10.244.0.1:15012",
		"--set", "meshConfig.defaultConfig.binaryPath=/usr/local/bin/envoy")
	in, err := install.Read(parse(t, text).Kube)
	if err != nil {
		t.Fatal(err)
	}
	return in
}
