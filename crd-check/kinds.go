package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"

	"k8s.io/apiextensions-apiserver/pkg/apihelpers"
	apiextensions "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	structuraldefaulting "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	schemaobjectmeta "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/objectmeta"
	structuralpruning "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	apiservervalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	"k8s.io/apiextensions-apiserver/pkg/crdserverscheme"
	"k8s.io/apiextensions-apiserver/pkg/registry/customresource"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	kubeyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"
	"sigs.k8s.io/yaml"
)

// Kinds holds, per served group/version/kind, what the API server builds
// from its CRD (customresource_handler.go's getOrCreateServingInfoFor),
// built on first use: compiling every CEL rule of every CRD would cost more
// than the objects checked.
type Kinds map[schema.GroupVersionKind]*served

type served struct {
	crd     *apiextensionsv1.CustomResourceDefinition
	version apiextensionsv1.CustomResourceDefinitionVersion
	err     error
	built   bool

	structural *structuralschema.Structural
	strategy   rest.RESTCreateStrategy
	namespaced bool
}

// Add reads a YAML stream of CustomResourceDefinitions.
func (k Kinds) Add(text []byte) error {
	reader := kubeyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(text)))
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		var crd apiextensionsv1.CustomResourceDefinition
		if err := yaml.UnmarshalStrict(doc, &crd); err != nil {
			return err
		}
		if crd.Kind == "" {
			continue
		}
		if crd.Kind != "CustomResourceDefinition" {
			return fmt.Errorf("%s %s is not a CustomResourceDefinition", crd.Kind, crd.Name)
		}
		for _, v := range crd.Spec.Versions {
			if v.Served {
				k[schema.GroupVersionKind{Group: crd.Spec.Group, Version: v.Name, Kind: crd.Spec.Names.Kind}] = &served{crd: &crd, version: v}
			}
		}
	}
}

// build makes the schema, validators and strategy of the served version.
func (s *served) build() error {
	if s.built {
		return s.err
	}
	s.built = true
	s.err = s.make()
	if s.err != nil {
		s.err = fmt.Errorf("CRD %s version %s: %w", s.crd.Name, s.version.Name, s.err)
	}
	return s.err
}

func (s *served) make() error {
	crd, v := s.crd, s.version
	validation, err := apihelpers.GetSchemaForVersion(crd, v.Name)
	if err != nil {
		return err
	}
	internal := &apiextensions.CustomResourceValidation{}
	if validation != nil {
		if err := apiextensionsv1.Convert_v1_CustomResourceValidation_To_apiextensions_CustomResourceValidation(validation, internal, nil); err != nil {
			return err
		}
	}
	structural, err := structuralschema.NewStructural(internal.OpenAPIV3Schema)
	if err != nil {
		return err
	}
	if err := structuraldefaulting.PruneDefaults(structural); err != nil {
		return err
	}
	validator, _, err := apiservervalidation.NewSchemaValidator(internal.OpenAPIV3Schema)
	if err != nil {
		return err
	}
	var status *apiextensions.CustomResourceSubresourceStatus
	var statusValidator apiservervalidation.SchemaValidator
	if sub, err := apihelpers.GetSubresourcesForVersion(crd, v.Name); err == nil && sub != nil && sub.Status != nil {
		status = &apiextensions.CustomResourceSubresourceStatus{}
		if props, ok := internal.OpenAPIV3Schema.Properties["status"]; ok {
			if statusValidator, _, err = apiservervalidation.NewSchemaValidator(&props); err != nil {
				return err
			}
		}
	}
	kind := schema.GroupVersionKind{Group: crd.Spec.Group, Version: v.Name, Kind: crd.Spec.Names.Kind}
	strategy := customresource.NewStrategy(crdserverscheme.NewUnstructuredObjectTyper(),
		crd.Spec.Scope == apiextensionsv1.NamespaceScoped, kind, validator, statusValidator,
		structural, status, nil, v.SelectableFields)
	s.structural, s.strategy = structural, strategy
	s.namespaced = crd.Spec.Scope == apiextensionsv1.NamespaceScoped
	return nil
}

// Validate is a create of `u` with strict field validation: unknown fields
// are errors, as `kubectl apply --validate=strict` makes them. A namespaced
// object without a namespace goes to `default`, as kubectl sends it.
func (k Kinds) Validate(u *unstructured.Unstructured) []string {
	s, ok := k[u.GroupVersionKind()]
	if !ok {
		return []string{fmt.Sprintf("no CRD serves %s %s", u.GetAPIVersion(), u.GetKind())}
	}
	if err := s.build(); err != nil {
		return []string{err.Error()}
	}
	u = u.DeepCopy()
	if s.namespaced && u.GetNamespace() == "" {
		u.SetNamespace("default")
	}
	// What the API server's handler puts in the request's context.
	ctx := request.WithNamespace(context.Background(), u.GetNamespace())
	var out []string
	// The handler's decoding (unstructuredSchemaCoercer.apply).
	_, _, unknownMeta, err := schemaobjectmeta.GetObjectMetaWithOptions(u.Object, schemaobjectmeta.ObjectMetaOptions{ReturnUnknownFieldPaths: true})
	if err != nil {
		return []string{err.Error()}
	}
	unknown := append(unknownMeta, structuralpruning.PruneWithOptions(u.Object, s.structural, true,
		structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true})...)
	structuraldefaulting.PruneNonNullableNullsWithoutDefaults(u.Object, s.structural)
	ferr, metaPaths := schemaobjectmeta.CoerceWithOptions(nil, u.Object, s.structural, false,
		schemaobjectmeta.CoerceOptions{ReturnUnknownFieldPaths: true})
	if ferr != nil {
		out = append(out, ferr.Error())
	}
	unknown = append(unknown, metaPaths...)
	sort.Strings(unknown)
	for _, path := range unknown {
		out = append(out, fmt.Sprintf("unknown field %q", path))
	}
	// Defaulting, then the create strategy.
	structuraldefaulting.Default(u.Object, s.structural)
	s.strategy.PrepareForCreate(ctx, u)
	for _, e := range s.strategy.Validate(ctx, u) {
		out = append(out, e.Error())
	}
	return out
}
