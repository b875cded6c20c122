//! Decision rules: the evidence of one comparison (candidate against
//! stable), over one interval or several, turned into checks whose outcomes
//! are promote, hold, roll back or insufficient data. The report judges its
//! window as one interval; the rollout judges every check interval so far.
//!
//! Every rate is compared with a confidence sequence (`stats::sequential`),
//! so a check may be repeated at every interval: a roll-back needs the
//! whole sequence above "no worse", a promotion the whole sequence below
//! the tolerated increase, and the chance of either being wrong stays
//! within 1 - confidence however often it is looked at.

use std::collections::BTreeSet;

use super::dataset::{Dataset, Evidence};
use super::format::{count, millis};
use super::model::{
    Check, Comparison, Gate, LatencyComparison, Metric, Role, Settings, Source, TailComparison,
    Verdict,
};
use super::stats::quantile::Histogram;
use super::stats::sequential::{self, Counts, Pair, RateComparison, Tuning};
use super::stats::srm::{self, Assignment};
use super::stats::{self, cluster, finite};
use super::traffic::versions;

/// Cochran's rule for the chi-square approximation: every expected count
/// at least 5.
const MIN_EXPECTED: f64 = 5.0;

fn pct(value: f64) -> String {
    format!("{:.2}%", value * 100.0)
}

