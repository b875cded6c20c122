//! `meshctl rollout` end to end, without a cluster: a real Prometheus
//! scrapes an in-test exporter whose counters grow like a gateway's and
//! sidecars' under traffic, and `--helm` is a script that records each
//! `helm upgrade` it is given. Checks the weights applied, the exit codes,
//! the event log, the HTML page, and the safe weight after Ctrl-C.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use sms_checker_tests::printed;
use sms_checker_tests::report::{Exporter, Prometheus, meshctl_bin, rollout_events};

/// Per-second traffic of the exporter's world.
#[derive(Clone, Copy)]
struct Traffic {
    canary: u64,
    stable: u64,
    /// Percent of canary requests answered 503.
    canary_error_percent: u64,
}

/// The exposition text after `ticks` tenths of a second of `traffic`.
fn exposition(traffic: Traffic, ticks: u64) -> String {
    let canary = traffic.canary * ticks / 10;
    let stable = traffic.stable * ticks / 10;
    let errors = canary * traffic.canary_error_percent / 100;
    let mut text = String::from("# TYPE sms_cohort_requests_total counter\n");
    for (cohort, class, n) in [
        ("canary", "2xx", canary - errors),
        ("canary", "5xx", errors),
        ("stable", "2xx", stable),
    ] {
        text.push_str(&format!(
            "sms_cohort_requests_total{{cohort=\"{cohort}\",response_class=\"{class}\"}} {n}\n"
        ));
    }
    text.push_str("# TYPE sms_cohort_users_total counter\n");
    for (cohort, n) in [("canary", canary / 4), ("stable", stable / 4)] {
        text.push_str(&format!(
            "sms_cohort_users_total{{cohort=\"{cohort}\",user=\"new\"}} {n}\n"
        ));
    }
    text.push_str("# TYPE sms_cohort_request_duration_milliseconds histogram\n");
    for (cohort, n) in [("canary", canary), ("stable", stable)] {
        // 80 % within 5 ms, the rest within 10.
        for (le, count) in [("5", n * 8 / 10), ("10", n), ("+Inf", n)] {
            text.push_str(&format!(
                "sms_cohort_request_duration_milliseconds_bucket{{cohort=\"{cohort}\",le=\"{le}\"}} {count}\n"
            ));
        }
        text.push_str(&format!(
            "sms_cohort_request_duration_milliseconds_count{{cohort=\"{cohort}\"}} {n}\n"
        ));
    }
    text.push_str("# TYPE sms_model_requests_total counter\n");
    for (version, cohort, answered) in [("v2", "canary", canary - errors), ("v1", "stable", stable)]
    {
        let spam = answered * 13 / 100;
        for (prediction, n) in [("spam", spam), ("ham", answered - spam)] {
            text.push_str(&format!(
                "sms_model_requests_total{{version=\"{version}\",cohort=\"{cohort}\",response_class=\"2xx\",prediction=\"{prediction}\",mirrored=\"false\"}} {n}\n"
            ));
        }
    }
    text
}

/// An exporter whose counters grow every 100 ms, scraped by Prometheus.
struct World {
    prometheus: Prometheus,
    stop: Arc<AtomicBool>,
    ticker: Option<JoinHandle<()>>,
}

impl World {
    fn start(dir: &Path, traffic: Traffic) -> World {
        let exporter = Exporter::start(&exposition(traffic, 0));
        let prometheus = Prometheus::start(dir, &[exporter.port]);
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut ticks = 0;
                while !stop.load(Ordering::Relaxed) {
                    ticks += 1;
                    exporter.serve(&exposition(traffic, ticks));
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        prometheus.wait_for_value(
            r#"count(sms_cohort_requests_total{cohort="stable"} > 0)"#,
            1.0,
        );
        World {
            prometheus,
            stop,
            ticker: Some(ticker),
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(ticker) = self.ticker.take() {
            let _ = ticker.join();
        }
    }
}

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
        let dir = tempfile::tempdir().expect("temp dir");
        let world = World::start(dir.path(), traffic);
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

// Ctrl-C during a step leaves the canary at 0 % and exits 130.
#[test]
fn ctrl_c_leaves_the_canary_at_zero() {
    let scene = Scene::new(Traffic {
        canary: 100,
        stable: 1900,
        canary_error_percent: 0,
    });
    let mut child = scene
        .rollout(&["--steps", "5,100", "--step-time", "1h"])
        .stdout(Stdio::null())
        .spawn()
        .expect("start meshctl rollout");
    wait_for_calls(&scene.calls, 1, &mut child);
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
