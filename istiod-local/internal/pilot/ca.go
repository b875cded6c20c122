package pilot

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kubefake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"istio.io/istio/pkg/config/constants"
	"istio.io/istio/pkg/security"
	"istio.io/istio/security/pkg/pki/ca"
	"istio.io/istio/security/pkg/pki/util"
	caserver "istio.io/istio/security/pkg/server/ca"
	"istio.io/istio/security/pkg/server/ca/authenticate/kubeauth"
)

// Authority is istiod's certificate authority: Istio's own CA (self-signed
// root, as istiod creates when no cacerts Secret is given) behind Istio's
// certificate service, which the proxies' agents call for workload
// certificates. The root outlives a restart of the control plane (istiod
// keeps it in the istio-ca-secret Secret; here, in a folder).
type Authority struct {
	CA *ca.IstioCA
}

const (
	rootFile = "root-cert.pem"
	keyFile  = "ca-key.pem"
	// istiod's defaults: a 10-year root, 24 h workload certificates.
	rootTTL     = 10 * 365 * 24 * time.Hour
	workloadTTL = 24 * time.Hour
	maxTTL      = 90 * 24 * time.Hour
	org         = "cluster.local"
)

// LoadAuthority reads the CA from `dir`, creating it on first use.
func LoadAuthority(dir string) (*Authority, error) {
	certPEM, certErr := os.ReadFile(filepath.Join(dir, rootFile))
	keyPEM, keyErr := os.ReadFile(filepath.Join(dir, keyFile))
	if certErr != nil || keyErr != nil {
		var err error
		certPEM, keyPEM, err = util.GenCertKeyFromOptions(util.CertOptions{
			TTL: rootTTL, Org: org, IsCA: true, IsSelfSigned: true, RSAKeySize: 2048, IsDualUse: true,
		})
		if err != nil {
			return nil, fmt.Errorf("create the CA: %w", err)
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, keyFile), keyPEM, 0o600); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, rootFile), certPEM, 0o644); err != nil {
			return nil, err
		}
	}
	bundle, err := util.NewVerifiedKeyCertBundleFromPem(certPEM, keyPEM, nil, certPEM, nil)
	if err != nil {
		return nil, fmt.Errorf("load the CA from %s: %w", dir, err)
	}
	istioCA, err := ca.NewIstioCA(&ca.IstioCAOptions{
		DefaultCertTTL: workloadTTL,
		MaxCertTTL:     maxTTL,
		CARSAKeySize:   2048,
		KeyCertBundle:  bundle,
	})
	if err != nil {
		return nil, err
	}
	return &Authority{CA: istioCA}, nil
}

// RootPEM is what istiod publishes as the istio-ca-root-cert ConfigMap.
func (a *Authority) RootPEM() string {
	return string(a.CA.GetCAKeyCertBundle().GetRootCertPem())
}

// ServingCert is istiod's own certificate for its xDS and CA port, valid
// for its Service name and for the node address the proxies dial.
func (a *Authority) ServingCert(namespace string, addr netip.Addr) (tls.Certificate, error) {
	// As istiod makes its own (initDNSCertsIstiod): a key of the CA's type
	// (RSA 2048 for the root made here), the names as SANs, the CA's chain
	// appended. The lifetime check stays on, as SignWithCertChain had it.
	chain, key, err := a.CA.GenKeyCert([]string{"istiod." + namespace + ".svc", addr.String()}, maxTTL, true)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(chain, key)
}

// Server returns Istio's certificate service for `mesh`, authenticating
// callers by their service account token through a TokenReview, as istiod
// does (here the review is answered by the synthesized API server, which
// trusts the tokens it issued; see cluster.Token).
func (a *Authority) Server(authenticators []security.Authenticator) (*caserver.Server, error) {
	return caserver.New(a.CA, maxTTL, authenticators, nil)
}

// JWTAuthenticator is istiod's Kubernetes JWT authenticator on `client`.
func JWTAuthenticator(s *Server, client *kubefake.Clientset) security.Authenticator {
	return kubeauth.NewKubeJWTAuthenticator(s.Env().Watcher, client, constants.DefaultClusterName, nil, nil)
}

// AnswerTokenReviews makes the fake API server review service account
// tokens: a token it issued (unsigned claims, see cluster.Token) is
// authenticated as its service account; anything else is not.
func AnswerTokenReviews(client *kubefake.Clientset) {
	client.PrependReactor("create", "tokenreviews", func(action k8stesting.Action) (bool, runtime.Object, error) {
		create, ok := action.(k8stesting.CreateAction)
		if !ok {
			return false, nil, nil
		}
		review, ok := create.GetObject().(*authenticationv1.TokenReview)
		if !ok {
			return false, nil, nil
		}
		out := review.DeepCopy()
		namespace, account, err := tokenSubject(review.Spec.Token)
		if err != nil {
			out.Status.Error = err.Error()
			return true, out, nil
		}
		out.Status.Authenticated = true
		out.Status.Audiences = review.Spec.Audiences
		out.Status.User = authenticationv1.UserInfo{
			Username: "system:serviceaccount:" + namespace + ":" + account,
			Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"},
		}
		return true, out, nil
	})
}

func tokenSubject(token string) (namespace, account string, err error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return "", "", fmt.Errorf("not a JWT")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", "", fmt.Errorf("bad JWT payload: %w", err)
	}
	var claims struct {
		Sub string `json:"sub"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return "", "", fmt.Errorf("bad JWT claims: %w", err)
	}
	fields := strings.Split(claims.Sub, ":")
	if len(fields) != 4 || fields[0] != "system" || fields[1] != "serviceaccount" {
		return "", "", fmt.Errorf("not a service account token")
	}
	return fields[2], fields[3], nil
}

// CertPool holds the root, to verify the proxies' client certificates.
func (a *Authority) CertPool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(a.CA.GetCAKeyCertBundle().GetRootCertPem())
	return pool
}
