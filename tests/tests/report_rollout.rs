//! `meshctl rollout` end to end, without a cluster: a real Prometheus
//! scrapes an in-test exporter whose counters grow like a gateway's and
//! sidecars' under traffic, and `--helm` is a script that records each
//! `helm upgrade` it is given. Checks the weights applied, the exit codes,
//! the event log, the HTML page, the safe weight after Ctrl-C, the
//! rollout's own metrics as Prometheus scrapes them, and notifications to
//! receivers that fail.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sms_checker_tests::printed;
use sms_checker_tests::receiver::FlakyReceiver;
use sms_checker_tests::report::{Traffic, World, meshctl_bin, rollout_events};

/// A `helm` that appends its arguments, one call per line, to `calls`.
fn fake_helm(dir: &Path) -> (PathBuf, PathBuf) {
    let calls = dir.join("helm-calls");
    let helm = dir.join("helm");
    std::fs::write(
        &helm,
        format!("#!/bin/sh\necho \"$@\" >> '{}'\n", calls.display()),
    )
    .expect("write the fake helm");
    let mut permissions = std::fs::metadata(&helm).expect("fake helm").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&helm, permissions).expect("make the fake helm executable");
    (helm, calls)
}

/// The canary weight of each recorded `helm upgrade`.
fn canary_weights(calls: &Path) -> Vec<u8> {
    std::fs::read_to_string(calls)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            assert!(
                line.starts_with(
                    "upgrade sms-checker manifests/sms-checker --namespace sms --reuse-values"
                ),
                "{line}"
            );
            line.rsplit("istio.trafficSplit.canary=")
                .next()
                .and_then(|w| w.trim().parse().ok())
                .unwrap_or_else(|| panic!("no canary weight in {line:?}"))
        })
        .collect()
}

/// One rollout's world: the exporter and Prometheus, the recording helm,
/// and the folder for the event log and the report.
struct Scene {
    dir: tempfile::TempDir,
    world: World,
    helm: PathBuf,
    calls: PathBuf,
}

impl Scene {
    fn new(traffic: Traffic) -> Scene {
        Scene::scraping(traffic, &[])
    }

    fn scraping(traffic: Traffic, also: &[u16]) -> Scene {
        let dir = tempfile::tempdir().expect("temp dir");
        let world = World::start(dir.path(), traffic, also);
        let (helm, calls) = fake_helm(dir.path());
        Scene {
            dir,
            world,
            helm,
            calls,
        }
    }

    /// `meshctl rollout` on the release, with `extra` flags.
    fn rollout(&self, extra: &[&str]) -> Command {
        let mut command = Command::new(meshctl_bin());
        command
            .arg("rollout")
            .args(["--prometheus", &self.world.prometheus.url])
            .args(["--release", "sms-checker", "--namespace", "sms"])
            .arg("--helm")
            .arg(&self.helm)
            .arg("--events")
            .arg(self.dir.path().join("events.jsonl"))
            .arg("--html")
            .arg(self.dir.path().join("report.html"))
            .args(["--interval", "3s", "--hold-limit", "30s"])
            .args(extra);
        command
    }

    fn weights(&self) -> Vec<u8> {
        canary_weights(&self.calls)
    }

    fn events(&self) -> Vec<Value> {
        rollout_events(&self.dir.path().join("events.jsonl"))
    }
}

// 20 % of the canary's requests fail, none of stable's: rolled back at the
// first check, the canary set to 5 % and then to 0 %, exit 4.
#[test]
fn a_failing_canary_is_rolled_back_to_zero() {
    let scene = Scene::new(Traffic {
        canary: 100,
        stable: 1900,
        canary_error_percent: 20,
    });
    let output = scene
        .rollout(&["--steps", "5,100", "--step-time", "3s"])
        .output()
        .expect("run meshctl rollout");
    assert_eq!(output.status.code(), Some(4), "{}", printed(&output));
    assert_eq!(scene.weights(), vec![5, 0]);
    let log = scene.events();
    assert_eq!(log[0]["event"], "start");
    let done = log.last().expect("events");
    assert_eq!(
        (
            done["event"].as_str(),
            done["end"].as_str(),
            done["canary"].as_u64()
        ),
        (Some("done"), Some("rolled_back"), Some(0)),
        "{done}"
    );
    assert!(
        done["reason"]
            .as_str()
            .unwrap_or_default()
            .starts_with("error rate:"),
        "{done}"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("rolled back: canary left at 0% (exit code 4)"),
        "{stdout}"
    );
    let html =
        std::fs::read_to_string(scene.dir.path().join("report.html")).expect("the HTML report");
    assert!(html.contains("data-verdict=\"roll_back\""), "{html:.500}");
}

