//! The seed's variants and the cases where a re-implementation of Istio
//! had parted ways with it, on the running mesh: a request through the
//! ingress gateway lands where Istio's configuration says. (`mesh_check`
//! reads the same configurations as Istio serves them.)

use sms_checker_tests::mesh::{Gateway, LocalMesh, MeshOptions, edited_manifest};
use sms_checker_tests::users::{parallel, predict};

const SMS: &str = "Are we still on for lunch tomorrow?";

/// Another ingress gateway (`istio: custom-gateway`) in its own namespace,
/// serving a wildcard host: Istio puts the gateway WasmPlugin on that
/// gateway (plugins are looked up in the proxy's namespace) and matches
/// any name under the wildcard.
#[test]
fn a_custom_gateway_in_its_own_namespace_serves_a_wildcard_host_with_cohorts() {
    let mesh = LocalMesh::start(&[
        "istio.gateway.ingressGatewaySelector=custom-gateway",
        "istio.gateway.namespace=ingress",
        "istio.host=*.grader.local",
    ]);
    let gateway = mesh.component("gateway");
    assert_eq!(
        gateway.pod.as_deref(),
        Some("istio-custom-gateway-0.ingress")
    );
    let ingress = mesh.gateway();
    for host in ["a.grader.local", "sms.grader.local"] {
        let at = Gateway {
            host: host.into(),
            ..ingress.clone()
        };
        for reply in parallel(40, 4, |agent, _| predict(agent, &at, None, SMS)) {
            assert_eq!(reply.status, 200, "{host}: {reply:?}");
            let cohort = reply
                .cohort
                .clone()
                .unwrap_or_else(|| panic!("no cohort: {reply:?}"));
            let expected = if cohort == "canary" { "v2" } else { "v1" };
            assert_eq!(reply.version.as_deref(), Some(expected), "{reply:?}");
        }
    }
    let elsewhere = Gateway {
        host: "grader.local".into(),
        ..ingress
    };
    assert_eq!(
        predict(&mesh.client(), &elsewhere, None, SMS).status,
        404,
        "the bare domain is not under the wildcard"
    );
}

/// Without the canary every user is stable, on v1, at a custom host.
#[test]
fn without_the_canary_everyone_is_on_v1_at_a_custom_host() {
    let mesh = LocalMesh::start(&[
        "versions.v2.enabled=false",
        "istio.host=custom.grader.local",
    ]);
    assert!(
        mesh.components()
            .iter()
            .all(|c| c.version.as_deref() != Some("v2"))
    );
    let gateway = mesh.gateway();
    assert_eq!(gateway.host, "custom.grader.local");
    for reply in parallel(100, 4, |agent, _| predict(agent, &gateway, None, SMS)) {
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(
            (reply.cohort.as_deref(), reply.version.as_deref()),
            (Some("stable"), Some("v1")),
            "{reply:?}"
        );
    }
}

/// A resource Istio's validation refuses stops `meshctl run` (and so `make
/// run`) with Istio's own message.
#[test]
fn a_resource_istio_rejects_stops_the_mesh_with_istios_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    let manifest = edited_manifest(dir.path(), |yaml| {
        yaml.replacen("        value: 100\n", "        value: 150\n", 1)
    });
    let failure = LocalMesh::start_failure(MeshOptions {
        manifest: Some(manifest),
        ..MeshOptions::default()
    });
    assert!(
        failure.contains("Istio rejects the configuration")
            && failure.contains("VirtualService/model-service.default: mirror_percentage must have a max value of 100"),
        "{failure}"
    );
}
