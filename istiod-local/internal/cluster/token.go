package cluster

import (
	"encoding/base64"
	"encoding/json"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Token is the service account token the kubelet projects into a pod: the
// claims of a Kubernetes bound token, unsigned. Only the synthesized API
// server reads it back (istiod's TokenReview, see pilot.AnswerTokenReviews),
// so no signature is needed; anyone else would refuse it, as they should.
func Token(pod *corev1.Pod, audiences []string, issued time.Time) string {
	header, _ := json.Marshal(map[string]string{"alg": "none", "typ": "JWT"})
	now := issued
	claims, _ := json.Marshal(map[string]any{
		"iss": "https://kubernetes.default.svc.cluster.local",
		"sub": "system:serviceaccount:" + pod.Namespace + ":" + pod.Spec.ServiceAccountName,
		"aud": audiences,
		"iat": now.Unix(),
		"exp": now.Add(365 * 24 * time.Hour).Unix(),
		"kubernetes.io": map[string]any{
			"namespace":      pod.Namespace,
			"pod":            map[string]string{"name": pod.Name, "uid": string(pod.UID)},
			"serviceaccount": map[string]string{"name": pod.Spec.ServiceAccountName},
		},
	})
	enc := base64.RawURLEncoding
	return enc.EncodeToString(header) + "." + enc.EncodeToString(claims) + "."
}
