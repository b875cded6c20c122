// Package cluster turns rendered manifests into what a Kubernetes cluster with
// Istio would hold: Istio resources checked by Istio's own validation, and the
// Kubernetes objects the control plane reads, completed with what controllers
// and the sidecar injector would have added (see synthesize.go).
package cluster

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	kubeyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"istio.io/istio/pilot/pkg/config/kube/crd"
	"istio.io/istio/pkg/config"
	"istio.io/istio/pkg/config/constants"
	"istio.io/istio/pkg/config/schema/collections"
	"istio.io/istio/pkg/config/schema/resource"
	kubelib "istio.io/istio/pkg/kube"
)

// Manifest is one rendered install, split the way the API server stores it.
type Manifest struct {
	// Istio resources, validated by Istio's webhook validators.
	Istio []config.Config
	// Kubernetes objects (Deployments, Services, ConfigMaps, ...).
	Kube []runtime.Object
	// Istio's warnings, one line per resource.
	Warnings []string
	// Objects of kinds neither Istio nor Kubernetes' core API know (e.g.
	// Prometheus Operator monitors), as "Kind/name.namespace".
	Skipped []string
}

// Invalid lists every resource Istio refuses, each with Istio's own message.
type Invalid struct {
	Problems []string
}

func (e *Invalid) Error() string {
	return "Istio rejects the configuration:\n  " + strings.Join(e.Problems, "\n  ")
}

// defaultNamespace is where `helm template` output without a namespace lands,
// as `kubectl apply` would put it.
const defaultNamespace = "default"

// ParseManifest reads a multi-document YAML stream. Istio kinds go through
// Istio's conversion and validation (what `kubectl apply` meets at the
// validating webhook); every refused resource is reported, not only the first.
func ParseManifest(text string) (*Manifest, error) {
	m := &Manifest{}
	var problems []string
	reader := kubeyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(text)))
	decode := kubelib.IstioCodec.UniversalDeserializer().Decode
	for {
		doc, readErr := reader.Read()
		if errors.Is(readErr, io.EOF) {
			break
		}
		if readErr != nil {
			return nil, fmt.Errorf("read manifest: %w", readErr)
		}
		var kind crd.IstioKind
		if err := yaml.Unmarshal(doc, &kind); err != nil {
			return nil, fmt.Errorf("parse manifest document: %w", err)
		}
		// Also how an empty document, or one of only comments (helm's
		// `# Source:` header of a template that rendered nothing), ends.
		if kind.Kind == "" {
			continue
		}
		if kind.Namespace == "" {
			kind.Namespace = defaultNamespace
		}
		id := kind.Kind + "/" + kind.Name
		gvk := kind.GroupVersionKind()
		if schema, ok := collections.PilotGatewayAPI().FindByGroupVersionAliasesKind(resource.FromKubernetesGVK(&gvk)); ok {
			// The domain completes short host names, as istiod's CRD client does.
			cfg, err := crd.ConvertObject(schema, &kind, constants.DefaultClusterLocalDomain)
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s.%s: %v", id, kind.Namespace, err))
				continue
			}
			warning, err := schema.ValidateConfig(*cfg)
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s.%s: %v", id, kind.Namespace, err))
				continue
			}
			if warning != nil {
				m.Warnings = append(m.Warnings, fmt.Sprintf("%s.%s: %v", id, kind.Namespace, warning))
			}
			m.Istio = append(m.Istio, *cfg)
			continue
		}
		obj, objGVK, err := decode(doc, nil, nil)
		if err != nil {
			if runtime.IsNotRegisteredError(err) {
				m.Skipped = append(m.Skipped, id+"."+kind.Namespace)
				continue
			}
			return nil, fmt.Errorf("%s: %w", id, err)
		}
		if meta, ok := obj.(interface {
			GetNamespace() string
			SetNamespace(string)
		}); ok && meta.GetNamespace() == "" && !clusterScoped(objGVK) {
			meta.SetNamespace(defaultNamespace)
		}
		m.Kube = append(m.Kube, obj)
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		return nil, &Invalid{Problems: problems}
	}
	return m, nil
}

// clusterScoped reports the kinds Istio's schemas know to have no namespace
// (Namespace, Node, webhook configurations, ...). The API server keeps them
// without one; given one, the synthesized API server would file them under
// it, where Istio does not look them up.
func clusterScoped(gvk *schema.GroupVersionKind) bool {
	if gvk == nil {
		return false
	}
	s, ok := collections.All.FindByGroupVersionAliasesKind(resource.FromKubernetesGVK(gvk))
	return ok && s.IsClusterScoped()
}
