//! `meshctl rollout` on the local mesh: the canary's weight moves through
//! the mesh's live change of values (Istio pushes each step over xDS) while
//! users keep coming, and the rollout decides on its own from the mesh's
//! Prometheus: a healthy v2 goes to 100 %, a v2 that fails a fifth of its
//! requests is rolled back at the first step.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use sms_checker_tests::mesh::{LocalMesh, meshctl_bin};
use sms_checker_tests::printed;
use sms_checker_tests::report::rollout_events;
use sms_checker_tests::users::{Reply, parallel, predict};

const THREADS: usize = 6;
const SMS: &str = "Are we still on for lunch tomorrow?";
/// Bounds on the load that runs beside a rollout.
const LOAD_MAX_REQUESTS: usize = 200_000;
const LOAD_MAX_TIME: Duration = Duration::from_secs(240);
/// Requests each user sends: the first without a cookie (a new user).
const REQUESTS_PER_USER: usize = 4;

/// One request of the load, with the user it came from.
struct Sent {
    uid: String,
    reply: Reply,
}

/// Runs `rollout` while users keep arriving and coming back (each sends
/// `REQUESTS_PER_USER` requests), and returns its output and every reply.
fn rollout_under_load(mesh: &LocalMesh, dir: &Path, args: &[&str]) -> (Output, Vec<Sent>) {
    let gateway = mesh.gateway();
    let stop = AtomicBool::new(false);
    let sent = Mutex::new(Vec::new());
    let started = Instant::now();
    let output = std::thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(|| {
                let agent = mesh.client();
                let mut count = 0;
                while !stop.load(Ordering::Relaxed)
                    && started.elapsed() < LOAD_MAX_TIME
                    && count < LOAD_MAX_REQUESTS / THREADS
                {
                    let first = predict(&agent, &gateway, None, SMS);
                    let Some(uid) = first.set_uid.clone() else {
                        panic!("no user cookie: {first:?}");
                    };
                    let mut replies = vec![first];
                    for _ in 1..REQUESTS_PER_USER {
                        replies.push(predict(&agent, &gateway, Some(&uid), SMS));
                    }
                    count += replies.len();
                    let mut sent = sent.lock().expect("lock");
                    sent.extend(replies.into_iter().map(|reply| Sent {
                        uid: uid.clone(),
                        reply,
                    }));
                }
            });
        }
        let output = Command::new(meshctl_bin())
            .arg("rollout")
            .arg("--run-dir")
            .arg(mesh.run_dir())
            .args(["--prometheus", &mesh.prometheus_url()])
            .arg("--events")
            .arg(dir.join("events.jsonl"))
            .arg("--html")
            .arg(dir.join("rollout.html"))
            // Short steps for a test; a real rollout keeps the defaults.
            .args([
                "--interval",
                "3s",
                "--step-time",
                "6s",
                "--hold-limit",
                "90s",
            ])
            .args([
                "--step-requests",
                "50",
                "--min-requests",
                "50",
                "--min-users",
                "20",
            ])
            .args(args)
            .output()
            .expect("run meshctl rollout");
        stop.store(true, Ordering::Relaxed);
        output
    });
    (output, sent.into_inner().expect("replies"))
}

/// The canary weights the rollout set, in order.
fn weights(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .filter(|e| e["event"] == "weight")
        .filter_map(|e| e["canary"].as_u64())
        .collect()
}

#[test]
fn a_healthy_canary_is_ramped_through_every_step_to_100_percent() {
    let mesh = LocalMesh::start(&[]);
    let dir = tempfile::tempdir().expect("temp dir");
    let (output, sent) = rollout_under_load(
        &mesh,
        dir.path(),
        &["--steps", "10,50,100", "--max-error-increase", "0.2"],
    );
    assert_eq!(output.status.code(), Some(0), "{}", printed(&output));
    let log = rollout_events(&dir.path().join("events.jsonl"));
    assert_eq!(weights(&log), [10, 50, 100], "{}", printed(&output));
    assert_eq!(log.last().expect("events")["end"], "promoted");
    let values = mesh.state().values.clone();
    assert_eq!(
        values.last().map(String::as_str),
        Some("istio.trafficSplit.stable=0,istio.trafficSplit.canary=100"),
        "{values:?}"
    );
    // No request failed because of a weight change.
    let failed: Vec<_> = sent.iter().filter(|s| s.reply.status != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during the rollout, e.g. {:?}",
        failed.len(),
        sent.len(),
        failed.first().map(|s| &s.reply)
    );
    assert!(
        sent.len() > 1_000,
        "only {} requests ran beside the rollout",
        sent.len()
    );
    // At 100 % every user, old or new, is in the canary and served by v2.
    let gateway = mesh.gateway();
    for reply in parallel(50, 4, |agent, _| predict(agent, &gateway, None, SMS)) {
        assert_eq!(
            (reply.cohort.as_deref(), reply.version.as_deref()),
            (Some("canary"), Some("v2")),
            "{reply:?}"
        );
    }
    assert!(dir.path().join("rollout.html").exists());
}

#[test]
fn a_canary_failing_a_fifth_of_its_requests_is_rolled_back_at_the_first_step() {
    let mesh = LocalMesh::start(&["versions.v2.fault.abort.percentage=20"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let (output, sent) = rollout_under_load(&mesh, dir.path(), &[]);
    assert_eq!(output.status.code(), Some(4), "{}", printed(&output));
    let log = rollout_events(&dir.path().join("events.jsonl"));
    assert_eq!(weights(&log), [5, 0], "{}", printed(&output));
    assert_eq!(log.last().expect("events")["end"], "rolled_back");
    let check = log
        .iter()
        .find(|e| e["event"] == "check" && e["decision"] != "hold")
        .expect("the deciding check");
    assert!(
        check.to_string().contains("error"),
        "the reason is the error rate: {check}"
    );

    // Every user who was in the canary is now served by v1, as stable.
    let mut canary_users: Vec<&str> = sent
        .iter()
        .filter(|s| s.reply.cohort.as_deref() == Some("canary"))
        .map(|s| s.uid.as_str())
        .collect();
    canary_users.sort_unstable();
    canary_users.dedup();
    assert!(
        !canary_users.is_empty(),
        "no canary user during the rollout"
    );
    let gateway = mesh.gateway();
    let after = parallel(canary_users.len(), 4, |agent, i| {
        predict(agent, &gateway, Some(canary_users[i]), SMS)
    });
    for (uid, reply) in canary_users.iter().zip(&after) {
        assert_eq!(reply.status, 200, "{uid}: {reply:?}");
        assert_eq!(
            (reply.cohort.as_deref(), reply.version.as_deref()),
            (Some("stable"), Some("v1")),
            "{uid} after the roll-back: {reply:?}"
        );
    }
}
