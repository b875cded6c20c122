package cluster

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"

	networking "istio.io/api/networking/v1alpha3"
	"istio.io/istio/pilot/pkg/model"
)

func TestParseManifest(t *testing.T) {
	cases := []struct {
		name string
		text string
		// Istio resources and Kubernetes objects as "Kind/name.namespace"
		// ("Kind/name" without a namespace).
		istio, kube []string
		skipped     []string
		// One substring of Istio's own message per warning or problem, in
		// the order reported.
		warnings, problems []string
	}{
		{
			name:     "kinds are sorted out, namespaces defaulted",
			text:     readTestdata(t, "mixed.yaml"),
			istio:    []string{"DestinationRule/web.default", "VirtualService/web.shop"},
			kube:     []string{"Service/web.default", "Namespace/shop"},
			skipped:  []string{"PodMonitor/web.monitoring"},
			warnings: []string{`VirtualService/web.shop: using deprecated setting "mirrorPercent"`},
		},
		{
			name: "every refused resource is listed, sorted",
			text: readTestdata(t, "invalid.yaml"),
			problems: []string{
				"DestinationRule/rules.default: duplicate subset names: v1",
				"VirtualService/routes.shop: HTTP route, redirect or direct_response is required",
			},
		},
		{
			name: "documents holding only comments are ignored",
			text: "# Source: a.yaml\n---\n# Source: b.yaml\n# nothing rendered\n---\n",
		},
		{
			name: "documents without a kind are ignored",
			text: "metadata:\n  name: x\n",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := ParseManifest(tc.text)
			if len(tc.problems) > 0 {
				var invalid *Invalid
				if !errors.As(err, &invalid) {
					t.Fatalf("want *Invalid, got %v", err)
				}
				assertLinesContain(t, "problems", invalid.Problems, tc.problems)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var istio []string
			for _, c := range m.Istio {
				istio = append(istio, fmt.Sprintf("%s/%s.%s", c.GroupVersionKind.Kind, c.Name, c.Namespace))
			}
			var kube []string
			for _, o := range m.Kube {
				acc, err := meta.Accessor(o)
				if err != nil {
					t.Fatal(err)
				}
				id := o.GetObjectKind().GroupVersionKind().Kind + "/" + acc.GetName()
				if acc.GetNamespace() != "" {
					id += "." + acc.GetNamespace()
				}
				kube = append(kube, id)
			}
			for _, c := range []struct {
				what      string
				got, want []string
			}{{"istio", istio, tc.istio}, {"kube", kube, tc.kube}, {"skipped", m.Skipped, tc.skipped}} {
				if !reflect.DeepEqual(c.got, c.want) {
					t.Errorf("%s: got %q, want %q", c.what, c.got, c.want)
				}
			}
			assertLinesContain(t, "warnings", m.Warnings, tc.warnings)
		})
	}
}

// Short host names are completed the way istiod's CRD client completes
// them: Istio resolves them against the resource's namespace and domain.
func TestParseManifestShortHosts(t *testing.T) {
	m := parse(t, readTestdata(t, "mixed.yaml"))
	got := map[string]string{}
	for _, c := range m.Istio {
		switch spec := c.Spec.(type) {
		case *networking.DestinationRule:
			got[c.Name+"."+c.Namespace] = string(model.ResolveShortnameToFQDN(spec.Host, c.Meta))
		case *networking.VirtualService:
			got[c.Name+"."+c.Namespace] = string(model.ResolveShortnameToFQDN(spec.Hosts[0], c.Meta))
		}
	}
	want := map[string]string{
		"web.default": "web.default.svc.cluster.local",
		"web.shop":    "web.shop.svc.cluster.local",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

// A Kubernetes object that does not decode is an error, not a skip.
func TestParseManifestBadObject(t *testing.T) {
	_, err := ParseManifest("apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: notalist}\n")
	var invalid *Invalid
	if err == nil || errors.As(err, &invalid) || !strings.Contains(err.Error(), "Service/web") {
		t.Fatalf("want a decoding error naming Service/web, got %v", err)
	}
}

func assertLinesContain(t *testing.T, what string, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %q, want lines containing %q", what, got, want)
	}
	for i := range want {
		if !strings.Contains(got[i], want[i]) {
			t.Errorf("%s[%d]: got %q, want it to contain %q", what, i, got[i], want[i])
		}
	}
}
