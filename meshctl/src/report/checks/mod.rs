//! Decision rules: the evidence of one comparison (candidate against
//! stable), over one interval or several, turned into checks whose outcomes
//! are promote, hold, roll back or insufficient data. The report judges its
//! window as one interval; the rollout judges every check interval so far.
//!
//! Every statistic here stays valid when repeated at every interval: a
//! roll-back needs the exact e-value for "worse" to reach 1/alpha
//! (`stats::harm`), a promotion the confidence sequence (`stats::sequential`)
//! to lie below the tolerated increase, and the chance of either being
//! wrong stays within 1 - confidence however often it is looked at.

mod assignment;
mod latency;
mod rates;

pub use assignment::srm_check;
pub use latency::latency_check;
pub use rates::{error_check, spam_check};

use super::dataset::{Dataset, Evidence};
use super::format::{count, e_text, pct};
use super::model::{Check, Comparison, Gate, Role, Settings, Verdict};
use super::stats::cluster;
use super::stats::sequential::{self, Counts, Pair, RateComparison, Tuning};

/// The canary (and shadow) against stable over one window: a comparison per
/// candidate role that gates or that has versions.
pub fn comparisons(settings: &Settings, data: &Dataset) -> Vec<Comparison> {
    let stable = settings.versions(Role::Stable);
    let mut comparisons = Vec::new();
    for (candidate, gating) in [
        (
            Role::Canary,
            matches!(settings.gate, Gate::Canary | Gate::Both),
        ),
        (
            Role::Shadow,
            matches!(settings.gate, Gate::Shadow | Gate::Both),
        ),
    ] {
        let candidates = settings.versions(candidate);
        if candidates.is_empty() && !gating {
            continue;
        }
        let mut evidence = Evidence::of(data, candidate, &candidates, &stable, None);
        if candidate == Role::Canary {
            evidence.canary_share = settings.canary_weight.map(|w| w / 100.0);
        }
        comparisons.push(comparison(
            settings,
            candidate,
            candidates.into_iter().collect(),
            stable.iter().cloned().collect(),
            gating,
            &[evidence],
        ));
    }
    comparisons
}

/// One comparison judged on `intervals` (oldest first).
pub fn comparison(
    settings: &Settings,
    candidate: Role,
    candidate_versions: Vec<String>,
    baseline_versions: Vec<String>,
    gating: bool,
    intervals: &[Evidence],
) -> Comparison {
    let checks = judge(settings, intervals);
    Comparison {
        name: format!("{candidate} vs stable"),
        candidate,
        candidate_versions,
        baseline_versions,
        gating,
        verdict: Verdict::combine(checks.iter().map(|c| c.outcome)),
        checks,
    }
}

/// Error rate, spam ratio and latency (and, where the canary's weight is
/// known, the assignment itself) over every interval so far.
pub fn judge(settings: &Settings, intervals: &[Evidence]) -> Vec<Check> {
    let Some(last) = intervals.last() else {
        return Vec::new();
    };
    let source = last.source;
    let (design_effect, clustering) = design_effect(settings, intervals);
    let tuning = tuning(settings, design_effect);
    let errors: Vec<Pair> = intervals
        .iter()
        .map(|e| Pair {
            candidate: Counts::new(e.candidate.errors, e.candidate.requests),
            baseline: Counts::new(e.baseline.errors, e.baseline.requests),
        })
        .collect();
    let spam: Vec<Pair> = intervals
        .iter()
        .map(|e| Pair {
            candidate: Counts::new(e.candidate.spam, e.candidate.predictions),
            baseline: Counts::new(e.baseline.spam, e.baseline.predictions),
        })
        .collect();
    let mut checks = vec![
        error_check(settings, &errors, &tuning, source, &clustering),
        spam_check(settings, &spam, &tuning),
        latency_check(settings, intervals, &tuning, source),
    ];
    if let Some(check) = srm_check(settings, intervals) {
        checks.push(check);
    }
    checks
}

/// The confidence sequences' level and mixture from the settings.
pub fn tuning(settings: &Settings, design_effect: f64) -> Tuning {
    let alpha = 1.0 - settings.confidence;
    Tuning {
        alpha,
        rho: sequential::rho_for(settings.sequence_tuning, alpha),
        design_effect,
    }
}

