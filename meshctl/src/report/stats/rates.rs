//! Two proportions at a fixed sample size (error rate, spam ratio, the share
//! of slow requests): the pooled two-proportion z-test (the same statistic as
//! R's `prop.test(correct = FALSE)`, whose X-squared is z^2) for the p-value,
//! and Newcombe's hybrid score interval (his method 10, built on Wilson score
//! intervals) for the difference: it keeps its coverage at rates near 0, where
//! error rates live and the Wald interval collapses to a point.

use serde::Serialize;
use statrs::distribution::{ContinuousCDF, Normal};

fn standard_normal() -> Normal {
    Normal::standard()
}

/// The two-sided critical value for `confidence` (0.95 -> 1.959964).
pub fn z_critical(confidence: f64) -> f64 {
    standard_normal().inverse_cdf(1.0 - (1.0 - confidence) / 2.0)
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    pub lower: f64,
    pub upper: f64,
}

/// Wilson's score interval for `x` successes in `n` trials; `None` when
/// `n == 0`.
pub fn wilson(x: f64, n: f64, z: f64) -> Option<Interval> {
    if n <= 0.0 || x < 0.0 || x > n {
        return None;
    }
    let p = x / n;
    let z2 = z * z;
    let denominator = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denominator;
    let half = z / denominator * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    Some(Interval {
        lower: (centre - half).max(0.0),
        upper: (centre + half).min(1.0),
    })
}

/// Newcombe's hybrid score interval for `x1/n1 - x2/n2`.
pub fn newcombe(x1: f64, n1: f64, x2: f64, n2: f64, z: f64) -> Option<Interval> {
    let (w1, w2) = (wilson(x1, n1, z)?, wilson(x2, n2, z)?);
    let (p1, p2) = (x1 / n1, x2 / n2);
    let d = p1 - p2;
    Some(Interval {
        lower: d - ((p1 - w1.lower).powi(2) + (w2.upper - p2).powi(2)).sqrt(),
        upper: d + ((w1.upper - p1).powi(2) + (p2 - w2.lower).powi(2)).sqrt(),
    })
}

/// Pooled two-proportion z-test of `x1/n1` against `x2/n2`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ZTest {
    pub z: f64,
    /// H1: the rates differ.
    pub p_two_sided: f64,
    /// H1: the first rate is higher.
    pub p_greater: f64,
}

pub fn two_proportion_z(x1: f64, n1: f64, x2: f64, n2: f64) -> Option<ZTest> {
    if n1 <= 0.0 || n2 <= 0.0 {
        return None;
    }
    let pooled = (x1 + x2) / (n1 + n2);
    let se = (pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)).sqrt();
    if se == 0.0 {
        // Both rates 0 (or both 1): no evidence of any difference.
        return Some(ZTest {
            z: 0.0,
            p_two_sided: 1.0,
            p_greater: 0.5,
        });
    }
    let z = (x1 / n1 - x2 / n2) / se;
    let normal = standard_normal();
    Some(ZTest {
        z,
        p_two_sided: (2.0 * normal.sf(z.abs())).min(1.0),
        p_greater: normal.sf(z),
    })
}

/// A candidate's rate against a baseline's, with everything the verdict and
/// the tables need.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RateComparison {
    pub candidate: f64,
    pub candidate_n: f64,
    pub baseline: f64,
    pub baseline_n: f64,
    pub candidate_rate: f64,
    pub baseline_rate: f64,
    /// candidate rate - baseline rate.
    pub difference: f64,
    /// Newcombe interval for the difference at the report's confidence.
    pub interval: Interval,
    pub test: ZTest,
}

