//! Faults on the local mesh: crashed versions, a restarted gateway, a
//! filter configuration the filter refuses, and the chart's fault injection.

use std::collections::BTreeMap;

use sms_checker_tests::mesh::{LocalMesh, MeshOptions, edited_manifest};
use sms_checker_tests::users::{Arrivals, Reply, arrive, parallel, predict};

const USERS: usize = 400;
const THREADS: usize = 8;
const SMS: &str = "Free entry in 2 a wkly comp to win FA Cup final tkts";

/// Every user once more, with its cookie; replies in user order.
fn replay(mesh: &LocalMesh, uids: &[String]) -> Vec<Reply> {
    let gateway = mesh.gateway();
    parallel(uids.len(), THREADS, |agent, i| {
        predict(agent, &gateway, Some(&uids[i]), SMS)
    })
}

#[test]
fn crashed_versions_and_a_restarted_gateway() {
    let mesh = LocalMesh::start(&[]);
    let gateway = mesh.gateway();
    let Arrivals { uids, cohorts } = arrive(&gateway, USERS, THREADS, SMS);
    let by_cohort = |cohort: &str| cohorts.iter().filter(|c| *c == cohort).count();
    assert!(
        by_cohort("canary") > 0 && by_cohort("stable") > 0,
        "both cohorts are needed: {cohorts:?}"
    );

    // The gateway proxy restarts: every user keeps its cohort (the cookie
    // holds the id, the hash gives the cohort; no state was lost).
    let old_pid = mesh.component("gateway").pid;
    mesh.restart("gateway");
    assert_ne!(mesh.component("gateway").pid, old_pid);
    for (i, reply) in replay(&mesh, &uids).iter().enumerate() {
        assert_eq!(
            reply.status, 200,
            "user {i} after the gateway restart: {reply:?}"
        );
        assert_eq!(
            reply.cohort.as_ref(),
            Some(&cohorts[i]),
            "user {i} changed cohort across the restart"
        );
    }

    // v3 (the shadow) dies, service and sidecar: no user notices.
    mesh.kill("model-v3");
    mesh.kill("sidecar-v3");
    let errors: Vec<_> = replay(&mesh, &uids)
        .into_iter()
        .filter(|r| r.status != 200)
        .collect();
    assert!(
        errors.is_empty(),
        "{} user-visible errors with v3 down, e.g. {:?}",
        errors.len(),
        errors.first()
    );

    // v2 (the canary) dies: exactly the canary users see errors.
    mesh.kill("model-v2");
    mesh.kill("sidecar-v2");
    let mut outcome: BTreeMap<(String, bool), usize> = BTreeMap::new();
    for (i, reply) in replay(&mesh, &uids).iter().enumerate() {
        *outcome
            .entry((cohorts[i].clone(), reply.status == 200))
            .or_default() += 1;
        match cohorts[i].as_str() {
            "stable" => assert_eq!(reply.status, 200, "stable user {i} with v2 down: {reply:?}"),
            _ => assert!(
                reply.status >= 500,
                "canary user {i} with v2 down got {reply:?}"
            ),
        }
    }
    assert_eq!(
        outcome.get(&("canary".into(), false)),
        Some(&by_cohort("canary")),
        "{outcome:?}"
    );
    assert_eq!(
        outcome.get(&("stable".into(), true)),
        Some(&by_cohort("stable")),
        "{outcome:?}"
    );
}

/// The gateway WasmPlugin edited as someone might by hand (`kubectl
/// edit`), past the chart's own checks: an empty salt.
fn manifest_with_bad_gateway_plugin(dir: &std::path::Path) -> std::path::PathBuf {
    edited_manifest(dir, |rendered| {
        let docs: Vec<String> = rendered
            .split("\n---\n")
            .map(|doc| {
                if doc.contains("kind: WasmPlugin") && doc.contains("role: gateway") {
                    doc.replace("salt: sms-checker", "salt: \"\"")
                } else {
                    doc.to_string()
                }
            })
            .collect();
        docs.join("\n---\n")
    })
}

/// Istio accepts the WasmPlugin (its pluginConfig is opaque to Istio); the
/// filter refuses the configuration when Envoy loads it, so Envoy rejects
/// the ECDS resource. With no earlier configuration for the filter, Envoy
/// answers every request through that listener with 500: the WasmPlugin's
/// failStrategy (FAIL_OPEN here, the chart's default) covers a module that
/// fails at run time, not a configuration refused at load. meshctl names
/// the proxy, the rejected resource and the filter's own message.
#[test]
fn refused_filter_config_is_reported_and_the_gateway_answers_500() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mesh = LocalMesh::start_with(MeshOptions {
        manifest: Some(manifest_with_bad_gateway_plugin(dir.path())),
        ..MeshOptions::default()
    });
    let output = mesh.output();
    assert!(
        output.contains(
            "gateway (istio-ingressgateway-0.istio-system) refused its ECDS configuration"
        ),
        "meshctl names the proxy and the resource:\n{output}"
    );
    assert!(
        output.contains("invalid pluginConfig field `salt`"),
        "the refusal carries the filter's message:\n{output}"
    );
    assert!(mesh.findings().iter().any(|f| f.contains("field `salt`")));
    let gateway = mesh.gateway();
    let replies = parallel(50, THREADS, |agent, _| predict(agent, &gateway, None, SMS));
    for reply in &replies {
        assert_eq!(reply.status, 500, "{reply:?}");
        assert_eq!(reply.version, None, "no model answered: {reply:?}");
    }
}

/// The chart's per-version `fault` becomes Envoy's fault filter on the
/// routes to that version: aborts for canary users, delays for stable ones.
#[test]
fn chart_faults_abort_and_delay_per_version() {
    let mesh = LocalMesh::start(&[
        "versions.v2.fault.abort.percentage=100",
        "versions.v2.fault.abort.httpStatus=503",
        "versions.v1.fault.delay.percentage=100",
        "versions.v1.fault.delay.fixedDelay=300ms",
    ]);
    let gateway = mesh.gateway();
    let replies = parallel(100, THREADS, |agent, _| {
        let start = std::time::Instant::now();
        let reply = predict(agent, &gateway, None, SMS);
        (reply, start.elapsed())
    });
    let mut seen = BTreeMap::new();
    for (reply, elapsed) in &replies {
        let cohort = reply
            .cohort
            .clone()
            .unwrap_or_else(|| panic!("no cohort: {reply:?}"));
        *seen.entry(cohort.clone()).or_insert(0) += 1;
        match cohort.as_str() {
            "canary" => {
                assert_eq!(reply.status, 503, "{reply:?}");
                assert_eq!(
                    reply.version, None,
                    "the abort happens before any model: {reply:?}"
                );
            }
            _ => {
                assert_eq!(reply.status, 200, "{reply:?}");
                // Envoy's timer may fire a hair early; a request is otherwise a few ms.
                assert!(
                    *elapsed >= std::time::Duration::from_millis(250),
                    "no delay: {elapsed:?}"
                );
            }
        }
    }
    // Every canary reply above is an abort (503, no model) and every stable
    // one was delayed: the fault filter acted on each request of its route.
    assert!(seen.contains_key("stable"), "{seen:?}");
}
