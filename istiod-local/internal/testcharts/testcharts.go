// Package testcharts renders, for tests, the charts the local mesh runs:
// the project's chart and Istio's charts from the pinned Istio module, with
// helm, the way meshctl renders them (meshctl/src/mesh/istio.rs,
// values.rs). Only tests import it.
package testcharts

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// ModuleDir is istiod-local's module folder (go test runs in a package's).
func ModuleDir(t testing.TB) string {
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

// Helm runs `helm template args...`; a missing helm fails the test rather
// than skip it.
func Helm(t testing.TB, args ...string) string {
	t.Helper()
	bin := os.Getenv("HELM_BIN")
	if bin == "" {
		bin = filepath.Join(ModuleDir(t), "..", ".tools", "bin", "helm")
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

// IstioFile is a path in the pinned Istio module.
func IstioFile(t testing.TB, path string) string {
	t.Helper()
	dir, err := istioModule()
	if err != nil || dir == "" {
		t.Fatalf("go list -m istio.io/istio: %v", err)
	}
	return filepath.Join(dir, path)
}

// Istiod is Istio's install for the local mesh, rendered as meshctl's
// render_istiod renders it, for a node at 10.244.0.1, with `sets` (helm
// --set, e.g. profile=ambient) on top.
func Istiod(t testing.TB, sets ...string) string {
	t.Helper()
	args := []string{"istiod", IstioFile(t, "manifests/charts/istio-control/istio-discovery"),
		"--namespace", "istio-system",
		"-f", filepath.Join(ModuleDir(t), "istiod-values.yaml"),
		"--set", "meshConfig.defaultConfig.discoveryAddress=10.244.0.1:15012",
		"--set", "global.caAddress=10.244.0.1:15012",
		"--set", "meshConfig.defaultConfig.binaryPath=/usr/local/bin/envoy"}
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	return Helm(t, args...)
}

// Testdata reads a file of the calling package's testdata folder.
func Testdata(t testing.TB, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
