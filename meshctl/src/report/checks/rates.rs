//! The error rate and the spam ratio: candidate minus stable, by the
//! confidence sequence; a roll-back on the error rate by the exact e-value.

use super::super::format::pct;
use super::super::model::{Check, Metric, Settings, Source, Verdict};
use super::super::stats::sequential::{self, Pair, Tuning};
use super::{describe, describe_one_sided, shortfall, totals, worse};

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

#[cfg(test)]
mod tests {
    use super::super::super::stats::sequential::Counts;
    use super::super::super::testdata::settings;
    use super::super::tuning;
    use super::*;

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
}
