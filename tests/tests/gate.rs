//! `meshctl gate serve` over HTTP, called the way Flagger's webhooks and
//! Argo Rollouts' web metric provider call it, on a real Prometheus that
//! scrapes counters growing like a gateway's (the report tests' world): a
//! canary failing a fifth of its requests gets Flagger's "no" (412) on the
//! rollout check and the promotion and a "yes" on the rollback hook, and
//! Argo's JSON says roll_back; a healthy canary is promoted; bad requests
//! and an unreachable Prometheus get JSON errors with 4xx and 503.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use sms_checker_tests::report::{Traffic, World, meshctl_bin};
use sms_checker_tests::{free_port, wait_for};

/// Calls closer than this to a session's last interval reuse its judgement.
const MIN_INTERVAL: Duration = Duration::from_secs(2);

struct Gate {
    url: String,
    process: Child,
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

fn start_gate(prometheus: &str) -> Gate {
    let port = free_port();
    let process = Command::new(meshctl_bin())
        .args(["gate", "serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--prometheus", prometheus, "--canary-weight", "5"])
        .args(["--min-interval", "2s", "--preflight-window", "30s"])
        .stdout(Stdio::null())
        .spawn()
        .expect("start meshctl gate serve");
    let url = format!("http://127.0.0.1:{port}");
    let health = format!("{url}/healthz");
    wait_for("the gate to listen", Duration::from_secs(20), || {
        ureq::get(&health).call().ok().map(drop)
    });
    Gate { url, process }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .new_agent()
}

/// Status and JSON body of an answer (every answer is JSON).
fn answer(response: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, Value) {
    let mut response = response.expect("the gate answers");
    let status = response.status().as_u16();
    let kind = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    assert!(
        kind.starts_with("application/json"),
        "{status} {kind}: {text}"
    );
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, body)
}

/// Flagger's webhook call: its payload, `Content-Type: application/json`.
fn flagger(gate: &Gate, hook: &str, checksum: &str) -> (u16, Value) {
    let payload = json!({
        "name": "model-service", "namespace": "sms", "phase": "Progressing",
        "checksum": checksum, "metadata": {"owner": "ml"},
    });
    answer(
        agent()
            .post(format!("{}/flagger/{hook}", gate.url))
            .header("content-type", "application/json")
            .send(payload.to_string()),
    )
}

/// Argo Rollouts' web metric: a GET of the template's URL.
fn argo(gate: &Gate, session: &str) -> (u16, Value) {
    answer(
        agent()
            .get(format!("{}/argo/verdict?session={session}", gate.url))
            .call(),
    )
}

fn next_interval() {
    std::thread::sleep(MIN_INTERVAL + Duration::from_millis(500));
}

#[test]
fn a_failing_canary_gets_each_hooks_no_and_argo_a_roll_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let world = World::start(
        dir.path(),
        Traffic {
            canary: 100,
            stable: 1900,
            canary_error_percent: 20,
        },
        &[],
    );
    let gate = start_gate(&world.prometheus.url);
    // Before the analysis: new users split 5/95 as configured.
    let (status, body) = flagger(&gate, "confirm-rollout", "old");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["go"], true);
    // The first call opens the analysis: nothing to judge yet, no roll-back.
    let (status, body) = flagger(&gate, "rollout", "rev2");
    assert_eq!(
        (status, body["verdict"].as_str()),
        (200, Some("insufficient_data")),
        "{body}"
    );
    assert_eq!(body["intervals"], 0);
    assert_eq!(body["session"], "flagger/sms/model-service/rev2");
    next_interval();
    let (status, body) = flagger(&gate, "rollout", "rev2");
    assert_eq!(
        (status, body["verdict"].as_str()),
        (412, Some("roll_back")),
        "{body}"
    );
    assert_eq!(
        (body["go"].as_bool(), body["exit_code"].as_u64()),
        (Some(false), Some(4))
    );
    assert!(
        body["reason"]
            .as_str()
            .unwrap_or_default()
            .starts_with("error rate:"),
        "{body}"
    );
    assert_eq!(body["checks"][0]["metric"], "error_rate");
    assert!(
        body["checks"][0]["rates"]["worse_e_value"].as_f64() >= Some(20.0),
        "{body}"
    );
    assert!(body["canary"]["requests"].as_f64() > Some(0.0), "{body}");
    // The same iteration's other hooks get the same judgement.
    let (status, body) = flagger(&gate, "rollback", "rev2");
    assert_eq!(
        (status, body["intervals"].as_u64()),
        (200, Some(1)),
        "{body}"
    );
    let (status, _) = flagger(&gate, "confirm-promotion", "rev2");
    assert_eq!(status, 412);
    // Argo: always 200; the AnalysisTemplate's failureCondition reads it.
    let (status, body) = argo(&gate, "abc123");
    assert_eq!(
        (status, body["verdict"].as_str()),
        (200, Some("insufficient_data"))
    );
    next_interval();
    let (status, body) = argo(&gate, "abc123");
    assert_eq!(
        (status, body["verdict"].as_str()),
        (200, Some("roll_back")),
        "{body}"
    );
    assert_eq!(body["session"], "argo/abc123");
}

