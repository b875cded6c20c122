package cluster

import (
	"testing"

	"github.com/sms-checker/sms-checker-mesh/istiod-local/internal/install"
	"github.com/sms-checker/sms-checker-mesh/istiod-local/internal/testcharts"
)

// Shared by this package's tests: the hand-written manifests in testdata/,
// and Istio's install rendered from the istiod chart of the pinned Istio
// module with helm, as meshctl renders it.

// podCIDR is meshctl's default pod network; the node takes 10.244.0.1.
const podCIDR = "10.244.0.0/24"

func readTestdata(t *testing.T, name string) string {
	return testcharts.Testdata(t, name)
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

// istioInstall is Istio's install as meshctl renders it (see
// meshctl/src/mesh/istio.rs, render_istiod), read by install.Read.
func istioInstall(t *testing.T) *install.Install {
	t.Helper()
	in, err := install.Read(parse(t, testcharts.Istiod(t)).Kube)
	if err != nil {
		t.Fatal(err)
	}
	return in
}
