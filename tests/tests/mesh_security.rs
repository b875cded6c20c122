//! Who may call the model-service, enforced by Istio in the local mesh:
//! with the chart's AuthorizationPolicy and STRICT PeerAuthentication on,
//! requests through the ingress gateway (which calls with its mTLS
//! identity) are served, a plaintext call from outside the mesh is refused,
//! and a call from another workload's sidecar, whose identity the policy does
//! not name, gets 403 from Istio's RBAC filter.

use sms_checker_tests::mesh::LocalMesh;
use sms_checker_tests::users::{parallel, predict};

const SMS: &str = "Are we still on for lunch tomorrow?";

/// `POST /predict` for the model-service, sent from inside the pod of
/// `from` as the model-service's own user (65532), so the pod's redirect
/// rules send it through that pod's sidecar, which calls with mTLS as the
/// pod's service account. Any address on the service port reaches the
/// sidecar's outbound listener, which routes by the Host header.
fn call_from_pod(mesh: &LocalMesh, from: &str, to: &str) -> String {
    let target = mesh.component(to);
    let output = mesh
        .in_pod(from, "setpriv")
        .args(["--reuid=65532", "--regid=65532", "--clear-groups", "--"])
        .args([
            "curl",
            "-s",
            "-m",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .args(["-H", "host: model-service.default.svc.cluster.local:8081"])
        .args([
            "-H",
            "content-type: application/json",
            "-d",
            r#"{"sms":"hi"}"#,
        ])
        .arg(format!("http://{}:8081/predict", target.ip))
        .output()
        .expect("run curl in the pod");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The same call from the host, outside the mesh: plaintext, no identity.
fn call_from_outside(mesh: &LocalMesh, to: &str) -> u16 {
    let url = format!("http://{}:8081/predict", mesh.component(to).ip);
    match mesh
        .client()
        .post(&url)
        .header("content-type", "application/json")
        .send(r#"{"sms":"hi"}"#)
    {
        Ok(response) => response.status().as_u16(),
        Err(_) => 0,
    }
}

#[test]
fn only_the_gateway_may_call_the_model_service() {
    let mesh = LocalMesh::start(&[
        "security.authorizationPolicy.enabled=true",
        "security.peerAuthentication.enabled=true",
    ]);
    let gateway = mesh.gateway();
    for reply in parallel(100, 4, |agent, _| predict(agent, &gateway, None, SMS)) {
        assert_eq!(reply.status, 200, "through the gateway: {reply:?}");
    }
    // STRICT: the sidecar accepts only mTLS, so a plaintext caller never
    // gets an HTTP answer.
    assert_eq!(
        call_from_outside(&mesh, "model-v1"),
        0,
        "a plaintext call got through"
    );
    // An in-mesh caller the policy does not name.
    assert_eq!(call_from_pod(&mesh, "model-v2", "model-v1"), "403");
}

#[test]
fn without_the_policies_in_mesh_and_direct_calls_are_served() {
    let mesh = LocalMesh::start(&[]);
    assert_eq!(call_from_pod(&mesh, "model-v2", "model-v1"), "200");
    // PERMISSIVE (Istio's default): plaintext is accepted too.
    assert_eq!(call_from_outside(&mesh, "model-v1"), 200);
}
