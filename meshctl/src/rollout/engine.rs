//! The rollout's decisions, without I/O: each check hands in the metrics
//! of the interval just ended and gets back what to do. The canary is
//! judged over the whole rollout by `Analysis` (the path `meshctl gate`
//! takes too), while each step still needs its own minimum of time and
//! traffic at its weight.

use serde::Serialize;

use crate::report::dataset::Dataset;
use crate::report::{Comparison, Settings, Verdict};

use super::analysis::{Analysis, reasons};
use super::plan::Plan;

/// What the driver does after a check.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Decision {
    /// Stay at this weight: waiting for the step's minimum, holding, or
    /// short of data; `verdict` is the checks' combined verdict.
    Stay { verdict: Verdict, reason: String },
    /// Go to the next step's weight.
    Promote { to: u8 },
    /// The last step passed its checks and it is below 100 %: done there.
    Complete,
    /// Canary weight to 0: a check shows it is worse.
    RollBack { reason: String },
    /// The step went on past its hold limit without passing: canary
    /// weight to 0, `verdict` says whether it held or lacked data.
    Abort { verdict: Verdict, reason: String },
}

/// Requests and new users of one arm.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct ArmCount {
    pub requests: f64,
    pub new_users: f64,
}

/// Where the rollout stands after a check, for a person to follow.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Progress {
    /// 1-based step number and the number of steps.
    pub step: usize,
    pub steps: usize,
    pub weight: u8,
    pub seconds_in_step: f64,
    /// This step's traffic, and all traffic since the start.
    pub canary_in_step: ArmCount,
    pub stable_in_step: ArmCount,
    pub canary_total: ArmCount,
    pub stable_total: ArmCount,
}

/// The outcome of one check.
#[derive(Debug, Clone)]
pub struct CheckResult {
    pub comparison: Comparison,
    pub decision: Decision,
    pub progress: Progress,
}

pub struct Engine {
    plan: Plan,
    analysis: Analysis,
    step: usize,
    step_started: f64,
    step_first_stratum: usize,
}

impl Engine {
    /// A rollout whose first step's weight was applied at `start`.
    pub fn new(plan: Plan, settings: Settings, start: f64) -> Engine {
        Engine {
            plan,
            analysis: Analysis::new(settings),
            step: 0,
            step_started: start,
            step_first_stratum: 0,
        }
    }

    /// The canary weight of the current step.
    pub fn weight(&self) -> u8 {
        self.plan.steps[self.step]
    }

    /// 1-based number of the current step.
    pub fn step_number(&self) -> usize {
        self.step + 1
    }

    /// The canary comparison over every interval so far.
    pub fn comparison(&self) -> Comparison {
        self.analysis.comparison()
    }

    /// The driver applied the promoted weight at `now`.
    pub fn promoted(&mut self, now: f64) {
        self.step = (self.step + 1).min(self.plan.steps.len() - 1);
        self.step_started = now;
        self.step_first_stratum = self.analysis.intervals();
    }

    /// Judges the rollout after the interval that ended at `now`, whose
    /// metrics `data` holds. The interval's sample ratio is left out when
    /// the weight changed during it (`settled` false): its new users came
    /// under two weights.
    pub fn check(&mut self, now: f64, data: &Dataset, settled: bool) -> CheckResult {
        let share = settled.then(|| f64::from(self.weight()) / 100.0);
        let comparison = self.analysis.judge(data, share);
        let progress = self.progress(now);
        let decision = self.decide(&comparison, &progress);
        CheckResult {
            comparison,
            decision,
            progress,
        }
    }

    fn progress(&self, now: f64) -> Progress {
        let first = self.step_first_stratum;
        Progress {
            step: self.step + 1,
            steps: self.plan.steps.len(),
            weight: self.weight(),
            seconds_in_step: now - self.step_started,
            canary_in_step: self.analysis.count(first, true),
            stable_in_step: self.analysis.count(first, false),
            canary_total: self.analysis.count(0, true),
            stable_total: self.analysis.count(0, false),
        }
    }

