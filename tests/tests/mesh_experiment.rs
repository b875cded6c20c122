//! The experiment end to end on the local mesh: 2,000 simulated users through
//! the real gateway, sidecars, model versions and Prometheus.

use std::collections::BTreeMap;
use std::time::Duration;

use sms_checker_tests::mesh::{LocalMesh, metric_sum};
use sms_checker_tests::users::{Reply, parallel, predict};
use sms_checker_tests::wait_for;

const USERS: usize = 2_000;
const THREADS: usize = 8;
const MESSAGES: [&str; 3] = [
    "WINNER!! You have won a free prize, call 09061701461 now to claim",
    "Are we still on for lunch tomorrow?",
    "URGENT: your mobile number has been awarded a £2000 bonus",
];

/// Binomial bounds: a fair split falls outside `mean ± 5σ` with
/// probability below one in a million, so this cannot flake, yet a wrong
/// split (say 85/15 instead of 90/10, 7.5σ off) fails.
fn assert_split(canary_users: usize, canary_percent: f64) {
    let p = canary_percent / 100.0;
    let mean = USERS as f64 * p;
    let sigma = (USERS as f64 * p * (1.0 - p)).sqrt();
    let (low, high) = (mean - 5.0 * sigma, mean + 5.0 * sigma);
    assert!(
        (low..=high).contains(&(canary_users as f64)),
        "{canary_users} of {USERS} users are canary; expected {mean:.0} ± {:.0}",
        5.0 * sigma
    );
}

/// Every user's replies: the first without a cookie, the rest with the
/// cookie the gateway set.
fn simulate(mesh: &LocalMesh, requests_per_user: usize) -> Vec<Vec<Reply>> {
    let gateway = mesh.gateway();
    parallel(USERS, THREADS, |agent, user| {
        let first = predict(agent, &gateway, None, MESSAGES[user % MESSAGES.len()]);
        let uid = first.set_uid.clone();
        let mut replies = vec![first];
        for i in 1..requests_per_user {
            let Some(uid) = uid.as_deref() else { break };
            replies.push(predict(
                agent,
                &gateway,
                Some(uid),
                MESSAGES[(user + i) % MESSAGES.len()],
            ));
        }
        replies
    })
}

/// Per user: asserts every reply is a 200 from v1 or v2 and the cohort
/// and version never change; returns each user's cohort.
fn check_users(users: &[Vec<Reply>], requests_per_user: usize) -> Vec<String> {
    users
        .iter()
        .enumerate()
        .map(|(user, replies)| {
            assert_eq!(
                replies.len(),
                requests_per_user,
                "user {user} got no cookie: {:?}",
                replies[0]
            );
            for reply in replies {
                assert_eq!(reply.status, 200, "user {user}: {reply:?}");
                assert_ne!(
                    reply.version.as_deref(),
                    Some("v3"),
                    "user {user} was answered by the shadow: {reply:?}"
                );
            }
            let cohort = replies[0]
                .cohort
                .clone()
                .unwrap_or_else(|| panic!("user {user}: no cohort header"));
            let version = replies[0]
                .version
                .clone()
                .unwrap_or_else(|| panic!("user {user}: no version header"));
            let expected = match cohort.as_str() {
                "stable" => "v1",
                "canary" => "v2",
                other => panic!("user {user}: unknown cohort {other}"),
            };
            assert_eq!(
                version, expected,
                "user {user} in {cohort} was answered by {version}"
            );
            for reply in &replies[1..] {
                assert_eq!(
                    reply.cohort.as_deref(),
                    Some(cohort.as_str()),
                    "user {user} changed cohort"
                );
                assert_eq!(
                    reply.version.as_deref(),
                    Some(expected),
                    "user {user} changed version"
                );
            }
            cohort
        })
        .collect()
}