#[test]
fn a_healthy_canary_is_confirmed_for_promotion() {
    let dir = tempfile::tempdir().expect("temp dir");
    let world = World::start(
        dir.path(),
        Traffic {
            canary: 400,
            stable: 7600,
            canary_error_percent: 0,
        },
        &[],
    );
    let gate = start_gate(&world.prometheus.url);
    let (status, _) = flagger(&gate, "confirm-promotion", "rev3");
    assert_eq!(status, 412, "no evidence yet: not promoted");
    let promoted = |hook: &str| {
        let mut last = Value::Null;
        for _ in 0..5 {
            next_interval();
            let (status, body) = if hook == "argo" {
                argo(&gate, "healthy")
            } else {
                flagger(&gate, hook, "rev3")
            };
            if body["verdict"] == "promote" {
                return (status, body);
            }
            last = body;
        }
        panic!("{hook}: not promoted after 5 intervals: {last}");
    };
    let (status, body) = promoted("confirm-promotion");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["reason"], "every check passed");
    let (status, _) = flagger(&gate, "rollback", "rev3");
    assert_eq!(status, 412, "no roll-back for a healthy canary");
    argo(&gate, "healthy");
    let (status, body) = promoted("argo");
    assert_eq!((status, body["go"].as_bool()), (200, Some(true)));
}

#[test]
fn bad_requests_and_a_missing_prometheus_get_json_errors() {
    let gate = start_gate(&format!("http://127.0.0.1:{}", free_port()));
    let post = |path: &str, kind: &str, body: &str| {
        answer(
            agent()
                .post(format!("{}{path}", gate.url))
                .header("content-type", kind)
                .send(body.to_string()),
        )
    };
    let (status, body) = post(
        "/flagger/rollout",
        "application/json",
        r#"{"namespace":"sms"}"#,
    );
    assert_eq!(status, 422, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("name"),
        "{body}"
    );
    assert_eq!(body["status"], 422);
    let (status, body) = post(
        "/flagger/rollout",
        "application/json",
        r#"{"name":"","namespace":"sms"}"#,
    );
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_field")),
        "{body}"
    );
    let (status, _) = post("/flagger/rollout", "text/plain", "{}");
    assert_eq!(status, 415);
    let (status, body) = post(
        "/flagger/event",
        "application/json",
        r#"{"name":"m","namespace":"sms"}"#,
    );
    assert_eq!(status, 404, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("confirm-rollout"),
        "{body}"
    );
    let (status, _) = answer(agent().get(format!("{}/flagger/rollout", gate.url)).call());
    assert_eq!(status, 405);
    let (status, _) = answer(agent().get(format!("{}/argo/verdict", gate.url)).call());
    assert_eq!(status, 400);
    let (status, body) = answer(
        agent()
            .get(format!("{}/argo/verdict?session=%20", gate.url))
            .call(),
    );
    assert_eq!(status, 400, "{body}");
    // A session starts without reading; its next interval cannot be read.
    assert_eq!(argo(&gate, "p").0, 200);
    next_interval();
    let (status, body) = argo(&gate, "p");
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("evidence_unavailable")),
        "{body}"
    );
    let (status, _) = flagger(&gate, "confirm-rollout", "x");
    assert_eq!(status, 503);
}