/// The canary (and shadow) against stable over one window: a comparison per
/// candidate role that gates or that has versions.
pub fn comparisons(settings: &Settings, data: &Dataset) -> Vec<Comparison> {
    let versions = versions(settings, data);
    let versions_with = |role: Role| -> BTreeSet<String> {
        versions
            .iter()
            .filter(|v| settings.roles.get(*v) == Some(&role))
            .cloned()
            .collect()
    };
    let stable = versions_with(Role::Stable);
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
        let candidates = versions_with(candidate);
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
fn shortfall(candidate: f64, baseline: f64, needed: f64, what: &str) -> Option<String> {
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

fn e_text(e: f64) -> String {
    if e >= 1e4 {
        format!("{e:.1e}")
    } else {
        format!("{e:.2}")
    }
}

/// Both rates, the difference and its two-sided confidence sequence.
fn describe(rates: &RateComparison, confidence: f64) -> String {
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
fn describe_one_sided(rates: &RateComparison, confidence: f64) -> String {
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

/// Roll back once the evidence that the candidate fails more often reaches
/// 1/alpha (`stats::harm`, exact at few errors; clear evidence needs no
/// minimum sample); promote once the confidence sequence for candidate -
/// stable lies at or below the tolerated increase (non-inferiority) with at
/// least `min_requests` per arm; hold in between.
pub fn error_check(
    settings: &Settings,
    intervals: &[Pair],
    tuning: &Tuning,
    source: Source,
    clustering: &str,
) -> Check {
    let mut check = Check::undecided(Metric::ErrorRate, source);
    let Some(rates) = sequential::compare(intervals, tuning) else {
        let (c, b) = totals(intervals);
        check.detail = shortfall(c, b, settings.min_requests, "requests").unwrap_or_default();
        return check;
    };
    let tolerance = settings.max_error_increase;
    let short = shortfall(
        rates.candidate_n,
        rates.baseline_n,
        settings.min_requests,
        "requests",
    );
    let evidence = describe_one_sided(&rates, settings.confidence);
    check.outcome = if worse(&rates, tuning) {
        Verdict::RollBack
    } else if short.is_some() {
        Verdict::InsufficientData
    } else if rates.interval.upper <= tolerance {
        Verdict::Promote
    } else {
        Verdict::Hold
    };
    check.detail = match (check.outcome, short) {
        (Verdict::InsufficientData, Some(short)) => format!("{short}; {evidence}"),
        _ => format!(
            "{evidence}; {clustering}; roll back at e >= {:.0}, promote at or below +{}",
            1.0 / tuning.alpha,
            pct(tolerance)
        ),
    };
    check.rates = Some(rates);
    check
}

/// Harm shown: the e-value against "no worse" reached 1/alpha.
fn worse(rates: &RateComparison, tuning: &Tuning) -> bool {
    rates.worse_e_value >= 1.0 / tuning.alpha
}

fn totals(intervals: &[Pair]) -> (f64, f64) {
    intervals.iter().fold((0.0, 0.0), |(c, b), p| {
        (c + p.candidate.trials, b + p.baseline.trials)
    })
}

/// A guard on the model's behaviour: hold for a human when the spam ratio
/// has shifted by more than the tolerance either way; otherwise pass. Each
/// prediction is one answer of the model, so no design effect applies.
pub fn spam_check(settings: &Settings, intervals: &[Pair], tuning: &Tuning) -> Check {
    let mut check = Check::undecided(Metric::SpamRatio, Source::Sidecar);
    let per_answer = Tuning {
        design_effect: 1.0,
        ..*tuning
    };
    let (c, b) = totals(intervals);
    let rates = sequential::compare(intervals, &per_answer);
    if let Some(short) = shortfall(c, b, settings.min_requests, "predictions") {
        check.detail = match &rates {
            Some(rates) => format!("{short}; {}", describe(rates, settings.confidence)),
            None => short,
        };
        check.rates = rates;
        return check;
    }
    let Some(rates) = rates else {
        return check;
    };
    let tolerance = settings.max_spam_shift;
    let shifted = rates.interval.lower > tolerance || rates.interval.upper < -tolerance;
    check.outcome = if shifted {
        Verdict::Hold
    } else {
        Verdict::Promote
    };
    check.detail = format!(
        "{}; hold beyond +/-{}",
        describe(&rates, settings.confidence),
        pct(tolerance)
    );
    check.rates = Some(rates);
    check
}

fn sum_histograms<'a>(histograms: impl Iterator<Item = &'a Histogram>) -> Histogram {
    // Equal bounds add up; every interval has the same bucket layout (the
    // proxies' histogram settings).
    Histogram::from_buckets(histograms.flat_map(|h| h.buckets().to_vec()).collect())
}

/// Per interval, the requests of each arm above a bound at or above
/// stable's p95, and the latest bound. The bound comes from stable's
/// histogram of the intervals before (the first interval, and a report's
/// single window, use their own): fixed before the interval's data, it
/// cannot favour either arm.
fn tail_strata(intervals: &[Evidence]) -> (Vec<Pair>, Option<f64>) {
    let mut strata = Vec::new();
    let mut bound = None;
    for (k, e) in intervals.iter().enumerate() {
        let before = sum_histograms(intervals[..k].iter().map(|e| &e.baseline.latency));
        let reference = if before.count() > 0.0 {
            before
        } else {
            e.baseline.latency.clone()
        };
        let aligned = stats::align(&e.candidate.latency, &e.baseline.latency);
        let Some(p95) = finite(reference.quantile(0.95)) else {
            continue;
        };
        let Some(&above) = aligned.bounds.iter().find(|b| b.is_finite() && **b >= p95) else {
            continue;
        };
        let (c, b) = aligned.above(above);
        strata.push(Pair {
            candidate: Counts::new(c, aligned.candidate.iter().sum()),
            baseline: Counts::new(b, aligned.baseline.iter().sum()),
        });
        bound = Some(above);
    }
    (strata, bound)
}

/// Roll back when the candidate's share of requests above stable's p95
/// bound is higher with confidence (a confidence sequence above 0), and its
/// p95 grows by more than the tolerance (tests find sub-millisecond
/// differences in large samples; users feel a slowdown of some size).
/// Otherwise pass, once both arms have `min_requests` timed requests. The
/// rank test's A = P(candidate slower) is shown but does not decide: it has
/// no form that stays valid when watched.
pub fn latency_check(
    settings: &Settings,
    intervals: &[Evidence],
    tuning: &Tuning,
    source: Source,
) -> Check {
    let mut check = Check::undecided(Metric::Latency, source);
    let candidate = sum_histograms(intervals.iter().map(|e| &e.candidate.latency));
    let baseline = sum_histograms(intervals.iter().map(|e| &e.baseline.latency));
    let short = shortfall(
        candidate.count(),
        baseline.count(),
        settings.min_requests,
        "timed requests",
    );
    let aligned = stats::align(&candidate, &baseline);
    let Some(test) = stats::mann_whitney_binned(&aligned.candidate, &aligned.baseline) else {
        check.detail = short.unwrap_or_else(|| "the histograms share no bucket bounds".into());
        return check;
    };
    let candidate_p95 = finite(candidate.quantile(0.95));
    let baseline_p95 = finite(baseline.quantile(0.95));
    let (strata, bound) = tail_strata(intervals);
    let tail = bound.and_then(|above_ms| {
        let rates = sequential::compare(&strata, tuning)?;
        Some(TailComparison { above_ms, rates })
    });
    let worse_tail = tail.as_ref().is_some_and(|t| worse(&t.rates, tuning));
    let p95_increase = match (candidate_p95, baseline_p95) {
        (Some(c), Some(b)) => c - b,
        _ => 0.0,
    };
    let slower = worse_tail && p95_increase > settings.max_p95_increase_ms;
    check.outcome = match (slower, &short) {
        (true, _) => Verdict::RollBack,
        (false, Some(_)) => Verdict::InsufficientData,
        (false, None) => Verdict::Promote,
    };
    let tail_text = tail
        .as_ref()
        .map_or("; no bucket bound above stable's p95".to_string(), |t| {
            format!(
                "; above {} ms {}",
                t.above_ms,
                describe_one_sided(&t.rates, settings.confidence),
            )
        });
    let evidence = format!(
        "p95 {} vs {}{tail_text}; P(candidate slower) A = {:.3}",
        millis(candidate_p95),
        millis(baseline_p95),
        test.a,
    );
    check.detail = match (check.outcome, short) {
        (Verdict::InsufficientData, Some(short)) => format!("{short}; {evidence}"),
        _ => format!(
            "{evidence}; roll back on a worse tail with p95 +{} ms",
            settings.max_p95_increase_ms
        ),
    };
    check.latency = Some(LatencyComparison {
        test,
        candidate_p95,
        baseline_p95,
        tail,
    });
    check
}

/// Hold when new users do not split as configured: chi-square p below
/// `srm_p`, judged once there are `min_users` new users and every cohort
/// expects at least 5. Needs the canary's weight and the gateway's user
/// counts; without the weight there is no check.
pub fn srm_check(settings: &Settings, intervals: &[Evidence]) -> Option<Check> {
    let mut check = Check::undecided(Metric::SampleRatio, Source::Gateway);
    let assignments: Vec<Assignment> = intervals
        .iter()
        .filter_map(|e| {
            Some(Assignment {
                canary: e.candidate.new_users?,
                stable: e.baseline.new_users?,
                canary_share: e.canary_share?,
            })
        })
        .collect();
    if intervals.iter().all(|e| e.canary_share.is_none()) {
        return None;
    }
    if assignments.is_empty() {
        check.outcome = Verdict::Promote;
        check.detail =
            "not judged: the gateway reports no new users (sms_cohort_users_total)".into();
        return Some(check);
    }
    let users: f64 = assignments.iter().map(|a| a.canary + a.stable).sum();
    let Some(ratio) = srm::sample_ratio(&assignments) else {
        check.detail = format!(
            "no traffic: {} new users at a 0 or 100% weight",
            count(users)
        );
        return Some(check);
    };
    let expected_stable = users - ratio.expected_canary;
    let split = format!(
        "{} canary / {} stable new users, {} canary expected",
        count(ratio.canary),
        count(ratio.stable),
        count((ratio.expected_canary * 10.0).round() / 10.0),
    );
    if users < settings.min_users || ratio.expected_canary.min(expected_stable) < MIN_EXPECTED {
        check.detail = format!(
            "insufficient data: {} of {} new users (and at least {MIN_EXPECTED} expected per cohort); {split}",
            count(users),
            count(settings.min_users)
        );
    } else {
        let mismatch = ratio.p_value < settings.srm_p;
        check.outcome = if mismatch {
            Verdict::Hold
        } else {
            Verdict::Promote
        };
        check.detail = format!(
            "{split}; chi-square {:.2}, p = {:.2e}{}",
            ratio.chi_square,
            ratio.p_value,
            if mismatch {
                format!(
                    " < {}: users are not split as configured, so no comparison can be trusted",
                    settings.srm_p
                )
            } else {
                format!("; hold below p = {}", settings.srm_p)
            }
        );
    }
    check.sample_ratio = Some(ratio);
    Some(check)
}

#[cfg(test)]
mod tests {
    use super::super::analyse;
    use super::super::dataset::Arm;
    use super::super::dataset::{Dataset, MetricNames};
    use super::super::model::Gate;
    use super::super::stats::quantile::Bucket;
    use super::super::testdata::{dataset, settings, window};
    use super::*;

    /// The latency check of one interval at the gateway.
    fn slow(settings: &Settings, canary: &Histogram, stable: &Histogram) -> Check {
        let evidence = Evidence {
            source: Source::Gateway,
            candidate: Arm {
                latency: canary.clone(),
                ..Arm::default()
            },
            baseline: Arm {
                latency: stable.clone(),
                ..Arm::default()
            },
            canary_share: None,
        };
        latency_check(
            settings,
            &[evidence],
            &tuning(settings, 1.0),
            Source::Gateway,
        )
    }

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
    fn a_slow_canary_is_flagged_on_latency() {
        let report = analyse("http://p", window(), settings(), &dataset(0.0, "100"));
        let latency = report.comparisons[0]
            .checks
            .iter()
            .find(|c| c.metric == Metric::Latency)
            .unwrap();
        assert_eq!(latency.outcome, Verdict::RollBack);
        assert_eq!(latency.latency.as_ref().unwrap().test.a, 1.0);
        assert_eq!(report.verdict, Verdict::RollBack);
    }

    // Every canary request is slower (A = 1) and its p95 grows by 19.2 ms
    // (24 vs 4.8): roll back at the default 10 ms tolerance, pass at 25.
    #[test]
    fn a_small_slowdown_within_the_p95_tolerance_passes() {
        let report = analyse("http://p", window(), settings(), &dataset(0.0, "25"));
        let latency = report.comparisons[0]
            .checks
            .iter()
            .find(|c| c.metric == Metric::Latency)
            .unwrap();
        assert_eq!(
            latency.outcome,
            Verdict::RollBack,
            "25 ms bucket: p95 +19 ms"
        );
        let mut tolerant = settings();
        tolerant.max_p95_increase_ms = 25.0;
        let report = analyse("http://p", window(), tolerant, &dataset(0.0, "25"));
        let latency = report.comparisons[0]
            .checks
            .iter()
            .find(|c| c.metric == Metric::Latency)
            .unwrap();
        assert_eq!(latency.latency.as_ref().unwrap().test.a, 1.0);
        assert_eq!(latency.outcome, Verdict::Promote, "{}", latency.detail);
    }

    // 10 of 100 canary requests delayed past 100 ms, the rest like stable
    // (all 900 in (1, 5]). By hand: A = 0.9 * 0.5 + 0.1 = 0.55, below the
    // effect threshold; but 10/100 vs 0/900 lie above 5 ms (stable's p95
    // 4.8 ms rounded up to a bound), and the canary's p95 is 100 + 150 *
    // 5/10 = 175 ms.
    #[test]
    fn a_worse_tail_alone_rolls_back() {
        let h = |per_bin: &[(f64, f64)]| {
            let mut cumulative = 0.0;
            Histogram::from_buckets(
                per_bin
                    .iter()
                    .map(|&(upper_bound, n)| {
                        cumulative += n;
                        Bucket {
                            upper_bound,
                            count: cumulative,
                        }
                    })
                    .collect(),
            )
        };
        let inf = f64::INFINITY;
        let stable = h(&[
            (1.0, 0.0),
            (5.0, 900.0),
            (100.0, 0.0),
            (250.0, 0.0),
            (inf, 0.0),
        ]);
        let canary = h(&[
            (1.0, 0.0),
            (5.0, 90.0),
            (100.0, 0.0),
            (250.0, 10.0),
            (inf, 0.0),
        ]);
        let check = slow(&settings(), &canary, &stable);
        let latency = check.latency.as_ref().unwrap();
        assert!((latency.test.a - 0.55).abs() < 1e-12);
        assert_eq!(latency.candidate_p95, Some(175.0));
        let tail = latency.tail.as_ref().unwrap();
        assert_eq!(tail.above_ms, 5.0);
        assert_eq!((tail.rates.candidate, tail.rates.baseline), (10.0, 0.0));
        assert_eq!(check.outcome, Verdict::RollBack, "{}", check.detail);
        // The same tail within a generous p95 tolerance passes.
        let mut tolerant = settings();
        tolerant.max_p95_increase_ms = 200.0;
        let check = slow(&tolerant, &canary, &stable);
        assert_eq!(check.outcome, Verdict::Promote);
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

    // Stable has no errors, the canary a few: 5 of 200 against 0 of 4,000
    // is a roll-back (e-value 171,134); 1 of 200 is not yet (7.3, and the
    // canary needs more requests to be promoted). No division by zero
    // either way.
    #[test]
    fn stable_without_errors_and_a_canary_with_a_few() {
        let check = |x1: f64| {
            let strata = [Pair {
                candidate: Counts::new(x1, 200.0),
                baseline: Counts::new(0.0, 4000.0),
            }];
            error_check(
                &settings(),
                &strata,
                &tuning(&settings(), 1.0),
                Source::Gateway,
                "",
            )
        };
        let five = check(5.0);
        assert_eq!(five.outcome, Verdict::RollBack, "{}", five.detail);
        let one = check(1.0);
        assert_eq!(one.outcome, Verdict::Hold, "{}", one.detail);
        let rates = one.rates.unwrap();
        assert_eq!((rates.candidate_rate, rates.baseline_rate), (0.005, 0.0));
        assert!(rates.interval.upper > 0.02, "{}", one.detail);
    }

    fn users(canary: f64, stable: f64, share: Option<f64>) -> Evidence {
        let arm = |new_users: f64| Arm {
            new_users: Some(new_users),
            ..Arm::default()
        };
        Evidence {
            source: Source::Gateway,
            candidate: arm(canary),
            baseline: arm(stable),
            canary_share: share,
        }
    }

    // 900 canary and 1,100 stable new users at 50/50: chi-square 20, p =
    // 7.7e-6 (stats::srm) < 0.001: hold. Below the minimum of users it says
    // how many of how many; without a configured weight there is no check.
    #[test]
    fn a_sample_ratio_mismatch_holds() {
        let check = srm_check(&settings(), &[users(900.0, 1100.0, Some(0.5))]).unwrap();
        assert_eq!(check.outcome, Verdict::Hold, "{}", check.detail);
        assert!(check.detail.contains("p = 7.74e-6"), "{}", check.detail);
        let fine = srm_check(&settings(), &[users(990.0, 1010.0, Some(0.5))]).unwrap();
        assert_eq!(fine.outcome, Verdict::Promote, "{}", fine.detail);
        let few = srm_check(&settings(), &[users(9.0, 81.0, Some(0.1))]).unwrap();
        assert_eq!(few.outcome, Verdict::InsufficientData);
        assert!(
            few.detail
                .starts_with("insufficient data: 90 of 100 new users"),
            "{}",
            few.detail
        );
        assert!(srm_check(&settings(), &[users(9.0, 81.0, None)]).is_none());
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
