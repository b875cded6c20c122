//! The gate judges as `meshctl rollout` does: the same intervals give the
//! same comparisons, check by check, in the four situations a gate must
//! tell apart; then each hook's answer to the final verdict.

use std::collections::VecDeque;

use crate::report::dataset::Dataset;
use crate::report::model::{Metric, Window};
use crate::report::testdata::settings;
use crate::report::{Settings, Verdict};
use crate::rollout::engine::Engine;
use crate::rollout::evidence::EvidenceReader;
use crate::rollout::plan::Plan;
use crate::rollout::simulation::{HEALTHY, Scenario, fixed_weight_intervals};

use super::hooks::Hook;
use super::sessions::{Policy, Sessions, preflight_passes};

/// Hands out prepared intervals in order and records the windows asked.
struct Queue {
    intervals: VecDeque<Dataset>,
    windows: Vec<(f64, f64)>,
}

impl EvidenceReader for Queue {
    fn read(&mut self, window: &Window) -> anyhow::Result<Dataset> {
        self.windows.push((window.start, window.end));
        self.intervals
            .pop_front()
            .ok_or_else(|| anyhow::anyhow!("no interval left"))
    }
}

fn policy(settings: Settings, weight: u8) -> Policy {
    Policy {
        settings,
        canary_share: Some(f64::from(weight) / 100.0),
        min_interval: 5.0,
        max_sessions: 4,
        ttl: 3600.0,
    }
}

