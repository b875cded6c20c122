package cli

import (
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"syscall"

	"istio.io/istio/pkg/test"

	"github.com/sms-checker/sms-checker-mesh/istiod-local/internal/pilot"
)

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	var in inputs
	in.register(fs)
	secure := fs.String("listen", "", "serve xDS and the CA over TLS here (istiod's port 15012), e.g. 10.244.0.1:15012")
	plain := fs.String("listen-plaintext", "", "also serve xDS without TLS here (istiod's port 15010), e.g. 127.0.0.1:15010")
	planOut := fs.String("plan", "", "write the pods to run (resolved like a kubelet would) to this JSON file")
	control := fs.String("control", "", "serve the control API and Istio's debug endpoints (/debug/...) on this Unix socket")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *secure == "" {
		return fmt.Errorf("--listen is required")
	}
	w, plan, err := in.loadPlan()
	if err != nil {
		return err
	}
	if *planOut != "" {
		if err := writeJSON(*planOut, plan); err != nil {
			return err
		}
	}
	secureListener, err := net.Listen("tcp", *secure)
	if err != nil {
		return err
	}
	host, _, _ := net.SplitHostPort(secureListener.Addr().String())
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", *secure, err)
	}
	cert, err := w.authority.ServingCert(w.istio.Namespace, addr)
	if err != nil {
		return err
	}
	opts := pilot.Options{
		Istio: w.istio, Objects: w.cluster.Objects, Configs: w.manifest.Istio,
		Authority: w.authority, Secure: []net.Listener{secureListener}, ServingCert: cert,
	}
	if *plain != "" {
		l, err := net.Listen("tcp", *plain)
		if err != nil {
			return err
		}
		opts.Plain = append(opts.Plain, l)
	}
	return test.Wrap(func(t test.Failer) {
		server, err := pilot.Start(t, opts)
		if err != nil {
			t.Fatal(err)
		}
		if *control != "" {
			_ = os.Remove(*control)
			l, err := net.Listen("unix", *control)
			if err != nil {
				t.Fatal(err)
			}
			c := &controller{server: server, world: w, configs: w.manifest.Istio, plan: plan}
			go func() { _ = http.Serve(l, c.handler()) }()
		}
		fmt.Printf("istiod-local: serving xDS and the CA on %s\n", secureListener.Addr())
		signals := make(chan os.Signal, 1)
		signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
		<-signals
	})
}

func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
