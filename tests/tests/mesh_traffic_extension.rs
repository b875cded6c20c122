//! The filter delivered as TrafficExtensions (`filter.api=TrafficExtension`)
//! on the local mesh, with Istio's gateway chart and sidecars: Istio
//! translates them (no WasmPlugin is rendered) and serves the filter over
//! ECDS; the experiment behaves as with WasmPlugins. Istio's refusal of a
//! bad TrafficExtension reaches the user with Istio's message.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sms_checker_filter::config::DEFAULT_COHORT_HEADER;
use sms_checker_tests::mesh::{LocalMesh, MeshOptions, filter_wasm, metric_sum};
use sms_checker_tests::users::{Names, Reply, parallel, predict, predict_with};
use sms_checker_tests::{helm_bin, wait_for};

const TRAFFIC_EXTENSION: &str = "filter.api=TrafficExtension";
const USERS: usize = 2_000;
const THREADS: usize = 8;
const SMS: &str = "Are we still on for lunch tomorrow?";
/// Bounds on the load that runs across the live change.
const LOAD_MAX_REQUESTS: usize = 20_000;
const LOAD_MAX_TIME: Duration = Duration::from_secs(60);

fn uid(user: usize) -> String {
    format!("te-user-{user:04}")
}

fn cohort(reply: &Reply) -> &str {
    reply
        .cohort
        .as_deref()
        .unwrap_or_else(|| panic!("no cohort: {reply:?}"))
}

fn version_of(cohort: &str) -> &'static str {
    match cohort {
        "stable" => "v1",
        "canary" => "v2",
        other => panic!("unknown cohort {other}"),
    }
}

