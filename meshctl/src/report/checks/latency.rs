//! Latency: the share of requests above stable's p95 bound, candidate
//! against stable, with the p95 tolerance; the rank test shown alongside.

use super::super::dataset::Evidence;
use super::super::format::millis;
use super::super::model::{
    Check, LatencyComparison, Metric, Settings, Source, TailComparison, Verdict,
};
use super::super::stats::quantile::{Bucket, Histogram, coalesce};
use super::super::stats::sequential::{self, Counts, Pair, Tuning};
use super::super::stats::{self, finite};
use super::{describe_one_sided, shortfall, worse};

fn sum_histograms<'a>(histograms: impl Iterator<Item = &'a Histogram>) -> Histogram {
    // Equal bounds add up; every interval has the same bucket layout (the
    // proxies' histogram settings).
    Histogram::from_buckets(histograms.flat_map(|h| h.buckets().to_vec()).collect())
}

/// Per interval, the requests of each arm above a bound at or above
/// stable's p95, and the latest bound. The bound comes from stable's
/// histogram of the intervals before (the first interval, and a report's
/// single window, use their own): fixed before the interval's data, it
/// cannot favour either arm. Also returns stable's histogram over every
/// interval, the same as `sum_histograms` of them.
fn tail_strata(intervals: &[Evidence]) -> (Vec<Pair>, Option<f64>, Histogram) {
    let mut strata = Vec::new();
    let mut bound = None;
    // Stable's buckets so far, carried on rather than re-summed at every
    // interval (the engine re-judges all intervals at each check), in
    // `sum_histograms`' order; the monotonic pass waits for use, as it does
    // not commute with adding histograms of different bucket layouts.
    let mut before: Vec<Bucket> = Vec::new();
    for e in intervals {
        let summed = Histogram::from_buckets(before.clone());
        let reference = if summed.count() > 0.0 {
            summed
        } else {
            e.baseline.latency.clone()
        };
        before.extend_from_slice(e.baseline.latency.buckets());
        before = coalesce(before);
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
    (strata, bound, Histogram::from_buckets(before))
}

/// Roll back when the candidate's share of requests above stable's p95
/// bound is higher with confidence (the e-value for "worse" reaches
/// 1/alpha), and its p95 grows by more than the tolerance (tests find sub-millisecond
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
    let (strata, bound, baseline) = tail_strata(intervals);
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

#[cfg(test)]
mod tests {
    use super::super::super::analyse;
    use super::super::super::dataset::Arm;
    use super::super::super::testdata::{dataset, settings, window};
    use super::super::tuning;
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
}
