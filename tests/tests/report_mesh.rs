//! `meshctl report` against the local mesh and its real Prometheus: the
//! report's counts equal the traffic the test sent (also across a sidecar
//! restart), Istio faults injected into v2 by the chart (aborts, a delay on
//! every request or on a fifth of them) turn into a roll-back, and too little
//! traffic is "insufficient data".

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use sms_checker_tests::mesh::{LocalMesh, url};
use sms_checker_tests::report::{meshctl_bin, report_row};
use sms_checker_tests::users::{Reply, parallel, predict};

/// One mesh at a time: each runs a gateway, three sidecars, three services
/// and Prometheus, and the machine has few cores.
static MESH: Mutex<()> = Mutex::new(());

/// Even split, so a few hundred requests give both arms enough data.
const EVEN_SPLIT: [&str; 2] = [
    "istio.trafficSplit.stable=50",
    "istio.trafficSplit.canary=50",
];

fn messages() -> Vec<String> {
    let path = model_service::dataset::default_path();
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines()
        .filter_map(|line| line.split_once('\t').map(|(_, sms)| sms.to_string()))
        .take(1000)
        .collect()
}

/// Sends `count` predictions, each as a new user (so the gateway assigns a
/// cohort), and returns the replies.
fn send(mesh: &LocalMesh, count: usize, offset: usize) -> Vec<Reply> {
    let messages = messages();
    let url = mesh.gateway();
    let replies = parallel(count, 4, |agent, i| {
        predict(agent, &url, None, &messages[(offset + i) % messages.len()])
    });
    // Without the cohort filter (a module that failed to load, failing
    // open) nothing would be counted: say so rather than time out later.
    if let Some(reply) = replies
        .iter()
        .find(|r| r.status == 200 && r.cohort.is_none())
    {
        panic!(
            "the gateway answered without x-experiment-cohort, so its cohort filter is not \
             running: {reply:?}\nfindings: {:?}",
            mesh.findings()
        );
    }
    replies
}

/// What the client saw: answers per version, and 503s.
#[derive(Debug, Default)]
struct Tally {
    by_version: BTreeMap<String, f64>,
    unavailable: f64,
    total: f64,
}

fn tally(replies: &[Reply]) -> Tally {
    let mut t = Tally::default();
    for reply in replies {
        t.total += 1.0;
        match (reply.status, &reply.version) {
            (200, Some(version)) => *t.by_version.entry(version.clone()).or_default() += 1.0,
            (503, _) => t.unavailable += 1.0,
            (status, _) => panic!("unexpected reply {status}: {}", reply.body),
        }
    }
    t
}