/// 2,000 users (ids chosen here), each sending a request and then one with
/// a forged cohort header: every user keeps one cohort and its version,
/// the canary share is 10 % ± 2 points, the shadow gets a copy of every
/// request, and the filter counts at the gateway and the sidecars. Then the
/// split moves to 80/20 under load with no failed request.
#[test]
fn traffic_extensions_run_the_experiment_and_a_live_split_change() {
    let mesh = LocalMesh::start(&[TRAFFIC_EXTENSION]);
    let gateway = mesh.gateway();
    let users: Vec<[Reply; 2]> = parallel(USERS, THREADS, |agent, user| {
        let first = predict(agent, &gateway, Some(&uid(user)), SMS);
        let forged = match first.cohort.as_deref() {
            Some("stable") => "canary",
            _ => "stable",
        };
        let second = predict_with(
            agent,
            &gateway,
            &Names::default(),
            Some(&uid(user)),
            &[(DEFAULT_COHORT_HEADER, forged)],
            SMS,
        );
        [first, second]
    });
    let mut sent: BTreeMap<String, f64> = BTreeMap::new();
    let mut canary_users = 0;
    for (user, replies) in users.iter().enumerate() {
        let cohort = cohort(&replies[0]);
        for reply in replies {
            assert_eq!(reply.status, 200, "user {user}: {reply:?}");
            assert_eq!(reply.cohort.as_deref(), Some(cohort), "user {user}");
            assert_eq!(
                reply.version.as_deref(),
                Some(version_of(cohort)),
                "user {user}"
            );
            *sent.entry(version_of(cohort).to_string()).or_default() += 1.0;
        }
        canary_users += usize::from(cohort == "canary");
    }
    let share = 100.0 * canary_users as f64 / USERS as f64;
    assert!(
        (8.0..=12.0).contains(&share),
        "{canary_users} of {USERS} users are canary ({share:.1} %), expected 10 ± 2"
    );
    let (v1, v2) = (sent["v1"], sent["v2"]);
    let live = v1 + v2;

    // The gateway's filter counted every request by cohort; the sidecars by
    // version; v3 got a copy of each.
    let gateway_count = || {
        metric_sum(
            &mesh.proxy_stats("gateway"),
            "sms_cohort_requests_total",
            &[],
        )
    };
    let sidecar_count = |version: &str, mirrored: &str| {
        metric_sum(
            &mesh.proxy_stats(&format!("sidecar-{version}")),
            "sms_model_requests_total",
            &[("mirrored", mirrored)],
        )
    };
    wait_for(
        "the filters to count what was sent",
        Duration::from_secs(30),
        || {
            (gateway_count() == live
                && sidecar_count("v1", "false") == v1
                && sidecar_count("v2", "false") == v2
                && sidecar_count("v3", "true") == live)
                .then_some(())
        },
    );

    // The split moves to 80/20 while the same users keep coming back.
    let stop = AtomicBool::new(false);
    let next = AtomicUsize::new(0);
    let replies: Mutex<Vec<(usize, Instant, Reply)>> = Mutex::new(Vec::new());
    let started = Instant::now();
    let mut applied_at = None;
    std::thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(|| {
                let agent = mesh.client();
                while !stop.load(Ordering::Relaxed) && started.elapsed() < LOAD_MAX_TIME {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= LOAD_MAX_REQUESTS {
                        break;
                    }
                    let reply = predict(&agent, &gateway, Some(&uid(n % USERS)), SMS);
                    let mut replies = replies.lock().expect("lock");
                    replies.push((n % USERS, Instant::now(), reply));
                }
            });
        }
        std::thread::sleep(Duration::from_secs(2));
        let result = mesh.set(&["istio.trafficSplit.stable=80,istio.trafficSplit.canary=20"]);
        applied_at = Some(Instant::now());
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::Relaxed);
        result.unwrap_or_else(|err| panic!("meshctl set failed: {err}"));
    });
    let applied_at = applied_at.expect("the values were set");
    let replies = replies.into_inner().expect("replies");
    let after_change = replies.iter().filter(|(_, at, _)| *at > applied_at).count();
    assert!(
        after_change > 50 && replies.len() - after_change > 50,
        "the load must run across the change: {} requests, {after_change} after it",
        replies.len()
    );
    let failed: Vec<_> = replies.iter().filter(|(_, _, r)| r.status != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed across the change, e.g. {:?}",
        failed.len(),
        replies.len(),
        failed.first()
    );
    for (user, _, reply) in &replies {
        if cohort(&users[*user][0]) == "canary" {
            assert_eq!(cohort(reply), "canary", "user {user} left the canary");
        }
    }
    // Afterwards the same users split 80/20 (the ids are fixed: a hash
    // decides), and no canary user went back to stable.
    let again = parallel(USERS, THREADS, |agent, user| {
        predict(agent, &gateway, Some(&uid(user)), SMS)
    });
    let canary_after = again.iter().filter(|r| cohort(r) == "canary").count();
    let share = 100.0 * canary_after as f64 / USERS as f64;
    eprintln!(
        "{canary_users} of {USERS} canary at 90/10, {canary_after} at 80/20 ({share:.2} %); {} requests across the change, none failed",
        replies.len()
    );
    assert!(
        (18.0..=22.0).contains(&share),
        "{canary_after} of {USERS} users canary after the change ({share:.1} %)"
    );
    for (user, reply) in again.iter().enumerate() {
        assert!(
            !(cohort(&users[user][0]) == "canary" && cohort(reply) == "stable"),
            "user {user} moved from canary to stable"
        );
    }
}

/// A TrafficExtension Istio refuses stops `meshctl run` with Istio's own
/// message, naming the resource.
#[test]
fn a_traffic_extension_istio_refuses_stops_the_mesh_with_istios_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rendered = meshctl::chart::render(
        &helm_bin(),
        &meshctl::chart::Render {
            chart: sms_checker_tests::chart::chart_dir(),
            release: "sms-checker".into(),
            sets: vec![
                format!("filter.url=file://{}", filter_wasm().display()),
                TRAFFIC_EXTENSION.into(),
            ],
            ..meshctl::chart::Render::default()
        },
    )
    .unwrap_or_else(|err| panic!("render the chart: {err}"));
    let url = format!("url: \"file://{}\"", filter_wasm().display());
    assert!(rendered.contains(&url), "the module url is rendered");
    let manifest = dir.path().join("manifest.yaml");
    std::fs::write(
        &manifest,
        rendered.replacen(&url, "url: \"ftp://example.com/plugin.wasm\"", 1),
    )
    .expect("write manifest");
    let failure = LocalMesh::start_failure(MeshOptions {
        manifest: Some(manifest),
        ..MeshOptions::default()
    });
    assert!(
        failure.contains("Istio rejects the configuration")
            && failure.contains(
                "TrafficExtension/sms-checker-cohort-gateway.istio-system: url contains unsupported scheme: ftp"
            ),
        "{failure}"
    );
}
