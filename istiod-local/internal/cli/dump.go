package cli

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"istio.io/istio/pkg/test"

	"github.com/sms-checker/sms-checker-mesh/istiod-local/internal/pilot"
)

// index.json lists what a dump holds and what Istio said about the input.
type dumpIndex struct {
	Proxies  []string `json:"proxies"`
	Warnings []string `json:"warnings,omitempty"`
	// Objects of kinds the control plane does not read (e.g. PodMonitor).
	Skipped []string `json:"skipped,omitempty"`
}

func dump(args []string) error {
	fs := flag.NewFlagSet("dump", flag.ContinueOnError)
	var in inputs
	in.register(fs)
	out := fs.String("out", "", "folder for <pod>.<namespace>.json per proxy, index.json and plan.json")
	template := fs.String("bootstrap-template", "", "Istio's Envoy bootstrap template (tools/packaging/common/envoy_bootstrap.json)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" || *template == "" {
		return fmt.Errorf("--out and --bootstrap-template are required")
	}
	w, plan, err := in.loadPlan()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(*out, "plan.json"), plan); err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "istiod-local-dump-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	index := dumpIndex{Warnings: w.manifest.Warnings, Skipped: w.manifest.Skipped}
	err = test.Wrap(func(t test.Failer) {
		server, err := pilot.Start(t, pilot.Options{Istio: w.istio, Objects: w.cluster.Objects, Configs: w.manifest.Istio})
		if err != nil {
			t.Fatal(err)
		}
		dumps, err := server.Dump(t, plan, *template, work)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range dumps {
			name := d.Pod + "." + d.Namespace
			if err := writeJSON(filepath.Join(*out, name+".json"), d); err != nil {
				t.Fatal(err)
			}
			index.Proxies = append(index.Proxies, name)
		}
	})
	if err != nil {
		return err
	}
	return writeJSON(filepath.Join(*out, "index.json"), index)
}