/// `controller-check flagger|argo`: Flagger's CallWebhook with the example
/// Canary's webhooks, or Argo's web provider with the example
/// AnalysisTemplate's metric, pointed at `gate`; one JSON value per line.
fn controllers_ask(gate: &Gate, args: &[&str]) -> Vec<Value> {
    let examples = sms_checker_tests::workspace_root().join("manifests/examples");
    let mut command = Command::new(sms_checker_tests::tool(
        "CONTROLLER_CHECK_BIN",
        ".tools/controller-check/controller-check",
    ));
    match args {
        ["flagger"] => command
            .arg("flagger")
            .arg(examples.join("flagger/canary.yaml"))
            .arg(&gate.url),
        ["argo", session] => command
            .arg("argo")
            .arg(examples.join("argo-rollouts/analysis-template.yaml"))
            .arg(session)
            .arg(&gate.url),
        _ => panic!("{args:?}"),
    };
    let output = command
        .output()
        .expect("run controller-check (make controller-check)");
    assert!(
        output.status.success(),
        "{}",
        sms_checker_tests::printed(&output)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// Flagger's answer per webhook type: true when its CallWebhook succeeded.
fn flagger_answers(lines: &[Value]) -> Vec<(String, bool)> {
    lines
        .iter()
        .map(|l| {
            (
                l["type"].as_str().unwrap_or_default().to_string(),
                l["ok"] == true,
            )
        })
        .collect()
}

// The controllers' own code reads the gate as intended: Argo's web provider
// and its condition evaluation on the example AnalysisTemplate, Flagger's
// webhook client on the example Canary. A failing canary: inconclusive,
// then Failed; Flagger's rollout check fails and its rollback hook fires.
#[test]
fn flagger_and_argo_read_a_failing_canary_as_a_roll_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let world = World::start(
        dir.path(),
        Traffic {
            canary: 100,
            stable: 1900,
            canary_error_percent: 20,
        },
        &[],
    );
    let gate = start_gate(&world.prometheus.url);
    let first = controllers_ask(&gate, &["argo", "rev-a"]);
    assert_eq!(first[0]["phase"], "Inconclusive", "{first:?}");
    let opened = flagger_answers(&controllers_ask(&gate, &["flagger"]));
    next_interval();
    let judged = flagger_answers(&controllers_ask(&gate, &["flagger"]));
    let expect = |pairs: &[(&str, bool)]| -> Vec<(String, bool)> {
        pairs.iter().map(|(t, ok)| (t.to_string(), *ok)).collect()
    };
    assert_eq!(
        opened,
        expect(&[
            ("confirm-rollout", true),
            ("rollout", true),
            ("rollback", false),
            ("confirm-promotion", false)
        ])
    );
    assert_eq!(
        judged,
        expect(&[
            ("confirm-rollout", true),
            ("rollout", false),
            ("rollback", true),
            ("confirm-promotion", false)
        ])
    );
    let measured = controllers_ask(&gate, &["argo", "rev-a"]);
    assert_eq!(measured[0]["phase"], "Failed", "{measured:?}");
}

// A healthy canary: Argo's measurement turns Successful and Flagger's
// confirm-promotion passes within a few intervals.
#[test]
fn flagger_and_argo_read_a_healthy_canary_as_a_promotion() {
    let dir = tempfile::tempdir().expect("temp dir");
    let world = World::start(
        dir.path(),
        Traffic {
            canary: 400,
            stable: 7600,
            canary_error_percent: 0,
        },
        &[],
    );
    let gate = start_gate(&world.prometheus.url);
    controllers_ask(&gate, &["argo", "rev-b"]);
    controllers_ask(&gate, &["flagger"]);
    let mut phases = Vec::new();
    let mut promoted = false;
    for _ in 0..5 {
        next_interval();
        let phase = controllers_ask(&gate, &["argo", "rev-b"])[0]["phase"].clone();
        let flagger = flagger_answers(&controllers_ask(&gate, &["flagger"]));
        promoted = flagger.contains(&("confirm-promotion".to_string(), true));
        phases.push(phase.clone());
        if phase == "Successful" && promoted {
            break;
        }
    }
    assert_eq!(phases.last(), Some(&json!("Successful")), "{phases:?}");
    assert!(
        promoted,
        "Flagger's confirm-promotion never passed: {phases:?}"
    );
}
