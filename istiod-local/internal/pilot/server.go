// Package pilot runs Istio's discovery server (pilot) on a synthesized
// cluster: the same config generation, push context, Kubernetes service
// registry, WasmPlugin translation and ECDS generator istiod runs, set up by
// Istio's own harness (pilot/test/xds) over a fake Kubernetes client.
package pilot

import (
	"crypto/tls"
	"fmt"
	"net"
	"sort"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"k8s.io/apimachinery/pkg/runtime"
	kubefake "k8s.io/client-go/kubernetes/fake"

	"istio.io/istio/pilot/pkg/model"
	v3 "istio.io/istio/pilot/pkg/xds/v3"
	"istio.io/istio/pilot/test/xds"
	"istio.io/istio/pkg/config"
	kubelib "istio.io/istio/pkg/kube"
	"istio.io/istio/pkg/security"
	"istio.io/istio/pkg/test"
	caserver "istio.io/istio/security/pkg/server/ca"
	"istio.io/istio/security/pkg/server/ca/authenticate"

	"github.com/sms-checker/sms-checker-mesh/istiod-local/internal/install"
)

// Server is a running discovery server.
type Server struct {
	*xds.FakeDiscoveryServer
	istio *install.Install
}

// Options say what pilot runs on and where it listens.
type Options struct {
	Istio *install.Install
	// The synthesized cluster's objects and the validated Istio resources.
	Objects []runtime.Object
	Configs []config.Config
	// istiod's CA; its certificate service shares the secure port.
	Authority *Authority
	// Secure listeners serve xDS and the CA over TLS with `ServingCert`, as
	// istiod's port 15012 does; Plain ones serve xDS only, as port 15010.
	Secure      []net.Listener
	ServingCert tls.Certificate
	Plain       []net.Listener
}

// Start runs pilot. Without listeners it is only reachable in memory (for
// dumps and tests).
func Start(t test.Failer, o Options) (*Server, error) {
	var client *kubefake.Clientset
	// The store's copies are Istio's to change; the caller keeps its own.
	configs := make([]config.Config, 0, len(o.Configs))
	for _, c := range o.Configs {
		configs = append(configs, c.DeepCopy())
	}
	fake := xds.NewFakeDiscoveryServer(t, xds.FakeOptions{
		KubernetesObjects: o.Objects,
		Configs:           configs,
		MeshConfig:        o.Istio.Mesh,
		// istiod's default debounce: changes that arrive together make one push.
		DebounceTime: 100 * time.Millisecond,
		KubeClientModifier: func(c kubelib.Client) {
			client, _ = c.Kube().(*kubefake.Clientset)
			if client != nil {
				AnswerTokenReviews(client)
			}
		},
	})
	s := &Server{FakeDiscoveryServer: fake, istio: o.Istio}
	if client == nil {
		return nil, fmt.Errorf("the synthesized API server is not a fake clientset")
	}
	// istiod's authenticators, in its order: a client certificate from its
	// CA, else a service account token reviewed by the API server.
	authenticators := []security.Authenticator{
		&authenticate.ClientCertAuthenticator{},
		JWTAuthenticator(s, client),
	}
	fake.Discovery.Authenticators = authenticators
	for _, l := range o.Plain {
		serve(t, l, fake, nil)
	}
	if len(o.Secure) > 0 {
		ca, err := o.Authority.Server(authenticators)
		if err != nil {
			return nil, err
		}
		creds := credentials.NewTLS(&tls.Config{
			Certificates: []tls.Certificate{o.ServingCert},
			ClientAuth:   tls.VerifyClientCertIfGiven,
			ClientCAs:    o.Authority.CertPool(),
			MinVersion:   tls.VersionTLS12,
		})
		for _, l := range o.Secure {
			serve(t, l, fake, ca, grpc.Creds(creds))
		}
	}
	return s, nil
}

func serve(t test.Failer, l net.Listener, fake *xds.FakeDiscoveryServer, ca *caserver.Server, opts ...grpc.ServerOption) {
	server := grpc.NewServer(opts...)
	fake.Discovery.Register(server)
	if ca != nil {
		ca.Register(server)
	}
	go func() { _ = server.Serve(l) }()
	t.Cleanup(server.Stop)
}

// WaitCommitted waits until every change handed to the server so far is in
// the push context that pushes are built from.
func (s *Server) WaitCommitted(timeout time.Duration) error {
	target := s.Discovery.InboundUpdates.Load()
	deadline := time.Now().Add(timeout)
	for s.Discovery.CommittedUpdates.Load() < target {
		if time.Now().After(deadline) {
			return fmt.Errorf("configuration not committed after %s", timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

// Nonces is, per connected proxy and resource type, the last nonce sent.
type Nonces map[string]map[string]string

// SentNonces reads what every connected proxy was last sent.
func (s *Server) SentNonces() Nonces {
	out := Nonces{}
	for _, con := range s.Discovery.Clients() {
		sent := map[string]string{}
		// Copies taken under the proxy's lock: pilot updates the watched
		// resources in place as the proxy's answers arrive.
		for typeURL, w := range con.Proxy().DeepCloneWatchedResources() {
			sent[typeURL] = w.NonceSent
		}
		out[con.ID()] = sent
	}
	return out
}

// Rejection is a proxy refusing what it was sent (an xDS NACK).
type Rejection struct {
	Proxy string `json:"proxy"`
	// The resource type, in Istio's short form (LDS, RDS, CDS, EDS, ECDS).
	Type  string `json:"type"`
	Error string `json:"error"`
}

// Rejections lists every type a connected proxy last refused.
func (s *Server) Rejections() []Rejection {
	var out []Rejection
	for _, con := range s.Discovery.Clients() {
		for typeURL, w := range con.Proxy().DeepCloneWatchedResources() {
			if w.LastError != "" {
				out = append(out, Rejection{Proxy: con.Proxy().ID, Type: v3.GetShortType(typeURL), Error: w.LastError})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Proxy+out[i].Type < out[j].Proxy+out[j].Type })
	return out
}

// WaitSynced waits until some proxy has been sent something after `before`
// and every connected proxy has answered everything it was sent, with an
// acknowledgement (what `istioctl proxy-status` calls SYNCED) or a refusal.
// It returns the IDs of the proxies that received new configuration.
func (s *Server) WaitSynced(before Nonces, timeout time.Duration) ([]string, error) {
	deadline := time.Now().Add(timeout)
	for {
		var changed []string
		settled := true
		for _, con := range s.Discovery.Clients() {
			moved := false
			for typeURL, w := range con.Proxy().DeepCloneWatchedResources() {
				if w.NonceSent != w.NonceAcked && w.LastError == "" {
					settled = false
				}
				if before[con.ID()][typeURL] != w.NonceSent {
					moved = true
				}
			}
			if moved {
				changed = append(changed, con.ID())
			}
		}
		if settled && len(changed) > 0 {
			sort.Strings(changed)
			return changed, nil
		}
		if time.Now().After(deadline) {
			if len(changed) == 0 {
				return nil, nil
			}
			return changed, fmt.Errorf("proxies did not answer the new configuration within %s", timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Proxies lists the IDs of the connected proxies.
func (s *Server) Proxies() []*model.Proxy {
	var out []*model.Proxy
	for _, con := range s.Discovery.Clients() {
		out = append(out, con.Proxy())
	}
	return out
}