#[test]
fn two_thousand_users_split_90_10_sticky_mirrored_and_counted_by_prometheus() {
    let mesh = LocalMesh::start(&[]);
    let requests_per_user = 3;
    let users = simulate(&mesh, requests_per_user);
    let cohorts = check_users(&users, requests_per_user);
    let canary_users = cohorts.iter().filter(|c| *c == "canary").count();
    assert_split(canary_users, 10.0);

    // What the test sent, by (version, cohort).
    let mut sent: BTreeMap<(String, String), f64> = BTreeMap::new();
    for replies in &users {
        for reply in replies {
            *sent
                .entry((
                    reply.version.clone().unwrap_or_default(),
                    reply.cohort.clone().unwrap_or_default(),
                ))
                .or_default() += 1.0;
        }
    }
    let total = (USERS * requests_per_user) as f64;
    let v1 = sent
        .iter()
        .filter(|(k, _)| k.0 == "v1")
        .map(|(_, v)| v)
        .sum::<f64>();
    let v2 = sent
        .iter()
        .filter(|(k, _)| k.0 == "v2")
        .map(|(_, v)| v)
        .sum::<f64>();
    assert_eq!(v1 + v2, total);

    // The sidecars count exactly what the users got (the filter may hand its
    // counts to Envoy on a timer, so wait for them to settle).
    let sidecar_count = |version: &str, cohort: &str| {
        metric_sum(
            &mesh.proxy_stats(&format!("sidecar-{version}")),
            "sms_model_requests_total",
            &[
                ("version", version),
                ("cohort", cohort),
                ("mirrored", "false"),
            ],
        )
    };
    wait_for(
        "the sidecars to count what was sent",
        Duration::from_secs(30),
        || {
            sent.iter()
                .all(|((version, cohort), count)| sidecar_count(version, cohort) == *count)
                .then_some(())
        },
    );
    for ((version, cohort), count) in &sent {
        let counted = sidecar_count(version, cohort);
        assert_eq!(
            counted, *count,
            "sidecar-{version} counted {counted} {cohort} requests, the test sent {count}"
        );
    }

    // v3 gets a copy of every request; once the mirror has drained its count
    // equals v1 + v2 exactly, at the sidecar and at the service.
    wait_for(
        "v3 to receive every mirrored request",
        Duration::from_secs(30),
        || {
            let v3 = metric_sum(
                &mesh.proxy_stats("sidecar-v3"),
                "sms_model_requests_total",
                &[("mirrored", "true")],
            );
            (v3 == v1 + v2).then_some(())
        },
    );
    let predictions =
        |name: &str| metric_sum(&mesh.service_metrics(name), "model_predictions_total", &[]);
    wait_for(
        "model-v3 to predict every mirrored request",
        Duration::from_secs(30),
        || {
            (predictions("model-v3") == predictions("model-v1") + predictions("model-v2"))
                .then_some(())
        },
    );
    assert_eq!(predictions("model-v1"), v1);
    assert_eq!(predictions("model-v2"), v2);

    // Prometheus answers the same counts by version and cohort...
    let mut expected: BTreeMap<(String, String), f64> = sent.clone();
    for ((_, cohort), count) in &sent {
        *expected.entry(("v3".into(), cohort.clone())).or_default() += count;
    }
    wait_for(
        "Prometheus to report what was sent",
        Duration::from_secs(60),
        || {
            let result =
                mesh.prometheus_query("sum by (version, cohort) (sms_model_requests_total)");
            let got: BTreeMap<(String, String), f64> = result
                .into_iter()
                .map(|(labels, value)| {
                    let label = |name: &str| {
                        labels
                            .get(name)
                            .and_then(|v| v.as_str())
                            .unwrap_or_default()
                            .to_string()
                    };
                    ((label("version"), label("cohort")), value)
                })
                .collect();
            (got == expected).then_some(())
        },
    );
    // The gateway's filter counts the same requests by cohort.
    let mut by_cohort: BTreeMap<String, f64> = BTreeMap::new();
    for ((_, cohort), count) in &sent {
        *by_cohort.entry(cohort.clone()).or_default() += count;
    }
    wait_for(
        "Prometheus to report the gateway's per-cohort counts",
        Duration::from_secs(60),
        || {
            let result = mesh.prometheus_query("sum by (cohort) (sms_cohort_requests_total)");
            let got: BTreeMap<String, f64> = result
                .into_iter()
                .map(|(labels, value)| {
                    (
                        labels
                            .get("cohort")
                            .and_then(|v| v.as_str())
                            .unwrap_or_default()
                            .to_string(),
                        value,
                    )
                })
                .collect();
            (got == by_cohort).then_some(())
        },
    );
    // ...and latency histograms per version, one observation per request.
    // Envoy merges histograms on its stats flush (every 5 s), so wait for it.
    let expected_counts: BTreeMap<String, f64> = [
        ("v1".to_string(), v1),
        ("v2".to_string(), v2),
        ("v3".to_string(), v1 + v2),
    ]
    .into();
    wait_for(
        "Prometheus to hold each sidecar's latency histogram",
        Duration::from_secs(30),
        || {
            let histogram = mesh.prometheus_query(
                "sum by (version) (sms_model_request_duration_milliseconds_count)",
            );
            let by_version: BTreeMap<String, f64> = histogram
                .into_iter()
                .map(|(labels, value)| {
                    (
                        labels["version"].as_str().unwrap_or_default().to_string(),
                        value,
                    )
                })
                .collect();
            (by_version == expected_counts).then_some(())
        },
    );
    let buckets = mesh
        .prometheus_query("count by (version) (sms_model_request_duration_milliseconds_bucket)");
    assert_eq!(buckets.len(), 3, "a histogram per version: {buckets:?}");
    // The services' metrics come merged with their sidecars' (Istio's agent):
    // wait for the scrape after the last request. `version` is the pod's
    // label, as Istio's sample Prometheus config maps pod labels.
    wait_for(
        "Prometheus to hold each model-service's latency histogram",
        Duration::from_secs(30),
        || {
            let service =
                mesh.prometheus_query("sum by (version) (model_prediction_latency_seconds_count)");
            let service: BTreeMap<String, f64> = service
                .into_iter()
                .map(|(labels, value)| {
                    (
                        labels["version"].as_str().unwrap_or_default().to_string(),
                        value,
                    )
                })
                .collect();
            (service == expected_counts).then_some(())
        },
    );
}

