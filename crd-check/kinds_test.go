package main

import (
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// A CRD with a closed schema, a default and a CEL rule, as Istio's and the
// Gateway API's CRDs have them.
const widgetCRD = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  names: {kind: Widget, plural: widgets, singular: widget, listKind: WidgetList}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer, minimum: 1}
              mode: {type: string, default: fast}
              url:
                type: string
                x-kubernetes-validations:
                - rule: 'isURL(self) && url(self).getScheme() == "https"'
                  message: url must be https
            x-kubernetes-validations:
            - rule: 'self.mode != "slow" || self.size < 10'
              message: a slow widget stays small
          status: {type: object, x-kubernetes-preserve-unknown-fields: true}
  - name: v0
    served: false
    storage: false
    schema: {openAPIV3Schema: {type: object}}
`

func validate(t *testing.T, object string) []string {
	t.Helper()
	kinds := Kinds{}
	if err := kinds.Add([]byte(widgetCRD)); err != nil {
		t.Fatal(err)
	}
	doc, err := yaml.YAMLToJSON([]byte("[" + object + "]"))
	if err != nil {
		t.Fatal(err)
	}
	objects, err := decodeObjects(doc)
	if err != nil {
		t.Fatal(err)
	}
	return kinds.Validate(objects[0])
}

func TestValidObjectPasses(t *testing.T) {
	// A status is dropped on create, as the API server drops it.
	if errs := validate(t, `{apiVersion: example.com/v1, kind: Widget, metadata: {name: w, namespace: a},
		spec: {size: 3, url: "https://example.com"}, status: {anything: 1}}`); len(errs) > 0 {
		t.Fatalf("valid widget refused: %v", errs)
	}
}

func TestWhatTheAPIServerRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, object, want string
	}{
		{"unknown field", `{apiVersion: example.com/v1, kind: Widget, metadata: {name: w}, spec: {size: 3, colour: red}}`,
			`unknown field "spec.colour"`},
		{"unknown metadata field", `{apiVersion: example.com/v1, kind: Widget, metadata: {name: w, labelz: {}}, spec: {size: 3}}`,
			`unknown field "metadata.labelz"`},
		{"schema", `{apiVersion: example.com/v1, kind: Widget, metadata: {name: w}, spec: {size: 0}}`,
			"spec.size: Invalid value: 0: spec.size in body should be greater than or equal to 1"},
		{"CEL with a Kubernetes library", `{apiVersion: example.com/v1, kind: Widget, metadata: {name: w}, spec: {size: 3, url: "ftp://x"}}`,
			"url must be https"},
		{"CEL on a whole object", `{apiVersion: example.com/v1, kind: Widget, metadata: {name: w}, spec: {size: 30, mode: slow}}`,
			"a slow widget stays small"},
		{"object metadata", `{apiVersion: example.com/v1, kind: Widget, metadata: {name: Not_A_Name}, spec: {size: 3}}`,
			"metadata.name: Invalid value"},
		{"unserved version", `{apiVersion: example.com/v0, kind: Widget, metadata: {name: w}}`,
			"no CRD serves example.com/v0 Widget"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			errs := validate(t, tc.object)
			if !slices.ContainsFunc(errs, func(e string) bool { return strings.Contains(e, tc.want) }) {
				t.Fatalf("want an error containing %q, got %q", tc.want, errs)
			}
		})
	}
	// The rule reads spec.mode, which only the schema's default supplies
	// here: without defaulting CEL would fail on a missing key.
	if errs := validate(t, `{apiVersion: example.com/v1, kind: Widget, metadata: {name: w}, spec: {size: 30}}`); len(errs) > 0 {
		t.Fatalf("a widget without a mode refused: %v", errs)
	}
}