pub fn compare_rates(
    candidate: (f64, f64),
    baseline: (f64, f64),
    confidence: f64,
) -> Option<RateComparison> {
    let (x1, n1) = candidate;
    let (x2, n2) = baseline;
    let interval = newcombe(x1, n1, x2, n2, z_critical(confidence))?;
    let test = two_proportion_z(x1, n1, x2, n2)?;
    Some(RateComparison {
        candidate: x1,
        candidate_n: n1,
        baseline: x2,
        baseline_n: n2,
        candidate_rate: x1 / n1,
        baseline_rate: x2 / n2,
        difference: x1 / n1 - x2 / n2,
        interval,
        test,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance
    }

    #[test]
    fn z_critical_for_95_percent() {
        // Standard normal table: z_{0.975} = 1.959964.
        assert!(close(z_critical(0.95), 1.959964, 1e-6));
    }

    // Newcombe (1998a), "Two-sided confidence intervals for the single
    // proportion: comparison of seven methods", Stat Med 17:857-872, Table I,
    // method 3 (Wilson score, no continuity correction).
    #[test]
    fn wilson_matches_newcombe_1998_table() {
        let z = z_critical(0.95);
        for (x, n, lower, upper) in [
            (81.0, 263.0, 0.2553, 0.3662),
            (15.0, 148.0, 0.0624, 0.1605),
            (0.0, 20.0, 0.0, 0.1611),
            (1.0, 29.0, 0.0061, 0.1718),
        ] {
            let w = wilson(x, n, z).unwrap();
            assert!(close(w.lower, lower, 5e-5), "{x}/{n}: {w:?}");
            assert!(close(w.upper, upper, 5e-5), "{x}/{n}: {w:?}");
        }
        assert!(wilson(1.0, 0.0, z).is_none());
        assert!(wilson(3.0, 2.0, z).is_none());
    }

    // Newcombe (1998b), "Interval estimation for the difference between
    // independent proportions: comparison of eleven methods", Stat Med
    // 17:873-890, Table II, method 10 (hybrid score, no continuity correction).
    #[test]
    fn newcombe_matches_newcombe_1998_table() {
        let z = z_critical(0.95);
        for (x1, n1, x2, n2, lower, upper) in [
            (56.0, 70.0, 48.0, 80.0, 0.0524, 0.3339),
            (9.0, 10.0, 3.0, 10.0, 0.1705, 0.8090),
            (5.0, 56.0, 0.0, 29.0, -0.0381, 0.1926),
            (0.0, 10.0, 0.0, 20.0, -0.1611, 0.2775),
            (0.0, 10.0, 0.0, 10.0, -0.2775, 0.2775),
            (10.0, 10.0, 0.0, 20.0, 0.6791, 1.0),
            (10.0, 10.0, 0.0, 10.0, 0.6075, 1.0),
        ] {
            let i = newcombe(x1, n1, x2, n2, z).unwrap();
            assert!(close(i.lower, lower, 5e-5), "{x1}/{n1}-{x2}/{n2}: {i:?}");
            assert!(close(i.upper, upper, 5e-5), "{x1}/{n1}-{x2}/{n2}: {i:?}");
        }
    }

    // 56/70 vs 48/80 by hand: pooled p = 104/150, SE = sqrt(p(1-p)(1/70 +
    // 1/80)) = 0.0754670, z = 0.2/SE = 2.650172, so R's
    // prop.test(c(56, 48), c(70, 80), correct = FALSE) reports X-squared =
    // z^2 = 7.0234 and p-value = 2 * (1 - Phi(z)) = 0.008045.
    #[test]
    fn two_proportion_z_by_hand() {
        let t = two_proportion_z(56.0, 70.0, 48.0, 80.0).unwrap();
        assert!(close(t.z, 2.650172, 1e-6));
        assert!(close(t.z * t.z, 7.0234, 1e-4));
        assert!(close(t.p_two_sided, 0.008045, 1e-6));
        assert!(close(t.p_greater, 0.0040225, 1e-6));
        let reversed = two_proportion_z(48.0, 80.0, 56.0, 70.0).unwrap();
        assert!(close(reversed.p_greater, 1.0 - 0.0040225, 1e-6));
    }

    #[test]
    fn two_proportion_z_without_variance_is_no_evidence() {
        let t = two_proportion_z(0.0, 50.0, 0.0, 500.0).unwrap();
        assert_eq!((t.z, t.p_two_sided), (0.0, 1.0));
        assert!(two_proportion_z(0.0, 0.0, 1.0, 10.0).is_none());
    }

    #[test]
    fn compare_rates_puts_candidate_first() {
        let c = compare_rates((56.0, 70.0), (48.0, 80.0), 0.95).unwrap();
        assert!(close(c.difference, 0.2, 1e-12));
        assert!(close(c.interval.lower, 0.0524, 5e-5));
        assert!(c.test.p_greater < 0.005);
    }

    // Candidate x = {1,2,2,3,3,3,4}, baseline y = {1,1,2,2,3} (bins 1..4).
    // By hand from midranks of the 12 pooled values: ranks 1: 2, 2: 5.5,
    // 3: 9.5, 4: 12; R_x = 2 + 2(5.5) + 3(9.5) + 12 = 53.5, U = 53.5 - 28 =
    // 25.5, A = 25.5/35 = 0.728571. Ties 3,4,4,1: sum(t^3 - t) = 24+60+60 =
    // 144; Var = 35/12 (13 - 144/132) = 34.734848; z = (25.5 - 17.5) /
    // sqrt(Var) = 1.357398; one-sided p = 1 - Phi(z) = 0.087327.
}
