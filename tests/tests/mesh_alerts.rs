//! The chart's alerts on the local mesh's Prometheus: users keep arriving;
//! with a healthy v2 no alert fires, then v2 is faulted live (Istio aborts
//! half of its requests at the gateway) and the canary error alert fires
//! within the window and hold time the values give it. The rules follow a
//! live change of values (the recorded canary weight).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use sms_checker_tests::mesh::LocalMesh;
use sms_checker_tests::users::predict;
use sms_checker_tests::wait_for;

const WINDOW: &str = "30s";
/// The error alert's hold time, and every other alert's.
const FOR: &str = "5s";
const SMS: &str = "Are we still on for lunch tomorrow?";
const ALERT: &str = "SmsCheckerCanaryErrorRateAboveStable";
/// Bounds on the load beside the test.
const LOAD_THREADS: usize = 2;
const LOAD_MAX_REQUESTS: usize = 50_000;
const LOAD_MAX_TIME: Duration = Duration::from_secs(240);

/// The alerting rules as Prometheus has loaded them (`/api/v1/rules`).
fn rules(mesh: &LocalMesh) -> Vec<Value> {
    let url = format!("{}/api/v1/rules", mesh.prometheus_url());
    let mut response = mesh.client().get(&url).call().expect("GET /api/v1/rules");
    let body: Value =
        serde_json::from_str(&response.body_mut().read_to_string().unwrap_or_default())
            .expect("Prometheus answers JSON");
    body["data"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|g| g["name"] == "sms-checker-experiment")
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// The names of the alerts firing now.
fn firing(mesh: &LocalMesh) -> Vec<String> {
    mesh.prometheus_query(r#"ALERTS{alertstate="firing"}"#)
        .into_iter()
        .map(|(labels, _)| labels["alertname"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The canary weight the rules recorded (the chart's value when they were loaded).
fn recorded_weight(mesh: &LocalMesh) -> Option<f64> {
    mesh.prometheus_query("sms_checker:canary_weight:ratio")
        .first()
        .map(|(_, v)| *v)
}

fn requests_in_window(mesh: &LocalMesh, cohort: &str) -> f64 {
    let query =
        format!(r#"sum(increase(sms_cohort_requests_total{{cohort="{cohort}"}}[{WINDOW}]))"#);
    mesh.prometheus_query(&query)
        .first()
        .map_or(0.0, |(_, v)| *v)
}

#[test]
fn the_canary_error_alert_fires_for_a_faulted_v2_and_none_for_a_healthy_one() {
    let sets: Vec<String> = [
        "istio.trafficSplit.stable=50",
        "istio.trafficSplit.canary=50",
        "alerts.enabled=true",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        format!("alerts.window={WINDOW}"),
        format!("alerts.canaryErrorRate.for={FOR}"),
        format!("alerts.sampleRatioMismatch.for={FOR}"),
        format!("alerts.mirrorCoverage.for={FOR}"),
        format!("alerts.unassignedRequests.for={FOR}"),
        format!("alerts.shadowLatency.for={FOR}"),
        "alerts.canaryErrorRate.minRequests=20".into(),
        "alerts.mirrorCoverage.minRequests=20".into(),
        "alerts.unassignedRequests.minRequests=20".into(),
        "alerts.shadowLatency.minRequests=20".into(),
        "alerts.sampleRatioMismatch.minUsers=40".into(),
    ])
    .collect();
    let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
    let mesh = LocalMesh::start(&sets);
    // Prometheus loaded the chart's rules and evaluates them.
    wait_for("the rules evaluated", Duration::from_secs(30), || {
        let rules = rules(&mesh);
        (rules.len() == 6
            && rules
                .iter()
                .all(|r| r["health"] == "ok" && r["lastEvaluation"] != "0001-01-01T00:00:00Z"))
        .then_some(())
    });
    let gateway = mesh.gateway();
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..LOAD_THREADS {
            scope.spawn(|| {
                let agent = mesh.client();
                let mut sent = 0;
                while !stop.load(Ordering::Relaxed)
                    && started.elapsed() < LOAD_MAX_TIME
                    && sent < LOAD_MAX_REQUESTS / LOAD_THREADS
                {
                    predict(&agent, &gateway, None, SMS);
                    sent += 1;
                }
            });
        }
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // Healthy: both cohorts have what every rule needs in the
            // window, the rules run for three hold times, none fires.
            wait_for("traffic in the window", Duration::from_secs(60), || {
                (requests_in_window(&mesh, "canary") >= 40.0
                    && requests_in_window(&mesh, "stable") >= 40.0)
                    .then_some(())
            });
            for _ in 0..15 {
                let now = firing(&mesh);
                assert!(now.is_empty(), "alerts fire on a healthy mesh: {now:?}");
                std::thread::sleep(Duration::from_secs(1));
            }
            assert_eq!(recorded_weight(&mesh), Some(0.5));
            // Faulted: half of v2's requests aborted with a 503, and the
            // canary cohort grown to 60 %: the rules follow the new values.
            mesh.set(&[
                "versions.v2.fault.abort.percentage=50,istio.trafficSplit.stable=40,istio.trafficSplit.canary=60",
            ])
            .unwrap_or_else(|e| panic!("fault v2: {e}"));
            let faulted = Instant::now();
            wait_for("the rules reloaded", Duration::from_secs(30), || {
                (recorded_weight(&mesh) == Some(0.6)).then_some(())
            });
            wait_for(&format!("{ALERT} to fire"), Duration::from_secs(60), || {
                firing(&mesh).iter().any(|a| a == ALERT).then_some(())
            });
            eprintln!(
                "{ALERT} fired {:.1} s after the fault (window {WINDOW}, for {FOR})",
                faulted.elapsed().as_secs_f64()
            );
        }));
        stop.store(true, Ordering::Relaxed);
        if let Err(panic) = result {
            std::panic::resume_unwind(panic);
        }
    });
    // What fired, as Prometheus's alerts API shows it: the chart's labels
    // and the runbook.
    let url = format!("{}/api/v1/alerts", mesh.prometheus_url());
    let mut response = mesh.client().get(&url).call().expect("GET /api/v1/alerts");
    let body: Value =
        serde_json::from_str(&response.body_mut().read_to_string().unwrap_or_default())
            .expect("JSON");
    let alert = body["data"]["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["labels"]["alertname"] == ALERT && a["state"] == "firing")
        .unwrap_or_else(|| panic!("no firing {ALERT}: {body}"));
    assert_eq!(alert["labels"]["severity"], "critical");
    assert_eq!(alert["labels"]["release"], "sms-checker");
    assert!(
        alert["annotations"]["runbook"]
            .as_str()
            .is_some_and(|r| r.starts_with("Roll the canary back")),
        "{alert}"
    );
    let summary = alert["annotations"]["summary"].as_str().unwrap_or_default();
    assert!(
        summary.starts_with("The canary's error rate is "),
        "{summary}"
    );
}
