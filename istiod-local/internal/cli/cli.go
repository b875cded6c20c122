// Package cli holds istiod-local's subcommands: `serve` (ADS for the local
// mesh's proxies) and `dump` (each proxy's configuration as JSON).
package cli

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"sort"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/runtime"

	"istio.io/istio/pkg/config"
	"istio.io/istio/pkg/log"

	"github.com/sms-checker/sms-checker-mesh/istiod-local/internal/cluster"
	"github.com/sms-checker/sms-checker-mesh/istiod-local/internal/install"
	"github.com/sms-checker/sms-checker-mesh/istiod-local/internal/pilot"
)

const usage = `usage: istiod-local <command> [flags]

Commands:
  serve   run Istio's discovery server on the manifests and serve ADS to the proxies
  dump    write each proxy's bootstrap and xDS resources as JSON, then exit

Run "istiod-local <command> -h" for the flags of a command.`

// Run dispatches to a subcommand.
func Run(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("%s", usage)
	}
	switch args[0] {
	case "serve":
		return serve(args[1:])
	case "dump":
		return dump(args[1:])
	case "-h", "--help", "help":
		fmt.Println(usage)
		return nil
	default:
		return fmt.Errorf("unknown command %q\n%s", args[0], usage)
	}
}

// files is a repeatable flag.
type files []string

func (f *files) String() string     { return strings.Join(*f, ",") }
func (f *files) Set(v string) error { *f = append(*f, v); return nil }

// inputs are the flags serve and dump share.
type inputs struct {
	manifests files
	istio     string
	podCIDR   string
	caDir     string
	logLevel  string
}

func (in *inputs) register(fs *flag.FlagSet) {
	fs.Var(&in.manifests, "manifest", "rendered manifest of the application and the ingress gateway (repeatable)")
	fs.StringVar(&in.istio, "istio", "", "Istio's install rendered from its istiod chart (mesh config, injector)")
	fs.StringVar(&in.podCIDR, "pod-cidr", "10.244.0.0/24", "the pod network; the node takes its first address")
	fs.StringVar(&in.caDir, "ca-dir", "", "keep istiod's CA (root certificate and key) in this folder; created if missing")
	fs.StringVar(&in.logLevel, "log-level", "warn", "Istio's log level (debug, info, warn, error, none)")
}

// world is everything loaded from the inputs.
type world struct {
	istio     *install.Install
	manifest  *cluster.Manifest
	cluster   *cluster.Cluster
	authority *pilot.Authority
	cidr      netip.Prefix
	// When the control plane started: its tokens' issue time.
	issued time.Time
	// Istio resources of the Istio install itself (kept across applies).
	installConfigs []config.Config
}

// parseManifests reads the rendered manifests into one install.
func parseManifests(texts []string) (*cluster.Manifest, error) {
	out := &cluster.Manifest{}
	for _, text := range texts {
		m, err := cluster.ParseManifest(text)
		if err != nil {
			return nil, err
		}
		out.Istio = append(out.Istio, m.Istio...)
		out.Kube = append(out.Kube, m.Kube...)
		out.Warnings = append(out.Warnings, m.Warnings...)
		out.Skipped = append(out.Skipped, m.Skipped...)
	}
	return out, nil
}

// loadPlan reads the Istio install, sets istiod's environment (Istio reads
// its feature flags once, when the process starts, so the process re-executes
// itself with them), builds the cluster from the manifests and resolves the
// pods, with Istio's warnings and the skipped kinds noted in the plan.
func (in *inputs) loadPlan() (*world, *cluster.Plan, error) {
	opts := log.DefaultOptions()
	// "all" sets every scope registered by now, gRPC's included.
	opts.SetDefaultOutputLevel(log.OverrideScopeName, levelOf(in.logLevel))
	if err := log.Configure(opts); err != nil {
		return nil, nil, err
	}
	if in.istio == "" || len(in.manifests) == 0 || in.caDir == "" {
		return nil, nil, fmt.Errorf("--istio, --ca-dir and at least one --manifest are required")
	}
	cidr, err := netip.ParsePrefix(in.podCIDR)
	if err != nil || !cidr.Addr().Is4() {
		return nil, nil, fmt.Errorf("--pod-cidr %q: an IPv4 prefix such as 10.244.0.0/24", in.podCIDR)
	}
	istioText, err := os.ReadFile(in.istio)
	if err != nil {
		return nil, nil, err
	}
	istioManifest, err := cluster.ParseManifest(string(istioText))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", in.istio, err)
	}
	istio, err := install.Read(istioManifest.Kube)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", in.istio, err)
	}
	if err := applyEnv(istio.Env); err != nil {
		return nil, nil, err
	}
	texts := make([]string, 0, len(in.manifests))
	for _, path := range in.manifests {
		text, err := os.ReadFile(path)
		if err != nil {
			return nil, nil, err
		}
		texts = append(texts, string(text))
	}
	w := &world{istio: istio, cidr: cidr, installConfigs: istioManifest.Istio, issued: time.Now()}
	if w.manifest, err = parseManifests(texts); err != nil {
		return nil, nil, err
	}
	w.manifest.Istio = append(w.manifest.Istio, w.installConfigs...)
	for _, warning := range w.manifest.Warnings {
		fmt.Fprintf(os.Stderr, "istiod-local: Istio warns: %s\n", warning)
	}
	if w.authority, err = pilot.LoadAuthority(in.caDir); err != nil {
		return nil, nil, err
	}
	var plan *cluster.Plan
	if w.cluster, plan, err = w.plan(w.manifest.Kube); err != nil {
		return nil, nil, err
	}
	plan.Warnings, plan.Skipped = w.manifest.Warnings, w.manifest.Skipped
	return w, plan, nil
}

// plan builds the cluster from the manifests' Kubernetes objects and
// resolves its pods, the same way at start and on every apply (so an apply
// that keeps the workloads yields the same pods).
func (w *world) plan(kube []runtime.Object) (*cluster.Cluster, *cluster.Plan, error) {
	c, err := cluster.Synthesize(kube, w.istio, w.cidr, w.authority.RootPEM())
	if err != nil {
		return nil, nil, err
	}
	plan, err := c.PlanFor(w.cidr.String(), w.issued)
	if err != nil {
		return nil, nil, err
	}
	return c, plan, nil
}

// ignoredEnv are istiod settings for parts of a cluster the local control
// plane does not have: a kubeconfig for remote clusters, and the ztunnel node
// accounts its CA would authorize (no ambient mode here).
var ignoredEnv = map[string]bool{"KUBECONFIG": true, "CA_TRUSTED_NODE_ACCOUNTS": true}

// envApplied marks a process that already runs with istiod's environment.
const envApplied = "ISTIOD_LOCAL_ENV_APPLIED"

func applyEnv(env map[string]string) error {
	if os.Getenv(envApplied) == "1" {
		return nil
	}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	environ := os.Environ()
	for _, k := range keys {
		if ignoredEnv[k] {
			continue
		}
		if _, set := os.LookupEnv(k); !set {
			environ = append(environ, k+"="+env[k])
		}
	}
	environ = append(environ, envApplied+"=1")
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if _, err := exec.LookPath(self); err != nil {
		return err
	}
	return syscall.Exec(self, os.Args, environ)
}

func levelOf(name string) log.Level {
	switch name {
	case "debug":
		return log.DebugLevel
	case "info":
		return log.InfoLevel
	case "error":
		return log.ErrorLevel
	case "none":
		return log.NoneLevel
	default:
		return log.WarnLevel
	}
}
