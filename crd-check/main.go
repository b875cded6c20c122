// Command crd-check validates objects of custom resource kinds the way a
// Kubernetes API server does on `kubectl apply --validate=strict`: the CRD's
// structural schema with unknown fields refused, defaults applied, then the
// create strategy's validation (OpenAPI schema, object metadata, list-type
// invariants and every x-kubernetes-validations CEL rule), all with
// Kubernetes' own apiextensions-apiserver code.
//
//	crd-check [--set NAME] --crds FILE [--crds FILE ...] [--set NAME --crds FILE ...] < objects.json
//
// Each set is one cluster's CRDs. stdin holds a JSON array of objects;
// stdout gets one JSON result per set and object, in order: {"set": NAME,
// "object": "Kind/name", "errors": [...]}. Exit status 0 when every object
// is valid in every set, 1 when one is not, 2 when the CRDs or the input
// cannot be read.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
)

// crdSet is one cluster's CRDs: a name for messages and its files.
type crdSet struct {
	name  string
	files []string
}

// setFlags collects `--set NAME` and the `--crds FILE` that follow it.
type setFlags struct{ sets []crdSet }

func (s *setFlags) String() string { return fmt.Sprint(s.sets) }

type setName struct{ *setFlags }

func (s setName) Set(v string) error { s.sets = append(s.sets, crdSet{name: v}); return nil }

type setFile struct{ *setFlags }

func (s setFile) Set(v string) error {
	if len(s.sets) == 0 {
		s.sets = append(s.sets, crdSet{})
	}
	last := &s.sets[len(s.sets)-1]
	last.files = append(last.files, v)
	return nil
}

// Result is what crd-check says of one object in one set of CRDs.
type Result struct {
	Set    string   `json:"set"`
	Object string   `json:"object"`
	Errors []string `json:"errors"`
}

func main() {
	flags := &setFlags{}
	flag.Var(setName{flags}, "set", "start a set of CRDs, named for messages (repeatable)")
	flag.Var(setFile{flags}, "crds", "a YAML file of CustomResourceDefinitions, added to the current set (repeatable)")
	flag.Parse()
	if len(flags.sets) == 0 || flag.NArg() > 0 || slices.ContainsFunc(flags.sets, func(s crdSet) bool { return len(s.files) == 0 }) {
		fmt.Fprintln(os.Stderr, "usage: crd-check [--set NAME] --crds FILE [--crds FILE ...] [--set NAME --crds FILE ...] < objects.json")
		os.Exit(2)
	}
	// A file is read once, and each CRD version built once, whatever the
	// sets that share it.
	byFile := map[string]Kinds{}
	sets := make([]Kinds, len(flags.sets))
	for i, set := range flags.sets {
		sets[i] = Kinds{}
		for _, f := range set.files {
			kinds, ok := byFile[f]
			if !ok {
				kinds = Kinds{}
				text, err := os.ReadFile(f)
				if err == nil {
					err = kinds.Add(text)
				}
				if err != nil {
					fmt.Fprintf(os.Stderr, "crd-check: %s: %v\n", f, err)
					os.Exit(2)
				}
				byFile[f] = kinds
			}
			maps.Copy(sets[i], kinds)
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
	results := make([]Result, 0, len(objects)*len(sets))
	for i, kinds := range sets {
		for _, u := range objects {
			errs := kinds.Validate(u)
			if len(errs) > 0 {
				status = 1
			}
			results = append(results, Result{Set: flags.sets[i].name, Object: u.GetKind() + "/" + u.GetName(), Errors: append([]string{}, errs...)})
		}
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
