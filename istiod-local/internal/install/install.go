// Package install reads Istio's own installation, rendered from Istio's istiod
// chart: the mesh config, the sidecar injector's templates and values, and the
// environment istiod runs with. The local control plane takes them from there,
// as istiod and its injection webhook do in a cluster.
package install

import (
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"

	meshconfig "istio.io/api/mesh/v1alpha1"
	"istio.io/istio/pkg/config/mesh"
	"istio.io/istio/pkg/kube/inject"
)

// Install is what the istiod chart configures.
type Install struct {
	Mesh *meshconfig.MeshConfig
	// The injection templates and policy (ConfigMap istio-sidecar-injector).
	Injector inject.Config
	Values   inject.ValuesConfig
	// Literal environment of the discovery container (feature flags).
	Env map[string]string
	// The namespace Istio is installed in (its root namespace by default).
	Namespace string
}

// Read finds Istio's ConfigMaps and istiod Deployment among `objects`.
func Read(objects []runtime.Object) (*Install, error) {
	var meshYAML, injectorYAML, valuesJSON string
	out := &Install{Env: map[string]string{}}
	for _, obj := range objects {
		switch o := obj.(type) {
		case *corev1.ConfigMap:
			switch o.Name {
			case "istio":
				meshYAML = o.Data["mesh"]
				out.Namespace = o.Namespace
			case "istio-sidecar-injector":
				injectorYAML = o.Data["config"]
				valuesJSON = o.Data["values"]
			}
		case *appsv1.Deployment:
			if o.Name != "istiod" {
				continue
			}
			for _, c := range o.Spec.Template.Spec.Containers {
				if c.Name != "discovery" {
					continue
				}
				for _, e := range c.Env {
					if e.ValueFrom == nil {
						out.Env[e.Name] = e.Value
					}
				}
			}
		}
	}
	if meshYAML == "" || injectorYAML == "" || valuesJSON == "" {
		return nil, fmt.Errorf("no Istio install found: expected the istiod chart's ConfigMaps istio and istio-sidecar-injector")
	}
	var err error
	if out.Mesh, err = mesh.ApplyMeshConfigDefaults(meshYAML); err != nil {
		return nil, fmt.Errorf("mesh config: %w", err)
	}
	if out.Injector, err = inject.UnmarshalConfig([]byte(injectorYAML)); err != nil {
		return nil, fmt.Errorf("sidecar injector config: %w", err)
	}
	if out.Values, err = inject.NewValuesConfig(valuesJSON); err != nil {
		return nil, fmt.Errorf("sidecar injector values: %w", err)
	}
	return out, nil
}