    fn decide(&self, comparison: &Comparison, progress: &Progress) -> Decision {
        let reasons = |outcome: Verdict| reasons(comparison, outcome);
        let verdict = comparison.verdict;
        if verdict == Verdict::RollBack {
            return Decision::RollBack {
                reason: reasons(Verdict::RollBack),
            };
        }
        let plan = &self.plan;
        let waiting = {
            let mut missing = Vec::new();
            if progress.seconds_in_step < plan.step_time {
                missing.push(format!(
                    "{:.0}s of {:.0}s at {}%",
                    progress.seconds_in_step, plan.step_time, progress.weight
                ));
            }
            for (arm, count) in [
                ("canary", progress.canary_in_step),
                ("stable", progress.stable_in_step),
            ] {
                if count.requests < plan.step_requests {
                    missing.push(format!(
                        "{} of {} {arm} requests at this step",
                        count.requests, plan.step_requests
                    ));
                }
            }
            missing
        };
        if verdict == Verdict::Promote && waiting.is_empty() {
            return match plan.steps.get(self.step + 1) {
                Some(&to) => Decision::Promote { to },
                None => Decision::Complete,
            };
        }
        let (verdict, reason) = match verdict {
            Verdict::Promote => (
                Verdict::InsufficientData,
                format!("checks pass; waiting for {}", waiting.join(", ")),
            ),
            other => (other, reasons(other)),
        };
        if progress.seconds_in_step >= plan.step_time + plan.hold_limit {
            return Decision::Abort {
                verdict,
                reason: format!(
                    "step {} ({}%) not passed {:.0}s after its minimum time: {reason}",
                    progress.step, progress.weight, plan.hold_limit
                ),
            };
        }
        Decision::Stay { verdict, reason }
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::report::dataset::{MetricNames, bucket};
    use super::super::super::report::testdata::{inc, settings};
    use super::*;

    fn plan() -> Plan {
        Plan {
            steps: vec![10, 50, 100],
            step_time: 60.0,
            step_requests: 100.0,
            interval: 30.0,
            hold_limit: 120.0,
            confirm: false,
        }
    }

    /// One interval's metrics: canary (v2) and stable (v1) requests with
    /// their errors; every request a new user, answered within 5 ms, 13 %
    /// of the answers spam.
    fn interval(canary: (f64, f64), stable: (f64, f64)) -> Dataset {
        let mut all = Vec::new();
        for (cohort, version, (requests, errors)) in
            [("canary", "v2", canary), ("stable", "v1", stable)]
        {
            let g = MetricNames::GATEWAY_REQUESTS;
            all.push(inc(
                g,
                &[("cohort", cohort), ("response_class", "2xx")],
                requests - errors,
            ));
            all.push(inc(
                g,
                &[("cohort", cohort), ("response_class", "5xx")],
                errors,
            ));
            let u = MetricNames::GATEWAY_USERS;
            all.push(inc(u, &[("cohort", cohort), ("user", "new")], requests));
            for le in ["5", "+Inf"] {
                let b = bucket(MetricNames::GATEWAY_DURATION);
                all.push(inc(&b, &[("cohort", cohort), ("le", le)], requests));
            }
            let answered = requests - errors;
            let spam = (answered * 0.13).round();
            let s = MetricNames::SIDECAR_REQUESTS;
            for (prediction, n) in [("spam", spam), ("ham", answered - spam)] {
                all.push(inc(
                    s,
                    &[("version", version), ("prediction", prediction)],
                    n,
                ));
            }
        }
        Dataset::new(
            MetricNames {
                prefix: String::new(),
            },
            all,
        )
    }

    fn relaxed() -> Settings {
        let mut s = settings();
        s.max_error_increase = 0.05;
        s
    }

    // 1,000 canary and 9,000 stable requests per interval, none failing:
    // the sequence's upper end falls below 5 points at once, but the step
    // needs 60 s; at 60 s it goes to 50 %, then 100 %.
    #[test]
    fn a_healthy_canary_waits_for_each_step_then_goes_on() {
        let mut engine = Engine::new(plan(), relaxed(), 0.0);
        let first = engine.check(30.0, &interval((1000.0, 0.0), (9000.0, 0.0)), true);
        assert!(
            matches!(&first.decision, Decision::Stay { reason, .. } if reason.contains("30s of 60s at 10%")),
            "{:?}",
            first.decision
        );
        assert_eq!(first.progress.canary_in_step.requests, 1000.0);
        let second = engine.check(60.0, &interval((1000.0, 0.0), (9000.0, 0.0)), true);
        assert_eq!(second.decision, Decision::Promote { to: 50 });
        engine.promoted(60.0);
        assert_eq!((engine.weight(), engine.step_number()), (50, 2));
        let third = engine.check(90.0, &interval((5000.0, 0.0), (5000.0, 0.0)), false);
        assert_eq!(third.progress.canary_in_step.requests, 5000.0);
        assert_eq!(third.progress.canary_total.requests, 7000.0);
        let fourth = engine.check(120.0, &interval((5000.0, 0.0), (5000.0, 0.0)), true);
        assert_eq!(fourth.decision, Decision::Promote { to: 100 });
    }

    // 30 of 1,000 canary requests fail, none on stable: roll back at the
    // first check, with the error check's evidence as the reason.
    #[test]
    fn a_failing_canary_is_rolled_back_with_the_reason() {
        let mut engine = Engine::new(plan(), relaxed(), 0.0);
        let result = engine.check(30.0, &interval((1000.0, 30.0), (9000.0, 0.0)), true);
        match result.decision {
            Decision::RollBack { reason } => {
                assert!(reason.starts_with("error rate: 3.00% vs 0.00%"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    // No canary traffic at all: stay with "no traffic", then abort once the
    // step is 120 s past its 60 s minimum.
    #[test]
    fn no_traffic_holds_then_aborts_at_the_limit() {
        let mut engine = Engine::new(plan(), relaxed(), 0.0);
        let mut last = None;
        for t in [30.0, 60.0, 90.0, 120.0, 150.0, 180.0] {
            last = Some(engine.check(t, &interval((0.0, 0.0), (9000.0, 0.0)), true));
        }
        match last.unwrap().decision {
            Decision::Abort { verdict, reason } => {
                assert_eq!(verdict, Verdict::InsufficientData);
                assert!(reason.contains("no traffic on canary"), "{reason}");
                assert!(
                    reason.starts_with("step 1 (10%) not passed 120s"),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    // The last step below 100 % completes instead of promoting.
    #[test]
    fn a_partial_plan_completes_at_its_last_step() {
        let mut p = plan();
        p.steps = vec![25];
        let mut engine = Engine::new(p, relaxed(), 0.0);
        let result = engine.check(60.0, &interval((3000.0, 0.0), (9000.0, 0.0)), true);
        assert_eq!(result.decision, Decision::Complete);
    }
}
