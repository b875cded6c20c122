//! Sticky assignment: pinned hash vectors, determinism, the split over
//! 100,000 ids, the monotone ramp and the salt reshuffle.

use sms_checker_filter::assign::{Assigner, BUCKETS};
use sms_checker_filter::config::Cohort;

fn cohorts(weights: &[(&str, u8)]) -> Vec<Cohort> {
    weights
        .iter()
        .map(|(name, weight)| Cohort {
            name: name.to_string(),
            weight: *weight,
        })
        .collect()
}

fn ids(n: usize) -> impl Iterator<Item = String> {
    (0..n).map(|i| format!("user-{i}"))
}

#[test]
fn the_hash_is_xxh3_64() {
    // Reference values from the XXH3 specification's test suite: a different
    // algorithm or library would reassign every user.
    assert_eq!(xxhash_rust::xxh3::xxh3_64(b""), 0x2D06_8005_38D3_94C2);
    assert_eq!(
        xxhash_rust::xxh3::xxh3_64_with_seed(b"", 0),
        0x2D06_8005_38D3_94C2
    );
}

#[test]
fn buckets_are_pinned() {
    // Pinned once: these must never change, or users change cohorts on upgrade.
    let assigner = Assigner::new(
        "sms-checker",
        "sms-model",
        &cohorts(&[("stable", 90), ("canary", 10)]),
    );
    let got: Vec<u32> = ["alice", "bob", "0123456789abcdef0123456789abcdef", ""]
        .iter()
        .map(|id| assigner.bucket(id.as_bytes()))
        .collect();
    assert_eq!(got, PINNED_BUCKETS);
}

const PINNED_BUCKETS: [u32; 4] = [1915, 5235, 5939, 1488];

#[test]
fn same_id_same_cohort() {
    let c = cohorts(&[("stable", 90), ("canary", 10)]);
    let a = Assigner::new("salt", "exp", &c);
    let b = Assigner::new("salt", "exp", &c);
    for id in ids(1000) {
        assert_eq!(a.cohort(id.as_bytes()), b.cohort(id.as_bytes()));
        assert_eq!(a.bucket(id.as_bytes()), a.bucket(id.as_bytes()));
        assert!(a.bucket(id.as_bytes()) < BUCKETS);
    }
}

fn shares(weights: &[(&str, u8)], n: usize) -> Vec<f64> {
    let a = Assigner::new("sms-checker", "sms-model", &cohorts(weights));
    let mut counts = vec![0usize; weights.len()];
    for id in ids(n) {
        counts[a.cohort(id.as_bytes())] += 1;
    }
    counts
        .iter()
        .map(|&c| 100.0 * c as f64 / n as f64)
        .collect()
}

#[test]
fn split_within_half_a_point_over_100k_ids() {
    for weights in [
        &[("stable", 90), ("canary", 10)][..],
        &[("stable", 95), ("canary", 5)],
        &[("a", 50), ("b", 50)],
        &[("a", 70), ("b", 20), ("c", 10)],
        &[("a", 99), ("b", 1)],
    ] {
        let got = shares(weights, 100_000);
        for ((name, weight), share) in weights.iter().zip(&got) {
            assert!(
                (share - f64::from(*weight)).abs() <= 0.5,
                "{name}: {share:.3}% for weight {weight} in {weights:?}"
            );
        }
    }
}

#[test]
fn zero_weight_gets_nobody() {
    let got = shares(&[("a", 100), ("b", 0)], 10_000);
    assert_eq!(got, vec![100.0, 0.0]);
}

#[test]
fn ramping_canary_keeps_every_canary_user() {
    for (before, after) in [
        (
            &[("stable", 95), ("canary", 5)],
            &[("stable", 90), ("canary", 10)],
        ),
        (
            &[("canary", 5), ("stable", 95)],
            &[("canary", 10), ("stable", 90)],
        ),
        (
            &[("stable", 90), ("canary", 10)],
            &[("stable", 50), ("canary", 50)],
        ),
    ] {
        let canary_before = before.iter().position(|c| c.0 == "canary").unwrap();
        let canary_after = after.iter().position(|c| c.0 == "canary").unwrap();
        let a = Assigner::new("s", "e", &cohorts(before));
        let b = Assigner::new("s", "e", &cohorts(after));
        let mut stayed = 0;
        let mut joined = 0;
        for id in ids(50_000) {
            let was = a.cohort(id.as_bytes()) == canary_before;
            let is = b.cohort(id.as_bytes()) == canary_after;
            assert!(
                !was || is,
                "{id} left canary when it grew: {before:?} -> {after:?}"
            );
            stayed += usize::from(was);
            joined += usize::from(is && !was);
        }
        assert!(stayed > 0 && joined > 0, "{stayed} {joined}");
    }
}

#[test]
fn changing_the_salt_reshuffles() {
    let c = cohorts(&[("a", 50), ("b", 50)]);
    let a = Assigner::new("salt-1", "exp", &c);
    let b = Assigner::new("salt-2", "exp", &c);
    let e = Assigner::new("salt-1", "exp-2", &c);
    let n = 20_000;
    let moved = ids(n)
        .filter(|id| a.cohort(id.as_bytes()) != b.cohort(id.as_bytes()))
        .count();
    // Independent 50/50 assignments disagree half of the time.
    let share = moved as f64 / n as f64;
    assert!((0.47..0.53).contains(&share), "salt change moved {share}");
    let moved = ids(n)
        .filter(|id| a.cohort(id.as_bytes()) != e.cohort(id.as_bytes()))
        .count();
    let share = moved as f64 / n as f64;
    assert!(
        (0.47..0.53).contains(&share),
        "experiment change moved {share}"
    );
}

#[test]
fn salt_and_experiment_are_delimited() {
    let c = cohorts(&[("a", 50), ("b", 50)]);
    let a = Assigner::new("ab", "c", &c);
    let b = Assigner::new("a", "bc", &c);
    let differ = ids(100)
        .filter(|id| a.bucket(id.as_bytes()) != b.bucket(id.as_bytes()))
        .count();
    assert!(differ > 90, "{differ}");
}