fn prometheus_sum(mesh: &LocalMesh, name: &str) -> f64 {
    // Matches the name with or without Istio's tag encoding in front.
    let query = format!(r#"sum({{__name__=~"(?:[a-zA-Z0-9_:]*___)?{name}"}})"#);
    mesh.prometheus_query(&query)
        .first()
        .map_or(0.0, |(_, v)| *v)
}

/// What Prometheus should hold once every proxy's latest counts are
/// scraped: the gateway's requests, and each version's sidecar count (the
/// shadow sees every answered live request).
struct Expected {
    gateway: f64,
    versions: Vec<(&'static str, f64)>,
}

fn expected(tallies: &[&Tally]) -> Expected {
    let answered = |v: &str| -> f64 {
        tallies
            .iter()
            .map(|t| t.by_version.get(v).copied().unwrap_or(0.0))
            .sum()
    };
    Expected {
        gateway: tallies.iter().map(|t| t.total).sum(),
        versions: vec![
            ("v1", answered("v1")),
            ("v2", answered("v2")),
            ("v3", answered("v1") + answered("v2")),
        ],
    }
}

fn prometheus_value(mesh: &LocalMesh, query: &str) -> f64 {
    mesh.prometheus_query(query)
        .first()
        .map_or(0.0, |(_, v)| *v)
}

/// Waits until Prometheus holds every count and timing of `expected`: a
/// proxy flushes its histograms every 5 s and the filter its counters every
/// second, so a sum over all proxies can look complete while one is behind.
fn wait_for_scrapes(mesh: &LocalMesh, expected: &Expected) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let gateway = prometheus_sum(mesh, "sms_cohort_requests_total");
        let gateway_timed = prometheus_sum(mesh, "sms_cohort_request_duration_milliseconds_count");
        let versions: Vec<(&str, f64, f64, f64)> = expected
            .versions
            .iter()
            .map(|(v, n)| {
                let selector = format!(r#"{{version="{v}"}}"#);
                (
                    *v,
                    *n,
                    prometheus_value(mesh, &format!("sum(sms_model_requests_total{selector})")),
                    prometheus_value(
                        mesh,
                        &format!("sum(sms_model_request_duration_milliseconds_count{selector})"),
                    ),
                )
            })
            .collect();
        let complete = gateway == expected.gateway
            && gateway_timed == expected.gateway
            && versions
                .iter()
                .all(|(_, n, counted, timed)| counted == n && timed == n);
        if complete {
            return;
        }
        if Instant::now() >= deadline {
            panic!(
                "Prometheus still lacks the traffic after 60 s: gateway {gateway} of {} \
                 requests, {gateway_timed} timed; per version (expected, counted, timed): \
                 {versions:?}",
                expected.gateway
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `meshctl report --format json` over the mesh's whole life; the exit code
/// and the parsed report.
fn report(mesh: &LocalMesh, extra: &[&str]) -> (i32, Value) {
    let output = Command::new(meshctl_bin())
        .args([
            "report",
            "--prometheus",
            &mesh.prometheus_url(),
            "--window",
            "30m",
        ])
        .args(["--format", "json"])
        .args(extra)
        .output()
        .expect("run meshctl report");
    let text = String::from_utf8_lossy(&output.stdout);
    let report: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "report is not JSON ({e}): {text}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code().expect("an exit code"), report)
}

/// Runs the evenly split mesh with `faults` set on the chart, sends
/// `requests` predictions, waits until Prometheus has them all, and reports:
/// what was sent, the exit code and the JSON report.
fn report_with_faults(faults: &[&str], requests: usize) -> (Tally, i32, Value) {
    let mut sets = EVEN_SPLIT.to_vec();
    sets.extend(faults);
    let mesh = LocalMesh::start(&sets);
    let sent = tally(&send(&mesh, requests, 0));
    wait_for_scrapes(&mesh, &expected(&[&sent]));
    let (code, r) = report(&mesh, &[]);
    (sent, code, r)
}

fn check<'a>(report: &'a Value, metric: &str) -> &'a Value {
    report_row(&report["comparisons"][0]["checks"], &[("metric", metric)])
}

fn number(value: &Value) -> f64 {
    value
        .as_f64()
        .unwrap_or_else(|| panic!("not a number: {value}"))
}

#[test]
fn counts_equal_the_traffic_sent_and_little_traffic_is_insufficient_data() {
    let _one = MESH.lock().unwrap_or_else(|e| e.into_inner());
    let mesh = LocalMesh::start(&EVEN_SPLIT);

    let first = tally(&send(&mesh, 30, 0));
    wait_for_scrapes(&mesh, &expected(&[&first]));
    let (code, r) = report(&mesh, &[]);
    assert_eq!(
        (code, r["verdict"].as_str()),
        (5, Some("insufficient_data")),
        "{r}"
    );
    let cohorts: f64 = r["cohorts"]
        .as_array()
        .expect("cohorts")
        .iter()
        .map(|c| number(&c["requests"]))
        .sum();
    assert_eq!(cohorts, 30.0);

    let second = tally(&send(&mesh, 570, 30));
    let sent = first.total + second.total;
    wait_for_scrapes(&mesh, &expected(&[&first, &second]));
    // Within 6 points: with no errors in about 300 requests per arm the
    // anytime-valid upper bound is about 4 points (2 points take about 500
    // per arm, see meshctl/src/report/README.md).
    let (code, r) = report(&mesh, &["--max-error-increase", "0.06"]);
    assert_ne!(code, 4, "no fault, yet roll back: {r}");
    assert_ne!(r["verdict"], "roll_back");
    assert_eq!(first.unavailable + second.unavailable, 0.0);
    let answered = |v: &str| {
        first.by_version.get(v).copied().unwrap_or(0.0)
            + second.by_version.get(v).copied().unwrap_or(0.0)
    };
    // Every request counted once per place it went.
    for (version, expected) in [("v1", answered("v1")), ("v2", answered("v2")), ("v3", sent)] {
        let v = report_row(&r["versions"], &[("version", version)]);
        assert_eq!(number(&v["sidecar_requests"]), expected, "{version}: {v}");
        assert_eq!(number(&v["predictions"]), expected, "{version}: {v}");
    }
    assert_eq!(
        number(&report_row(&r["cohorts"], &[("cohort", "stable")])["requests"]),
        answered("v1")
    );
    assert_eq!(
        number(&report_row(&r["cohorts"], &[("cohort", "canary")])["requests"]),
        answered("v2")
    );
    assert_eq!(
        number(&report_row(&r["versions"], &[("version", "v3")])["mirror_coverage"]),
        1.0
    );
    assert_eq!(
        check(&r, "error_rate")["outcome"],
        "promote",
        "0 errors in ~300 each"
    );
}

#[test]
fn ten_percent_aborts_on_v2_roll_back_with_the_error_rates() {
    let _one = MESH.lock().unwrap_or_else(|e| e.into_inner());
    let (sent, code, r) = report_with_faults(
        &[
            "versions.v2.fault.abort.percentage=10",
            "versions.v2.fault.abort.httpStatus=503",
        ],
        600,
    );
    assert_eq!((code, r["verdict"].as_str()), (4, Some("roll_back")), "{r}");
    let errors = check(&r, "error_rate");
    assert_eq!(
        (errors["source"].as_str(), errors["outcome"].as_str()),
        (Some("gateway"), Some("roll_back"))
    );
    // Exactly the 503s the client received, out of the canary's requests.
    let canary_requests = sent.by_version.get("v2").copied().unwrap_or(0.0) + sent.unavailable;
    assert_eq!(
        number(&errors["rates"]["candidate"]),
        sent.unavailable,
        "{errors}"
    );
    assert_eq!(
        number(&errors["rates"]["candidate_n"]),
        canary_requests,
        "{errors}"
    );
    assert_eq!(number(&errors["rates"]["baseline"]), 0.0);
    let rate = number(&errors["rates"]["candidate_rate"]);
    assert!(
        (0.03..0.2).contains(&rate),
        "10 % aborts measured as {rate}"
    );
    let canary = report_row(&r["cohorts"], &[("cohort", "canary")]);
    assert_eq!(number(&canary["errors"]), sent.unavailable);
}

#[test]
fn a_fixed_delay_on_v2_is_flagged_by_the_latency_comparison() {
    let _one = MESH.lock().unwrap_or_else(|e| e.into_inner());
    let (sent, code, r) = report_with_faults(
        &[
            "versions.v2.fault.delay.percentage=100",
            "versions.v2.fault.delay.fixedDelay=100ms",
        ],
        400,
    );
    assert_eq!(sent.unavailable, 0.0);
    let latency = check(&r, "latency");
    assert_eq!(
        (latency["source"].as_str(), latency["outcome"].as_str()),
        (Some("gateway"), Some("roll_back")),
        "{latency}"
    );
    let a = number(&latency["latency"]["test"]["a"]);
    assert!(a > 0.95, "every canary request is 100 ms slower, A = {a}");
    // The filter's clock may read the 100 ms delay as 99.x ms, so the delayed
    // requests land in the (50, 100] bucket or above; stable stays far below.
    let p95 = number(&latency["latency"]["candidate_p95"]);
    let stable_p95 = number(&latency["latency"]["baseline_p95"]);
    assert!(
        p95 > 50.0,
        "canary p95 {p95} ms despite the injected 100 ms"
    );
    assert!(
        stable_p95 < 25.0,
        "stable p95 {stable_p95} ms without any delay"
    );
    assert_eq!((code, r["verdict"].as_str()), (4, Some("roll_back")), "{r}");
}

#[test]
fn a_delay_on_a_fifth_of_v2_requests_is_caught_in_the_tail() {
    let _one = MESH.lock().unwrap_or_else(|e| e.into_inner());
    let (_, code, r) = report_with_faults(
        &[
            "versions.v2.fault.delay.percentage=20",
            "versions.v2.fault.delay.fixedDelay=100ms",
        ],
        400,
    );
    let latency = check(&r, "latency");
    assert_eq!(latency["outcome"], "roll_back", "{latency}");
    let tail = &latency["latency"]["tail"]["rates"];
    let (canary, stable) = (
        number(&tail["candidate_rate"]),
        number(&tail["baseline_rate"]),
    );
    assert!(
        canary > 0.1 && stable < 0.06,
        "tail {canary} vs {stable}: {latency}"
    );
    assert_eq!(code, 4, "{r}");
}

#[test]
fn counts_survive_a_restarted_sidecar() {
    let _one = MESH.lock().unwrap_or_else(|e| e.into_inner());
    let mesh = LocalMesh::start(&EVEN_SPLIT);
    let before = tally(&send(&mesh, 200, 0));
    wait_for_scrapes(&mesh, &expected(&[&before]));
    // A new Envoy: v1's sidecar counters start again from zero.
    mesh.restart("sidecar-v1");
    let after = tally(&send(&mesh, 200, 200));
    // Prometheus now holds v1's new process's count only.
    let mut now = expected(&[&before, &after]);
    now.versions[0].1 = after.by_version["v1"];
    wait_for_scrapes(&mesh, &now);
    let v1_now = mesh
        .prometheus_query(r#"sum(sms_model_requests_total{version="v1"})"#)
        .first()
        .map_or(0.0, |(_, v)| *v);
    let v1_sent = before.by_version["v1"] + after.by_version["v1"];
    assert!(
        v1_now < v1_sent,
        "the restart did not reset v1's counters ({v1_now})"
    );
    let (_, r) = report(&mesh, &[]);
    let v1 = report_row(&r["versions"], &[("version", "v1")]);
    // The pod's merged metrics target: Istio's agent on the status port.
    let target = url(&mesh.component("sidecar-v1"), "status", "");
    let instance = target.trim_start_matches("http://");
    let samples = |query: &str| -> Vec<String> {
        let url = format!("{}/api/v1/query", mesh.prometheus_url());
        let body = mesh
            .client()
            .get(&url)
            .query("query", query)
            .call()
            .and_then(|mut r| r.body_mut().read_to_string())
            .unwrap_or_default();
        vec![format!("{query}: {body}")]
    };
    let history = [
        samples(&format!(
            r#"envoy_server_uptime{{instance="{instance}"}}[10m]"#
        )),
        samples(r#"sum by (prediction) (sms_model_requests_total{version="v1"})[10m:1s]"#),
    ];
    assert_eq!(
        number(&v1["sidecar_requests"]),
        v1_sent,
        "{v1}\nPrometheus history: {history:#?}"
    );
    let timed = report_row(&r["latency"], &[("subject", "v1"), ("source", "sidecar")]);
    assert_eq!(number(&timed["count"]), v1_sent, "{timed}");
}
