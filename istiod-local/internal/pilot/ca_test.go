package pilot

import (
	"encoding/base64"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"istio.io/istio/pkg/security"
	"istio.io/istio/security/pkg/server/ca/authenticate/kubeauth"

	"github.com/sms-checker/sms-checker-mesh/istiod-local/internal/testcharts"
)

// istiod's Kubernetes JWT authenticator, answered by the synthesized API
// server, accepts the token the kubelet projects into a pod for Istio's CA
// as that pod's service account, and nothing else.
func TestTokenAuthentication(t *testing.T) {
	m := startMesh(t, testcharts.Testdata(t, "shop.yaml"))
	var authenticator security.Authenticator
	for _, a := range m.Discovery.Authenticators {
		if _, ok := a.(*kubeauth.KubeJWTAuthenticator); ok {
			authenticator = a
		}
	}
	if authenticator == nil {
		t.Fatal("pilot has no Kubernetes JWT authenticator")
	}
	var podToken string
	for _, p := range m.plan.Pods {
		for _, c := range p.Containers {
			for _, f := range c.Files {
				if p.Name == "web-0" && f.Path == "/var/run/secrets/tokens/istio-token" {
					podToken = f.Content
				}
			}
		}
	}
	if podToken == "" {
		t.Fatal("web-0 has no istio-token")
	}
	unsigned := func(claims string) string {
		enc := base64.RawURLEncoding
		return enc.EncodeToString([]byte(`{"alg":"none"}`)) + "." + enc.EncodeToString([]byte(claims)) + "."
	}
	cases := []struct {
		name, token string
		identities  []string
		err         string
	}{
		{name: "pod token", token: podToken, identities: []string{"spiffe://cluster.local/ns/shop/sa/default"}},
		{name: "not a JWT", token: "opaque", err: "not a JWT"},
		{name: "a user, not a service account", token: unsigned(`{"sub":"alice"}`), err: "not a service account token"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, "/", nil)
			req.Header.Set("Authorization", "Bearer "+tc.token)
			caller, err := authenticator.Authenticate(security.AuthContext{Request: req})
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("want an error with %q, got %v (caller %+v)", tc.err, err, caller)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(caller.Identities, tc.identities) {
				t.Errorf("identities: got %v, want %v", caller.Identities, tc.identities)
			}
		})
	}
}