/// The same 2,000 users (ids chosen by the test, sent as the cookie) at
/// 90/10, then with the chart re-rendered at 95/5: the split follows the new
/// values, and shrinking the canary only moves canary users back to stable.
#[test]
fn re_rendered_95_5_split_keeps_stable_users_stable() {
    let uids: Vec<String> = (0..USERS).map(|i| format!("user-{i:04}")).collect();
    let cohorts_at = |sets: &[&str]| -> Vec<String> {
        let mesh = LocalMesh::start(sets);
        let gateway = mesh.gateway();
        let users: Vec<Vec<Reply>> = parallel(USERS, THREADS, |agent, user| {
            (0..2)
                .map(|i| {
                    predict(
                        agent,
                        &gateway,
                        Some(&uids[user]),
                        MESSAGES[(user + i) % MESSAGES.len()],
                    )
                })
                .collect()
        });
        check_users(&users, 2)
    };
    let before = cohorts_at(&[]);
    assert_split(before.iter().filter(|c| *c == "canary").count(), 10.0);
    let after = cohorts_at(&[
        "istio.trafficSplit.stable=95",
        "istio.trafficSplit.canary=5",
    ]);
    assert_split(after.iter().filter(|c| *c == "canary").count(), 5.0);
    for (i, (was, is)) in before.iter().zip(&after).enumerate() {
        assert!(
            !(was == "stable" && is == "canary"),
            "{} moved from stable to canary",
            uids[i]
        );
    }
}
