//! Live changes, as on a cluster: `meshctl set` renders the chart again and
//! Istio's control plane pushes the result over xDS (routes, and the
//! filter's configuration through ECDS) while requests keep flowing.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sms_checker_tests::mesh::LocalMesh;
use sms_checker_tests::users::{Arrivals, Reply, arrive, parallel, predict};

const USERS: usize = 2_000;
/// New users after the change: enough that ±2 points is more than 4σ of
/// the binomial spread at 20 % (σ = 0.45 points), so the check cannot flake.
const NEW_USERS: usize = 8_000;
const THREADS: usize = 8;
const SMS: &str = "Are we still on for lunch tomorrow?";
/// Bounds on the load that runs across the change.
const LOAD_MAX_REQUESTS: usize = 40_000;
const LOAD_MAX_TIME: Duration = Duration::from_secs(60);

fn cohort(reply: &Reply) -> String {
    reply
        .cohort
        .clone()
        .unwrap_or_else(|| panic!("no cohort: {reply:?}"))
}

#[test]
fn the_split_moves_from_90_10_to_80_20_under_load_without_a_failed_request() {
    let mesh = LocalMesh::start(&[]);
    let gateway = mesh.gateway();

    // 2,000 users arrive: each gets an id (the cookie) and a cohort.
    let Arrivals {
        uids,
        cohorts: before,
    } = arrive(&gateway, USERS, THREADS, SMS);
    let canary_before = before.iter().filter(|c| *c == "canary").count();
    assert!(canary_before > 0, "no canary user among {USERS}");

    // The same users keep coming back while the split moves to 80/20.
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
                    let user = n % USERS;
                    let reply = predict(&agent, &gateway, Some(&uids[user]), SMS);
                    replies
                        .lock()
                        .expect("lock")
                        .push((user, Instant::now(), reply));
                }
            });
        }
        std::thread::sleep(Duration::from_secs(2));
        let result = mesh.set(&["istio.trafficSplit.stable=80,istio.trafficSplit.canary=20"]);
        applied_at = Some(Instant::now());
        // Requests keep flowing on the new configuration for a while.
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::Relaxed);
        result.unwrap_or_else(|err| panic!("meshctl set failed: {err}"));
    });
    let applied_at = applied_at.expect("the values were set");
    let replies = replies.into_inner().expect("replies");
    let after_change = replies.iter().filter(|(_, at, _)| *at > applied_at).count();
    assert!(
        after_change > 100 && replies.len() - after_change > 100,
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
    // A canary user is never served as stable, before, during or after.
    for (user, _, reply) in &replies {
        if before[*user] == "canary" {
            assert_eq!(
                cohort(reply),
                "canary",
                "user {user} left the canary: {reply:?}"
            );
            assert_eq!(reply.version.as_deref(), Some("v2"), "{reply:?}");
        }
    }

    // Afterwards: every earlier canary user is still canary; the ramp only
    // moves stable users into the canary.
    let again = parallel(USERS, THREADS, |agent, user| {
        predict(agent, &gateway, Some(&uids[user]), SMS)
    });
    let mut moves: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (user, reply) in again.iter().enumerate() {
        assert_eq!(reply.status, 200, "{reply:?}");
        let now = cohort(reply);
        assert!(
            !(before[user] == "canary" && now == "stable"),
            "user {user} moved from canary to stable"
        );
        *moves.entry((before[user].clone(), now)).or_default() += 1;
    }
    assert_eq!(
        moves.get(&("canary".into(), "canary".into())),
        Some(&canary_before),
        "{moves:?}"
    );

    // New users split 80/20, within ±2 points.
    let fresh = parallel(NEW_USERS, THREADS, |agent, _| {
        predict(agent, &gateway, None, SMS)
    });
    assert!(fresh.iter().all(|r| r.status == 200));
    let canary = fresh.iter().filter(|r| cohort(r) == "canary").count();
    let share = 100.0 * canary as f64 / NEW_USERS as f64;
    eprintln!(
        "{} requests across the change ({after_change} after it), none failed; {canary} of {NEW_USERS} new users canary ({share:.2} %)",
        replies.len()
    );
    assert!(
        (18.0..=22.0).contains(&share),
        "{canary} of {NEW_USERS} new users are canary ({share:.1} %), expected 20 ± 2"
    );
}

/// Values the chart refuses, and values that would change the workloads,
/// are refused with a message; the mesh keeps serving as before.
#[test]
fn refused_values_leave_the_mesh_as_it_was() {
    let mesh = LocalMesh::start(&[]);
    let helm = mesh
        .set(&["istio.trafficSplit.stable=70"])
        .expect_err("the chart refuses weights that do not add up to 100");
    assert!(helm.contains("must add up to 100"), "{helm}");
    let workloads = mesh
        .set(&["versions.v2.enabled=false"])
        .expect_err("workload changes need a restart");
    assert!(workloads.contains("change the workloads"), "{workloads}");
    assert!(mesh.state().values.is_empty());
    let gateway = mesh.gateway();
    let replies = parallel(200, THREADS, |agent, _| predict(agent, &gateway, None, SMS));
    let canary = replies
        .iter()
        .filter(|r| r.status == 200 && cohort(r) == "canary")
        .count();
    assert!(replies.iter().all(|r| r.status == 200));
    assert!(canary < 60, "still 90/10: {canary} of 200 canary");
}