/// The design effect from requests per new user (the larger of the two
/// arms), and a sentence saying what was assumed.
fn design_effect(settings: &Settings, intervals: &[Evidence]) -> (f64, String) {
    let arm = |pick: fn(&Evidence) -> (f64, Option<f64>)| {
        intervals.iter().fold((0.0, None::<f64>), |(r, u), e| {
            let (requests, users) = pick(e);
            (r + requests, users.map(|n| u.unwrap_or(0.0) + n).or(u))
        })
    };
    let candidate = arm(|e| (e.candidate.requests, e.candidate.new_users));
    let baseline = arm(|e| (e.baseline.requests, e.baseline.new_users));
    let effects: Vec<(f64, f64)> = [candidate, baseline]
        .into_iter()
        .filter_map(|(requests, users)| {
            let users = users?;
            cluster::design_effect(requests, users, settings.icc).map(|d| (d, requests / users))
        })
        .collect();
    match effects.iter().copied().max_by(|a, b| a.0.total_cmp(&b.0)) {
        Some((effect, per_user)) => (
            effect,
            format!(
                "design effect {effect:.2} ({per_user:.1} requests per new user, icc {})",
                settings.icc
            ),
        ),
        None => (
            1.0,
            "requests taken as independent (no user counts)".to_string(),
        ),
    }
}

/// Why a check cannot decide yet, when it cannot: no traffic at all, or
/// fewer than `needed` in an arm ("40 of 100 canary requests").
pub(crate) fn shortfall(candidate: f64, baseline: f64, needed: f64, what: &str) -> Option<String> {
    if candidate <= 0.0 && baseline <= 0.0 {
        return Some(format!("no traffic: no {what} on either arm"));
    }
    if candidate <= 0.0 || baseline <= 0.0 {
        let (empty, other, n) = if candidate <= 0.0 {
            ("canary", "stable", baseline)
        } else {
            ("stable", "canary", candidate)
        };
        return Some(format!(
            "no traffic on {empty}: 0 {what} there, {} on {other}",
            count(n)
        ));
    }
    (candidate < needed || baseline < needed).then(|| {
        format!(
            "insufficient data: {} of {} candidate {what}, {} of {} stable",
            count(candidate),
            count(needed),
            count(baseline),
            count(needed)
        )
    })
}

/// Both rates, the difference and its two-sided confidence sequence.
pub(crate) fn describe(rates: &RateComparison, confidence: f64) -> String {
    format!(
        "{} vs {}, difference {} ({:.0}% confidence sequence {} to {}, {:.2} SE)",
        pct(rates.candidate_rate),
        pct(rates.baseline_rate),
        pct(rates.difference),
        confidence * 100.0,
        pct(rates.interval.lower),
        pct(rates.interval.upper),
        rates.multiplier,
    )
}

/// For the one-sided checks: the upper end of the sequence (what promotion
/// needs) and the e-value for "worse" (what a roll-back needs). The lower
/// end is left out: at a handful of events the normal approximation puts
/// it above 0 too early, which is why harm has its own exact test.
pub(crate) fn describe_one_sided(rates: &RateComparison, confidence: f64) -> String {
    format!(
        "{} vs {}, difference {}, at most {} ({:.0}% confidence sequence, {:.2} SE); e-value for worse {}",
        pct(rates.candidate_rate),
        pct(rates.baseline_rate),
        pct(rates.difference),
        pct(rates.interval.upper),
        confidence * 100.0,
        rates.multiplier,
        e_text(rates.worse_e_value),
    )
}

/// Harm shown: the e-value against "no worse" reached 1/alpha.
pub(crate) fn worse(rates: &RateComparison, tuning: &Tuning) -> bool {
    rates.worse_e_value >= 1.0 / tuning.alpha
}

pub(crate) fn totals(intervals: &[Pair]) -> (f64, f64) {
    intervals.iter().fold((0.0, 0.0), |(c, b), p| {
        (c + p.candidate.trials, b + p.baseline.trials)
    })
}

#[cfg(test)]
mod tests {
    use super::super::analyse;
    use super::super::dataset::MetricNames;
    use super::super::model::{Metric, Source};
    use super::super::testdata::{dataset, settings, window};
    use super::*;

    #[test]
    fn ten_percent_aborts_on_the_canary_roll_back() {
        let report = analyse("http://p", window(), settings(), &dataset(10.0, "5"));
        assert_eq!(report.verdict, Verdict::RollBack);
        assert_eq!(report.exit_code, 4);
        let errors = &report.comparisons[0].checks[0];
        assert_eq!(
            (errors.metric, errors.source),
            (Metric::ErrorRate, Source::Gateway)
        );
        let rates = errors.rates.unwrap();
        assert_eq!((rates.candidate_rate, rates.baseline_rate), (0.1, 0.0));
        assert!(
            errors.detail.contains("10.00% vs 0.00%"),
            "{}",
            errors.detail
        );
    }