// A healthy canary (no errors, the same latency and spam ratio) passes its
// 5 % step once it has enough requests and goes to 100 %: exit 0.
#[test]
fn a_healthy_canary_is_promoted_to_100() {
    let scene = Scene::new(Traffic {
        canary: 400,
        stable: 7600,
        canary_error_percent: 0,
    });
    let output = scene
        .rollout(&["--steps", "5,100", "--step-time", "3s"])
        .output()
        .expect("run meshctl rollout");
    assert_eq!(output.status.code(), Some(0), "{}", printed(&output));
    assert_eq!(scene.weights(), vec![5, 100]);
    let log = scene.events();
    let checks: Vec<&Value> = log.iter().filter(|e| e["event"] == "check").collect();
    let last = checks.last().expect("at least one check");
    assert_eq!(last["decision"]["action"], "promote", "{last}");
    assert_eq!(last["progress"]["weight"], 5);
    assert!(last["progress"]["canary_in_step"]["requests"].as_f64() > Some(0.0));
    assert_eq!(log.last().expect("events")["end"], "promoted");
}

fn wait_for_calls(calls: &Path, n: usize, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while canary_weights(calls).len() < n {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("meshctl rollout ended early: {status}");
        }
        assert!(Instant::now() < deadline, "no helm upgrade within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

// Ctrl-C during a step leaves the canary at 0 % and exits 130. Meanwhile
// Prometheus scrapes the rollout's own metrics: step 1 at 5 %, and checks
// counted.
#[test]
fn ctrl_c_leaves_the_canary_at_zero() {
    let metrics_port = sms_checker_tests::free_port();
    let scene = Scene::scraping(
        Traffic {
            canary: 100,
            stable: 1900,
            canary_error_percent: 0,
        },
        &[metrics_port],
    );
    let addr = format!("127.0.0.1:{metrics_port}");
    let mut child = scene
        .rollout(&[
            "--steps",
            "5,100",
            "--step-time",
            "1h",
            "--metrics-addr",
            &addr,
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("start meshctl rollout");
    wait_for_calls(&scene.calls, 1, &mut child);
    let prometheus = &scene.world.prometheus;
    prometheus.wait_for_value("meshctl_rollout_canary_weight_percent", 5.0);
    prometheus.wait_for_value("meshctl_rollout_step", 1.0);
    prometheus.wait_for_value("count(sum(meshctl_rollout_checks_total) > 0)", 1.0);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("send SIGINT");
    let status = child.wait().expect("wait for meshctl rollout");
    assert_eq!(status.code(), Some(130));
    assert_eq!(scene.weights(), vec![5, 0]);
    let log = scene.events();
    assert_eq!(log.last().expect("events")["end"], "interrupted");
}

// A run folder with no local mesh in it is refused; bad steps are usage
// errors naming the flag.
#[test]
fn what_the_rollout_refuses() {
    let run = |args: &[&str]| {
        Command::new(meshctl_bin())
            .arg("rollout")
            .args(args)
            .output()
            .expect("run meshctl rollout")
    };
    let empty = tempfile::tempdir().expect("temp dir");
    let output = run(&["--run-dir", &empty.path().display().to_string()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--run-dir: no local mesh runs in"),
        "{stderr}"
    );
    for (args, says) in [
        (&["--steps", "10,5"][..], "--steps"),
        (&["--steps", "5,150"][..], "from 1 to 100"),
        (
            &["--interval", "10m"][..],
            "--interval (10m) is longer than --step-time (5m)",
        ),
    ] {
        let output = run(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

// The notifications a rollout's events call for, worked out from the event
// log alone: the start, each step applied, each hold as it begins, the end.
fn expected_notifications(log: &[Value]) -> Vec<String> {
    let mut kinds = Vec::new();
    let mut holding = false;
    for event in log {
        match event["event"].as_str() {
            Some("start") => kinds.push("started".to_string()),
            Some("weight") if event["step"].as_u64() > Some(0) => {
                holding = false;
                kinds.push("step".into());
            }
            Some("check") => {
                let hold =
                    event["decision"]["action"] == "stay" && event["decision"]["verdict"] == "hold";
                if hold && !holding {
                    kinds.push("hold".into());
                }
                holding = hold;
            }
            Some("done") => kinds.push(event["end"].as_str().unwrap_or_default().to_string()),
            _ => {}
        }
    }
    kinds
}

// A failing canary with two receivers: one that fails every other request
// (a 503 or a dropped connection) and one where nothing listens. The
// rollout decides exactly as without them (5 %, then 0 %, exit 4); every
// notification reaches the flaky receiver after a retry, and each one to the
// dead receiver is logged undeliverable after its three attempts.
#[test]
fn flaky_notification_receivers_change_no_decision() {
    let scene = Scene::new(Traffic {
        canary: 100,
        stable: 1900,
        canary_error_percent: 20,
    });
    let flaky = FlakyReceiver::start();
    let dead = format!("http://127.0.0.1:{}/hook", sms_checker_tests::free_port());
    let output = scene
        .rollout(&[
            "--steps",
            "5,100",
            "--step-time",
            "3s",
            "--notify",
            &flaky.url(),
            "--notify",
            &dead,
            "--notify-attempts",
            "3",
            "--notify-backoff",
            "100ms",
            "--notify-timeout",
            "2s",
        ])
        .output()
        .expect("run meshctl rollout");
    assert_eq!(output.status.code(), Some(4), "{}", printed(&output));
    assert_eq!(scene.weights(), vec![5, 0]);
    let log = scene.events();
    let expected = expected_notifications(&log);
    assert_eq!(expected.first().map(String::as_str), Some("started"));
    assert_eq!(expected.last().map(String::as_str), Some("rolled_back"));
    let outcomes: Vec<&Value> = log
        .iter()
        .filter(|e| e["event"] == "notification")
        .collect();
    // Every notification to every receiver has exactly one outcome.
    assert_eq!(outcomes.len(), 2 * expected.len(), "{outcomes:?}");
    for (i, kind) in expected.iter().enumerate() {
        let sequence = i as u64 + 1;
        let at = |url: &str| {
            outcomes
                .iter()
                .find(|o| o["sequence"] == sequence && o["receiver"] == url)
                .unwrap_or_else(|| panic!("no outcome of notification {sequence} for {url}"))
        };
        let good = at(&flaky.url());
        assert_eq!(
            (good["delivered"].as_bool(), good["attempts"].as_u64()),
            (Some(true), Some(2)),
            "{good}"
        );
        assert_eq!(good["kind"], kind.as_str());
        let bad = at(&dead);
        assert_eq!(
            (bad["delivered"].as_bool(), bad["attempts"].as_u64()),
            (Some(false), Some(3)),
            "{bad}"
        );
    }
    // What the receiver accepted: each notification once, in order, with
    // the reason and the evidence.
    let accepted = flaky.accepted();
    let sequences: Vec<u64> = accepted
        .iter()
        .filter_map(|n| n["sequence"].as_u64())
        .collect();
    assert_eq!(sequences, (1..=expected.len() as u64).collect::<Vec<_>>());
    assert_eq!(flaky.requests(), 2 * expected.len());
    let last = accepted.last().expect("notifications");
    assert_eq!(
        (last["kind"].as_str(), last["canary"].as_u64()),
        (Some("rolled_back"), Some(0))
    );
    assert!(
        last["reason"]
            .as_str()
            .unwrap_or_default()
            .starts_with("error rate:"),
        "{last}"
    );
    assert_eq!(last["evidence"][0]["metric"], "error_rate", "{last}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("UNDELIVERABLE after 3 attempts"),
        "{stderr}"
    );
}
