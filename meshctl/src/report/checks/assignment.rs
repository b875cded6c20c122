//! Is the assignment itself healthy? New users per cohort against the
//! canary's configured weight (sample ratio mismatch).

use super::super::dataset::Evidence;
use super::super::format::count;
use super::super::model::{Check, Metric, Settings, Source, Verdict};
use super::super::stats::srm::{self, Assignment};

/// Cochran's rule for the chi-square approximation: every expected count
/// at least 5.
const MIN_EXPECTED: f64 = 5.0;

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
    use super::super::super::dataset::Arm;
    use super::super::super::testdata::settings;
    use super::*;

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
}
