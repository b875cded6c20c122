// Command crd-check validates objects of custom resource kinds the way a
// Kubernetes API server does on `kubectl apply --validate=strict`: the CRD's
// structural schema with unknown fields refused, defaults applied, then the
// create strategy's validation (OpenAPI schema, object metadata, list-type
// invariants and every x-kubernetes-validations CEL rule), all with
// Kubernetes' own apiextensions-apiserver code.
//
//	crd-check --crds FILE [--crds FILE ...] < objects.json
//
// stdin holds a JSON array of objects; stdout gets one JSON result per
// object, in order: {"object": "Kind/name", "errors": [...]}. Exit status 0
// when every object is valid, 1 when some is not, 2 when the CRDs or the
// input cannot be read.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
)

type crdFiles []string

func (c *crdFiles) String() string     { return strings.Join(*c, ",") }
func (c *crdFiles) Set(v string) error { *c = append(*c, v); return nil }

// Result is what crd-check says of one object.
type Result struct {
	Object string   `json:"object"`
	Errors []string `json:"errors"`
}

func main() {
	var files crdFiles
	flag.Var(&files, "crds", "a YAML file of CustomResourceDefinitions (repeatable)")
	flag.Parse()
	if len(files) == 0 || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: crd-check --crds FILE [--crds FILE ...] < objects.json")
		os.Exit(2)
	}
	kinds := Kinds{}
	for _, f := range files {
		text, err := os.ReadFile(f)
		if err == nil {
			err = kinds.Add(text)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "crd-check: %s: %v\n", f, err)
			os.Exit(2)
		}
	}
	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintf(os.Stderr, "crd-check: read objects: %v\n", err)
		os.Exit(2)
	}
	objects, err := decodeObjects(input)
	if err != nil {
		fmt.Fprintf(os.Stderr, "crd-check: %v\n", err)
		os.Exit(2)
	}
	status := 0
	results := make([]Result, 0, len(objects))
	for _, u := range objects {
		errs := kinds.Validate(u)
		if len(errs) > 0 {
			status = 1
		}
		results = append(results, Result{Object: u.GetKind() + "/" + u.GetName(), Errors: append([]string{}, errs...)})
	}
	out := json.NewEncoder(os.Stdout)
	out.SetIndent("", "  ")
	if err := out.Encode(results); err != nil {
		fmt.Fprintf(os.Stderr, "crd-check: %v\n", err)
		os.Exit(2)
	}
	os.Exit(status)
}

// decodeObjects reads a JSON array of objects with whole numbers as int64,
// as the API server's decoder reads them (CEL tells integers from floats).
func decodeObjects(input []byte) ([]*unstructured.Unstructured, error) {
	var items []any
	if err := utiljson.Unmarshal(input, &items); err != nil {
		return nil, fmt.Errorf("objects are not a JSON array: %w", err)
	}
	out := make([]*unstructured.Unstructured, 0, len(items))
	for i, item := range items {
		object, ok := item.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("item %d is not an object", i)
		}
		out = append(out, &unstructured.Unstructured{Object: object})
	}
	return out, nil
}