    #[test]
    fn a_healthy_canary_is_not_rolled_back() {
        let report = analyse("http://p", window(), settings(), &dataset(0.0, "5"));
        // 0 errors in 100 canary requests (and 900 on stable): the sequence
        // still reaches past the tolerated 2% increase, so the honest
        // answer is hold, not promote. Its upper end, where the score at
        // delta (q1 = delta, q0 = 0 under the restriction) meets c(90) =
        // 3.959: z = -90 delta / sqrt(8100 delta (1 - delta) / 100) =
        // -10 sqrt(delta / (1 - delta)), so delta = 3.959^2 / (100 +
        // 3.959^2) = 13.55%. A single-look Newcombe interval said 3.7%.
        assert_eq!(report.verdict, Verdict::Hold);
        let errors = &report.comparisons[0].checks[0];
        let upper = errors.rates.unwrap().interval.upper;
        assert!((upper - 0.1355).abs() < 1e-4, "{}", errors.detail);
        let mut relaxed = settings();
        relaxed.max_error_increase = 0.14;
        let report = analyse("http://p", window(), relaxed, &dataset(0.0, "5"));
        assert_eq!(report.verdict, Verdict::Promote);
        assert_eq!(report.exit_code, 0);
    }

    #[test]
    fn too_little_traffic_is_insufficient_data() {
        let mut strict = settings();
        strict.min_requests = 500.0;
        let report = analyse("http://p", window(), strict, &dataset(0.0, "5"));
        assert_eq!(report.verdict, Verdict::InsufficientData);
        assert_eq!(report.exit_code, 5);
        let empty = Dataset::new(
            MetricNames {
                prefix: String::new(),
            },
            vec![],
        );
        let report = analyse("http://p", window(), settings(), &empty);
        assert_eq!(report.verdict, Verdict::InsufficientData);
        let errors = &report.comparisons[0].checks[0];
        assert_eq!(
            errors.detail, "no traffic: no requests on either arm",
            "distinct from too few"
        );
    }

    // The reasons say how many of how many; 100 canary requests against a
    // minimum of 500, 900 stable ones.
    #[test]
    fn insufficient_data_says_how_many_of_how_many() {
        let mut strict = settings();
        strict.min_requests = 500.0;
        let report = analyse("http://p", window(), strict, &dataset(0.0, "5"));
        let errors = &report.comparisons[0].checks[0];
        assert!(
            errors
                .detail
                .starts_with("insufficient data: 100 of 500 candidate requests, 900 of 500 stable"),
            "{}",
            errors.detail
        );
        let only_stable = [Pair {
            candidate: Counts::new(0.0, 0.0),
            baseline: Counts::new(0.0, 900.0),
        }];
        let check = error_check(
            &settings(),
            &only_stable,
            &tuning(&settings(), 1.0),
            Source::Gateway,
            "",
        );
        assert_eq!(check.outcome, Verdict::InsufficientData);
        assert_eq!(
            check.detail,
            "no traffic on canary: 0 requests there, 900 on stable"
        );
    }

    // 10 of 100 canary requests failed, none of 900 on stable: the evidence
    // is clear (e-value 4.1e8, see stats::harm), so a minimum of 500
    // requests per arm does not turn it into "insufficient data".
    #[test]
    fn a_clear_roll_back_needs_no_minimum_sample() {
        let mut strict = settings();
        strict.min_requests = 500.0;
        let report = analyse("http://p", window(), strict, &dataset(10.0, "5"));
        let errors = &report.comparisons[0].checks[0];
        assert_eq!(errors.outcome, Verdict::RollBack, "{}", errors.detail);
        assert!(errors.rates.unwrap().worse_e_value > 4e8);
    }

    #[test]
    fn shadow_is_compared_on_its_sidecar_and_gates_on_request() {
        let mut both = settings();
        both.gate = Gate::Both;
        both.min_requests = 10.0;
        let report = analyse("http://p", window(), both, &dataset(0.0, "5"));
        let shadow = report
            .comparisons
            .iter()
            .find(|c| c.candidate == Role::Shadow)
            .unwrap();
        assert!(shadow.gating);
        let spam = shadow
            .checks
            .iter()
            .find(|c| c.metric == Metric::SpamRatio)
            .unwrap();
        // v3 says spam 13% of the time, like v1: no shift.
        assert_eq!(spam.rates.unwrap().candidate_rate, 0.13);
        assert_eq!(spam.outcome, Verdict::Promote);
        // v3 has no latency histogram here.
        let latency = shadow
            .checks
            .iter()
            .find(|c| c.metric == Metric::Latency)
            .unwrap();
        assert_eq!(latency.outcome, Verdict::InsufficientData);
        assert_eq!(report.verdict, Verdict::InsufficientData);
    }
}