/// Judges `n` intervals of `scenario` at `weight` through the rollout's
/// engine and through a gate session (one call every 10 s), checks that
/// every comparison is the same, and returns the last verdict.
fn same_as_rollout(seed: u64, scenario: Scenario, weight: u8, n: usize) -> Verdict {
    // The same seed twice: the same intervals for each side.
    let data = fixed_weight_intervals(seed, scenario, weight, n);
    let mut s = settings();
    s.max_error_increase = 0.02;
    let plan = Plan {
        steps: vec![weight.max(1), 100],
        step_time: 1e9,
        step_requests: 0.0,
        interval: 10.0,
        hold_limit: 1e9,
        confirm: false,
    };
    let mut engine = Engine::new(plan, s.clone(), 0.0);
    let mut gate = Sessions::new(policy(s, weight));
    let mut queue = Queue {
        intervals: fixed_weight_intervals(seed, scenario, weight, n).into(),
        windows: Vec::new(),
    };
    let first = gate.judge("argo/abc", 0.0, &mut queue).unwrap();
    assert_eq!(first.intervals, 0);
    assert_eq!(first.comparison.verdict, Verdict::InsufficientData);
    let mut last = Verdict::InsufficientData;
    for (k, interval) in data.iter().enumerate() {
        let now = 10.0 * (k + 1) as f64;
        let rollout = engine.check(now, interval, true).comparison;
        let judged = gate.judge("argo/abc", now, &mut queue).unwrap();
        assert_eq!(judged.intervals, k + 1);
        let lines = |c: &crate::report::Comparison| {
            c.checks
                .iter()
                .map(|c| (c.metric, c.outcome, c.detail.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(lines(&judged.comparison), lines(&rollout), "interval {k}");
        assert_eq!(judged.comparison.verdict, rollout.verdict);
        last = rollout.verdict;
    }
    // One window per call after the first, each from the last call on.
    let expected: Vec<(f64, f64)> = (0..n)
        .map(|k| (10.0 * k as f64, 10.0 * (k + 1) as f64))
        .collect();
    assert_eq!(queue.windows, expected);
    last
}

#[test]
fn aa_promotes_as_the_rollout_does() {
    let verdict = same_as_rollout(1, HEALTHY, 10, 12);
    assert_eq!(verdict, Verdict::Promote);
    assert!(Hook::ConfirmPromotion.go(verdict) && Hook::Rollout.go(verdict));
    assert!(!Hook::Rollback.go(verdict));
}

#[test]
fn a_faulted_canary_is_rolled_back_as_the_rollout_does() {
    let faulted = Scenario {
        canary_errors: 0.10,
        ..HEALTHY
    };
    let verdict = same_as_rollout(2, faulted, 10, 3);
    assert_eq!(verdict, Verdict::RollBack);
    assert!(!Hook::Rollout.go(verdict) && !Hook::ConfirmPromotion.go(verdict));
    assert!(Hook::Rollback.go(verdict));
}

// The canary cohort gets no request (weight 0 at the gateway while the
// gate expects 10 %): no traffic, never a promotion.
#[test]
fn no_canary_traffic_is_insufficient_data_as_in_the_rollout() {
    let data = fixed_weight_intervals(3, HEALTHY, 0, 4);
    let mut gate = Sessions::new(policy(settings(), 10));
    let mut engine = Engine::new(
        Plan {
            steps: vec![10, 100],
            step_time: 1e9,
            step_requests: 0.0,
            interval: 10.0,
            hold_limit: 1e9,
            confirm: false,
        },
        settings(),
        0.0,
    );
    let mut queue = Queue {
        intervals: fixed_weight_intervals(3, HEALTHY, 0, 4).into(),
        windows: Vec::new(),
    };
    gate.judge("flagger/sms/m/1", 0.0, &mut queue).unwrap();
    let mut verdict = Verdict::Promote;
    for (k, interval) in data.iter().enumerate() {
        let now = 10.0 * (k + 1) as f64;
        let rollout = engine.check(now, interval, true).comparison;
        let judged = gate.judge("flagger/sms/m/1", now, &mut queue).unwrap();
        assert_eq!(judged.comparison.verdict, rollout.verdict);
        verdict = judged.comparison.verdict;
        let errors = &judged.comparison.checks[0];
        assert_eq!(errors.metric, Metric::ErrorRate);
        assert!(
            errors.detail.starts_with("no traffic on canary"),
            "{}",
            errors.detail
        );
    }
    assert_eq!(verdict, Verdict::InsufficientData);
    assert!(Hook::Rollout.go(verdict) && !Hook::ConfirmPromotion.go(verdict));
}

// A fifth of the canary's new users lost at a 50/50 split: the sample
// ratio check holds, in the gate as in the rollout.
#[test]
fn a_sample_ratio_mismatch_holds_as_in_the_rollout() {
    let lost = Scenario {
        canary_users_lost: 0.2,
        requests_per_interval: 800,
        ..HEALTHY
    };
    let verdict = same_as_rollout(4, lost, 50, 10);
    assert_eq!(verdict, Verdict::Hold);
    assert!(Hook::Rollout.go(verdict) && !Hook::ConfirmPromotion.go(verdict));
}

// Calls within --min-interval of the last judged interval read nothing and
// repeat the judgement; an unused session expires; the least recently
// used goes when the table is full.
#[test]
fn sessions_are_bounded_and_intervals_have_a_minimum() {
    let data = fixed_weight_intervals(5, HEALTHY, 10, 8);
    let mut queue = Queue {
        intervals: data.into_iter().collect(),
        windows: Vec::new(),
    };
    let mut gate = Sessions::new(policy(settings(), 10));
    gate.judge("a", 0.0, &mut queue).unwrap();
    let judged = gate.judge("a", 10.0, &mut queue).unwrap();
    let again = gate.judge("a", 14.0, &mut queue).unwrap();
    assert_eq!((judged.intervals, again.intervals), (1, 1));
    assert_eq!(queue.windows, vec![(0.0, 10.0)]);
    for key in ["b", "c", "d"] {
        gate.judge(key, 20.0, &mut queue).unwrap();
    }
    assert_eq!(gate.len(), 4);
    // A fifth session pushes out "a", the least recently used.
    gate.judge("e", 30.0, &mut queue).unwrap();
    assert_eq!(gate.len(), 4);
    let restarted = gate.judge("a", 31.0, &mut queue).unwrap();
    assert_eq!(restarted.intervals, 0, "a is a new analysis");
    // An hour and more later every other session has expired.
    gate.judge("a", 31.0 + 3601.0, &mut queue).unwrap();
    assert_eq!(gate.len(), 1);
}

// confirm-rollout: a healthy assignment starts, a broken one (a fifth of
// the canary's users lost over 8,000 users) does not, and a gateway with
// no cohort traffic does not either.
#[test]
fn preflight_looks_at_the_assignment() {
    let one = |scenario: Scenario, weight: u8| {
        let mut queue = Queue {
            intervals: fixed_weight_intervals(6, scenario, weight, 1).into(),
            windows: Vec::new(),
        };
        let gate = Sessions::new(policy(settings(), 50));
        let judgement = gate.preflight(600.0, 600.0, &mut queue).unwrap();
        assert_eq!(queue.windows, vec![(0.0, 600.0)]);
        assert_eq!(gate.len(), 0, "a preflight opens no session");
        preflight_passes(&judgement)
    };
    assert_eq!(one(HEALTHY, 50), Ok(()));
    let lost = Scenario {
        canary_users_lost: 0.2,
        requests_per_interval: 32_000,
        ..HEALTHY
    };
    let why = one(lost, 50).unwrap_err();
    assert!(why.starts_with("sample ratio:"), "{why}");
    let silent = Scenario {
        requests_per_interval: 0,
        ..HEALTHY
    };
    let why = one(silent, 50).unwrap_err();
    assert!(why.contains("assigned no cohort"), "{why}");
}
