//! Sample ratio mismatch: are new users split between the cohorts as the
//! configured weights say? A broken assignment (a cookie lost on one path,
//! a filter that fails open for some users, a redirect only one version
//! sends) biases every other comparison, so it is checked first, as
//! GrowthBook and Microsoft's experimentation platform do.
//!
//! Pearson's chi-square goodness of fit with one degree of freedom (two
//! cohorts). Over several intervals with different weights (the rollout's
//! steps) the deviations are summed before squaring: U = sum(O_k - N_k w_k),
//! V = sum(N_k w_k (1 - w_k)), chi-square = U^2 / V, which for one interval
//! is exactly Pearson's statistic and keeps a steady shortfall of canary
//! users from being diluted across steps.

use serde::Serialize;
use statrs::distribution::{ChiSquared, ContinuousCDF};

/// New users of one interval, and the canary's configured share of them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Assignment {
    pub canary: f64,
    pub stable: f64,
    /// Configured canary weight, as a fraction of new users.
    pub canary_share: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SampleRatio {
    pub canary: f64,
    pub stable: f64,
    /// Canary users the weights lead one to expect.
    pub expected_canary: f64,
    pub chi_square: f64,
    pub p_value: f64,
}

/// `None` until some interval with a weight strictly between 0 and 1 has
/// new users (at 0 or 100 % there is nothing to mismatch).
pub fn sample_ratio(intervals: &[Assignment]) -> Option<SampleRatio> {
    let mut deviation = 0.0;
    let mut variance = 0.0;
    let mut expected_canary = 0.0;
    let (mut canary, mut stable) = (0.0, 0.0);
    for a in intervals
        .iter()
        .filter(|a| a.canary_share > 0.0 && a.canary_share < 1.0)
    {
        let n = a.canary + a.stable;
        deviation += a.canary - n * a.canary_share;
        variance += n * a.canary_share * (1.0 - a.canary_share);
        expected_canary += n * a.canary_share;
        canary += a.canary;
        stable += a.stable;
    }
    if variance <= 0.0 {
        return None;
    }
    let chi_square = deviation * deviation / variance;
    let p_value = ChiSquared::new(1.0).ok()?.sf(chi_square);
    Some(SampleRatio {
        canary,
        stable,
        expected_canary,
        chi_square,
        p_value,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::close;
    use super::*;

    // 2,000 new users at 50/50 and a canary 10 % short (900 vs 1,100): by
    // hand chi-square = 100^2/1000 + 100^2/1000 = 20; R's
    // chisq.test(c(900, 1100), p = c(0.5, 0.5)) gives X-squared = 20,
    // p-value = 7.744e-06 (pchisq(20, 1, lower.tail = FALSE)).
    #[test]
    fn a_canary_ten_percent_short_at_2000_users() {
        let r = sample_ratio(&[Assignment {
            canary: 900.0,
            stable: 1100.0,
            canary_share: 0.5,
        }])
        .unwrap();
        assert!(close(r.chi_square, 20.0, 1e-12));
        assert!(close(r.p_value, 7.744216e-6, 1e-11), "{r:?}");
        assert_eq!(r.expected_canary, 1000.0);
    }

    // 90/10 with 1,000 users, 88 in canary: chi-square = 12^2/100 + 12^2/900
    // = 1.6; pchisq(1.6, 1, lower.tail = FALSE) = 0.2059032. Over two
    // intervals, 45 of 100 at 50 % and 83 of 900 at 10 %, the deviations
    // add: (45 - 50) + (83 - 90) = -12 against V = 100 * 0.25 + 900 * 0.09
    // = 106: chi-square = 144/106.
    #[test]
    fn deviations_add_up_across_intervals() {
        let one = sample_ratio(&[Assignment {
            canary: 88.0,
            stable: 912.0,
            canary_share: 0.1,
        }])
        .unwrap();
        assert!(close(one.chi_square, 1.6, 1e-12));
        assert!(close(one.p_value, 0.2059032, 1e-7), "{one:?}");
        let two = sample_ratio(&[
            Assignment {
                canary: 45.0,
                stable: 55.0,
                canary_share: 0.5,
            },
            Assignment {
                canary: 83.0,
                stable: 817.0,
                canary_share: 0.1,
            },
        ])
        .unwrap();
        assert!(close(two.chi_square, 144.0 / 106.0, 1e-12));
        assert!(
            sample_ratio(&[Assignment {
                canary: 0.0,
                stable: 50.0,
                canary_share: 0.0,
            }])
            .is_none()
        );
    }
}
