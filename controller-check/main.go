// Command controller-check runs Flagger's and Argo Rollouts' own code on
// this project's example manifests (manifests/examples) and against a
// running `meshctl gate serve`, so the tests check the gate and the
// manifests with the controllers' code rather than an imitation of it:
//
//	controller-check decode FILE...
//	    decodes every Flagger and Argo Rollouts object of the files into the
//	    controllers' Go types, refusing unknown fields, and runs Argo's
//	    validation of analysis metrics.
//	controller-check flagger CANARY_FILE GATE_URL
//	    calls each webhook of the Canary with Flagger's CallWebhook, its URL's
//	    scheme and host swapped for GATE_URL; one JSON line per webhook.
//	controller-check argo TEMPLATE_FILE SESSION GATE_URL
//	    resolves the AnalysisTemplate's metrics with Argo's own argument
//	    handling (session=SESSION), swaps the web provider's scheme and host
//	    for GATE_URL, and takes one measurement with Argo's web provider; one
//	    JSON line per metric with its phase (Successful, Failed,
//	    Inconclusive or Error).
//
// It exits 0 once it has printed its findings; 2 for a usage error and 1
// when a file cannot be read or decoded.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"

	"github.com/argoproj/argo-rollouts/metricproviders/webmetric"
	"github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	analysisutil "github.com/argoproj/argo-rollouts/utils/analysis"
	flaggerv1 "github.com/fluxcd/flagger/pkg/apis/flagger/v1beta1"
	"github.com/fluxcd/flagger/pkg/controller"
	log "github.com/sirupsen/logrus"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch args := os.Args[2:]; os.Args[1] {
	case "decode":
		if len(args) == 0 {
			usage()
		}
		err = decodeAll(args)
	case "flagger":
		if len(args) != 2 {
			usage()
		}
		err = flagger(args[0], args[1])
	case "argo":
		if len(args) != 3 {
			usage()
		}
		err = argo(args[0], args[1], args[2])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "controller-check: %v\n", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: controller-check decode FILE... | flagger CANARY_FILE GATE_URL | argo TEMPLATE_FILE SESSION GATE_URL")
	os.Exit(2)
}

// documents splits a YAML file into its documents, as JSON.
func documents(path string) ([][]byte, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	reader := k8syaml.NewYAMLReader(bufio.NewReader(file))
	var out [][]byte
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		text, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if string(text) != "null" {
			out = append(out, text)
		}
	}
}

// strict decodes JSON into out, refusing fields the type does not have.
func strict(doc []byte, out any) error {
	decoder := json.NewDecoder(bytes.NewReader(doc))
	decoder.DisallowUnknownFields()
	return decoder.Decode(out)
}

type typeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
}

func decodeAll(paths []string) error {
	for _, path := range paths {
		docs, err := documents(path)
		if err != nil {
			return err
		}
		for _, doc := range docs {
			var meta typeMeta
			if err := json.Unmarshal(doc, &meta); err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			id := fmt.Sprintf("%s %s/%s", path, meta.Kind, meta.Metadata.Name)
			problem := decodeOne(meta, doc)
			checked := problem == nil
			line := map[string]any{"object": id, "kind": meta.Kind, "checked": meta.APIVersion == "flagger.app/v1beta1" || meta.APIVersion == "argoproj.io/v1alpha1"}
			if !checked {
				line["error"] = problem.Error()
			}
			line["ok"] = checked
			printJSON(line)
		}
	}
	return nil
}

// decodeOne checks one object of a kind the controllers define; other
// kinds are left to the Kubernetes and Istio schemas.
func decodeOne(meta typeMeta, doc []byte) error {
	switch meta.APIVersion + " " + meta.Kind {
	case "flagger.app/v1beta1 Canary":
		var canary flaggerv1.Canary
		return strict(doc, &canary)
	case "argoproj.io/v1alpha1 Rollout":
		var rollout v1alpha1.Rollout
		return strict(doc, &rollout)
	case "argoproj.io/v1alpha1 AnalysisTemplate":
		var template v1alpha1.AnalysisTemplate
		if err := strict(doc, &template); err != nil {
			return err
		}
		return analysisutil.ValidateMetrics(template.Spec.Metrics)
	default:
		return nil
	}
}

// swapHost points raw at gate's scheme and host, keeping its path and query.
func swapHost(raw, gate string) (string, error) {
	target, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	base, err := url.Parse(gate)
	if err != nil {
		return "", err
	}
	target.Scheme, target.Host = base.Scheme, base.Host
	return target.String(), nil
}

func flagger(canaryPath, gate string) error {
	docs, err := documents(canaryPath)
	if err != nil {
		return err
	}
	for _, doc := range docs {
		var canary flaggerv1.Canary
		if err := strict(doc, &canary); err != nil || canary.Kind != "Canary" {
			continue
		}
		for _, hook := range canary.GetAnalysis().Webhooks {
			swapped, err := swapHost(hook.URL, gate)
			if err != nil {
				return err
			}
			hook.URL = swapped
			called := controller.CallWebhook(canary, flaggerv1.CanaryPhaseProgressing, hook)
			line := map[string]any{"name": hook.Name, "type": string(hook.Type), "ok": called == nil}
			if called != nil {
				line["error"] = called.Error()
			}
			printJSON(line)
		}
	}
	return nil
}

func argo(templatePath, session, gate string) error {
	docs, err := documents(templatePath)
	if err != nil {
		return err
	}
	value := session
	args := []v1alpha1.Argument{{Name: "session", Value: &value}}
	for _, doc := range docs {
		var template v1alpha1.AnalysisTemplate
		if err := strict(doc, &template); err != nil || template.Kind != "AnalysisTemplate" {
			continue
		}
		run, err := analysisutil.NewAnalysisRunFromTemplates([]*v1alpha1.AnalysisTemplate{&template}, nil, args, nil, nil, nil, nil, "check", "", template.Namespace)
		if err != nil {
			return err
		}
		for _, metric := range run.Spec.Metrics {
			resolved, err := analysisutil.ResolveMetricArgs(metric, run.Spec.Args)
			if err != nil {
				return err
			}
			if resolved.Provider.Web == nil {
				continue
			}
			if resolved.Provider.Web.URL, err = swapHost(resolved.Provider.Web.URL, gate); err != nil {
				return err
			}
			client, err := webmetric.NewWebMetricHttpClient(*resolved)
			if err != nil {
				return err
			}
			parser, err := webmetric.NewWebMetricJsonParser(*resolved)
			if err != nil {
				return err
			}
			provider := webmetric.NewWebMetricProvider(*log.NewEntry(log.New()), client, parser)
			measurement := provider.Run(run, *resolved)
			printJSON(map[string]any{
				"metric":  resolved.Name,
				"url":     resolved.Provider.Web.URL,
				"phase":   string(measurement.Phase),
				"value":   measurement.Value,
				"message": measurement.Message,
			})
		}
	}
	return nil
}

func printJSON(line map[string]any) {
	text, err := json.Marshal(line)
	if err != nil {
		text = []byte(fmt.Sprintf(`{"error":%q}`, err.Error()))
	}
	fmt.Println(string(text))
}
