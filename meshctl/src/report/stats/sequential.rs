//! Confidence sequences for the difference of two proportions (error rate,
//! spam ratio, share of slow requests), valid at every look: the report may
//! be re-run on a growing window and the rollout checks at every interval,
//! and the chance that the sequence ever misses the true difference stays
//! at most alpha.
//!
//! The boundary is Robbins' normal mixture (Howard, Ramdas, McAuliffe and
//! Sekhon 2021) in the standardised form of the asymptotic
//! confidence sequences of Waudby-Smith, Arbour, Sinha, Kennedy and Ramdas
//! ("Time-uniform central limit theory and asymptotic confidence sequences",
//! Ann. Statist. 2024), the method GrowthBook ships: a statistic Z_t with
//! unit variance per effective observation stays inside
//!
//! ```text
//! |Z_t| < c(t) = sqrt( 2 (t + rho) / t * ln( sqrt((t + rho) / rho) / alpha ) )
//! ```
//!
//! for all t at once with probability 1 - alpha. `rho` sets where the
//! sequence is narrowest; [`rho_for`] is Waudby-Smith's `best_rho2_approx`.
//!
//! The statistic is a score: for a hypothesised difference delta, the
//! variance comes from the two rates that fit the data best under that
//! difference (the restricted maximum likelihood of Farrington and Manning
//! 1990, Miettinen and Nurminen 1985). A plug-in variance would be 0 at 0
//! errors and claim certainty; the score's variance under delta > 0 is not,
//! so 0 errors against 0 errors is evidence, and a few canary errors against
//! none on stable are compared without a division by zero.
//!
//! Data come in strata (the rollout's check intervals; one for a report).
//! Each stratum contributes its difference with the Mantel-Haenszel weight
//! n1 n0 / (n1 + n0), so a change of the canary's weight between steps, or a
//! base rate that drifts over the day, compares each interval's canary with
//! the same interval's stable instead of mixing periods. At delta = 0 the
//! score is the Cochran-Mantel-Haenszel statistic.

use serde::Serialize;

/// Events out of trials (errors of requests, spam of predictions, slow
/// requests of timed ones).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Counts {
    pub events: f64,
    pub trials: f64,
}

impl Counts {
    pub fn new(events: f64, trials: f64) -> Counts {
        Counts { events, trials }
    }

    pub fn rate(&self) -> Option<f64> {
        (self.trials > 0.0).then(|| self.events / self.trials)
    }

    fn add(self, other: Counts) -> Counts {
        Counts::new(self.events + other.events, self.trials + other.trials)
    }
}

/// The candidate and the baseline over one stratum.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Pair {
    pub candidate: Counts,
    pub baseline: Counts,
}

/// How wide the sequence is, and where it is narrowest.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Tuning {
    /// Miss probability over all looks together.
    pub alpha: f64,
    /// Mixture parameter, in effective observations.
    pub rho: f64,
    /// Requests and errors are counted per request, but each user sends
    /// many: the variance is multiplied by this design effect (1 = the
    /// requests are independent).
    pub design_effect: f64,
}

/// The `rho` that makes the boundary narrowest near `t_opt` effective
/// observations (Waudby-Smith et al., `best_rho2_approx`, whose rho^2 is
/// 1 / rho here): rho = t_opt / (2 ln(1/alpha) + ln(1 + 2 ln(1/alpha))).
pub fn rho_for(t_opt: f64, alpha: f64) -> f64 {
    let l = 2.0 * (1.0 / alpha).ln();
    t_opt / (l + (1.0 + l).ln())
}

/// The normal-mixture multiplier c(t) above; infinite before any data.
pub fn multiplier(t: f64, rho: f64, alpha: f64) -> f64 {
    if t <= 0.0 {
        return f64::INFINITY;
    }
    (2.0 * (t + rho) / t * (((t + rho) / rho).sqrt() / alpha).ln()).sqrt()
}

/// The rates (candidate, baseline) that maximise the likelihood of one
/// stratum under candidate - baseline = `delta`: Farrington and Manning's
/// closed form (the cubic's root, as SAS documents it for PROC FREQ).
pub fn restricted_mle(pair: &Pair, delta: f64) -> (f64, f64) {
    let (c, b) = (pair.candidate, pair.baseline);
    let p1 = c.events / c.trials;
    let p0 = b.events / b.trials;
    let theta = b.trials / c.trials;
    let a = 1.0 + theta;
    let bb = -(1.0 + theta + p1 + theta * p0 + delta * (theta + 2.0));
    let cc = delta * delta + delta * (2.0 * p1 + theta + 1.0) + p1 + theta * p0;
    let d = -p1 * delta * (1.0 + delta);
    let v = bb.powi(3) / (27.0 * a.powi(3)) - bb * cc / (6.0 * a * a) + d / (2.0 * a);
    let u = (bb * bb / (9.0 * a * a) - cc / (3.0 * a)).max(0.0).sqrt() * v.signum();
    let w = if u == 0.0 {
        std::f64::consts::FRAC_PI_3
    } else {
        (std::f64::consts::PI + (v / u.powi(3)).clamp(-1.0, 1.0).acos()) / 3.0
    };
    let q1 = (2.0 * u * w.cos() - bb / (3.0 * a)).clamp(delta.max(0.0), (1.0 + delta).min(1.0));
    (q1, q1 - delta)
}

/// Sum over strata of the weighted differences from `delta`, its variance,
/// and the effective sample size (the sum of the weights).
fn score(strata: &[Pair], delta: f64) -> (f64, f64, f64) {
    let mut s = 0.0;
    let mut v = 0.0;
    let mut n = 0.0;
    for pair in strata
        .iter()
        .filter(|p| p.candidate.trials > 0.0 && p.baseline.trials > 0.0)
    {
        let (n1, n0) = (pair.candidate.trials, pair.baseline.trials);
        let w = n1 * n0 / (n1 + n0);
        let d = pair.candidate.events / n1 - pair.baseline.events / n0;
        let (q1, q0) = restricted_mle(pair, delta);
        s += w * (d - delta);
        v += w * w * (q1 * (1.0 - q1) / n1 + q0 * (1.0 - q0) / n0);
        n += w;
    }
    (s, v, n)
}

/// Candidate against baseline over every stratum so far.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RateComparison {
    /// Candidate events and trials, summed over the strata.
    pub candidate: f64,
    pub candidate_n: f64,
    pub baseline: f64,
    pub baseline_n: f64,
    pub candidate_rate: f64,
    pub baseline_rate: f64,
    /// Mantel-Haenszel estimate of candidate rate - baseline rate (the plain
    /// difference with one stratum).
    pub difference: f64,
    /// The confidence sequence for the difference at this look.
    pub interval: Interval,
    /// Effective observations: sum of n1 n0 / (n1 + n0), divided by the
    /// design effect.
    pub effective_n: f64,
    /// c(t) at this look: how many standard errors the sequence spans.
    pub multiplier: f64,
    pub design_effect: f64,
    /// Evidence that the candidate's rate is higher, exact at few events
    /// (`stats::harm`): a roll-back needs at least 1/alpha.
    pub worse_e_value: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    pub lower: f64,
    pub upper: f64,
}

/// The standardised score at `delta`: positive when the candidate's rate
/// lies above baseline + delta.
fn z(strata: &[Pair], delta: f64, design_effect: f64) -> f64 {
    let (s, v, _) = score(strata, delta);
    if v <= 0.0 {
        0.0
    } else {
        s / (v * design_effect).sqrt()
    }
}

/// The delta in [lo, hi] where `f` changes sign (f(lo) > 0 >= f(hi));
/// bisection to 2e-12, well below any rate the report prints.
fn root(lo: f64, hi: f64, f: impl Fn(f64) -> f64) -> f64 {
    let (mut lo, mut hi) = (lo, hi);
    for _ in 0..40 {
        let mid = (lo + hi) / 2.0;
        if f(mid) > 0.0 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (lo + hi) / 2.0
}

/// The confidence sequence at this look, or `None` before both arms have
/// trials in a common stratum.
pub fn compare(strata: &[Pair], tuning: &Tuning) -> Option<RateComparison> {
    let (s0, _, n) = score(strata, 0.0);
    if n <= 0.0 {
        return None;
    }
    let deff = tuning.design_effect.max(1.0);
    let effective_n = n / deff;
    let c = multiplier(effective_n, tuning.rho, tuning.alpha);
    let difference = s0 / n;
    // z(delta) falls as delta grows: the sequence is where |z| < c.
    let lower = if z(strata, -1.0 + 1e-12, deff) <= c {
        -1.0
    } else {
        root(-1.0 + 1e-12, difference, |d| z(strata, d, deff) - c)
    };
    let upper = if z(strata, 1.0 - 1e-12, deff) >= -c {
        1.0
    } else {
        root(difference, 1.0 - 1e-12, |d| z(strata, d, deff) + c)
    };
    let total = strata.iter().fold(Pair::default(), |t, p| Pair {
        candidate: t.candidate.add(p.candidate),
        baseline: t.baseline.add(p.baseline),
    });
    Some(RateComparison {
        candidate: total.candidate.events,
        candidate_n: total.candidate.trials,
        baseline: total.baseline.events,
        baseline_n: total.baseline.trials,
        candidate_rate: total.candidate.rate().unwrap_or(0.0),
        baseline_rate: total.baseline.rate().unwrap_or(0.0),
        difference,
        interval: Interval { lower, upper },
        effective_n,
        multiplier: c,
        design_effect: deff,
        worse_e_value: super::harm::e_value(strata, deff),
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{close, pair};
    use super::*;

    fn tuning(rho: f64) -> Tuning {
        Tuning {
            alpha: 0.05,
            rho,
            design_effect: 1.0,
        }
    }

    // Waudby-Smith's reference functions (R package drconfseq,
    // `best_rho2_approx` and `std_conjmix_margin`) at t_opt = t = 1000,
    // alpha = 0.05, worked out: l = 2 ln 20 = 5.991465, rho2 = (l + ln(1 +
    // l)) / 1000 = (5.991465 + 1.944689) / 1000 = 0.007936155; margin =
    // sqrt(2 (t rho2 + 1) ln(sqrt(t rho2 + 1) / alpha) / (t^2 rho2)) =
    // sqrt(2 * 8.936155 * 4.090784 / 7936.155) = 0.0959817, i.e. c =
    // margin * sqrt(t) = 3.035209 standard errors (1.96 at a single look).
    #[test]
    fn boundary_matches_the_reference_implementation() {
        let rho = rho_for(1000.0, 0.05);
        assert!(close(1.0 / rho, 0.007936155, 1e-9), "{rho}");
        let c = multiplier(1000.0, rho, 0.05);
        assert!(close(c / 1000f64.sqrt(), 0.0959817, 1e-7), "{c}");
        assert!(close(c, 3.035209, 1e-6), "{c}");
        // Narrowest near t_opt: wider both well before and well after.
        assert!(multiplier(100.0, rho, 0.05) > c);
        assert!(multiplier(100_000.0, rho, 0.05) > c);
        assert_eq!(multiplier(0.0, rho, 0.05), f64::INFINITY);
    }

    // The restricted maximum likelihood against a brute-force search of
    // the log-likelihood along q1 - q0 = delta (200,001 grid points, done
    // once in Python): 56/70 and 48/80 at delta 0.1 -> (0.751546,
    // 0.651546); 5/56 and 0/29 at delta 0.02 -> (0.059244, 0.039244);
    // 3/100 and 1/100 at delta -0.03 -> (0.016572, 0.046572). At delta = 0
    // it is the pooled rate; with no events the baseline sits at 0.
    #[test]
    fn restricted_mle_matches_a_brute_force_search() {
        for (p, delta, q1, q0) in [
            (pair(56.0, 70.0, 48.0, 80.0), 0.1, 0.751546, 0.651546),
            (pair(5.0, 56.0, 0.0, 29.0), 0.02, 0.059244, 0.039244),
            (pair(3.0, 100.0, 1.0, 100.0), -0.03, 0.016572, 0.046572),
            (pair(10.0, 100.0, 0.0, 900.0), 0.0, 0.01, 0.01),
            (pair(0.0, 300.0, 0.0, 300.0), 0.02, 0.02, 0.0),
        ] {
            let (a, b) = restricted_mle(&p, delta);
            assert!(close(a, q1, 5e-6) && close(b, q0, 5e-6), "{p:?}: {a} {b}");
        }
    }

    // 0 errors in 300 requests per arm, delta = 0.02: q1 = 0.02, q0 = 0,
    // w = 150, S = -150 * 0.02 = -3, V = 150^2 * 0.02 * 0.98 / 300 = 1.47,
    // z = -3 / sqrt(1.47) = -2.474. The boundary at t = 150 with rho =
    // 126.0 (tightest at 1000) is c = sqrt(2 * 276.0/150 * ln(sqrt(276.0 /
    // 126.0) / 0.05)) = 3.531: 2 points are still inside, so no promotion
    // yet; 5 points (z = -sqrt(300 * 0.05 / 0.95) = -3.974) are outside.
    #[test]
    fn zero_errors_on_both_sides_bound_the_difference() {
        let t = tuning(rho_for(1000.0, 0.05));
        let r = compare(&[pair(0.0, 300.0, 0.0, 300.0)], &t).unwrap();
        assert!(close(r.multiplier, 3.531, 1e-3), "{r:?}");
        assert!(close(
            z(&[pair(0.0, 300.0, 0.0, 300.0)], 0.02, 1.0),
            -2.474,
            1e-3
        ));
        assert_eq!(r.difference, 0.0);
        assert!(r.interval.upper > 0.02 && r.interval.upper < 0.05, "{r:?}");
        assert!(r.interval.lower < -0.02, "symmetric: {r:?}");
        // At the upper end z = -c exactly: sqrt(300 u / (1 - u)) = 3.531.
        let u = r.interval.upper;
        assert!(close((300.0 * u / (1.0 - u)).sqrt(), r.multiplier, 1e-6));
    }

    // 10 errors in 100 canary requests, none in 900 on stable: pooled p =
    // 0.01, w = 90, S = 90 * 0.1 = 9, V = 8100 * 0.0099 * (1/100 + 1/900)
    // = 0.891, z = 9.535: far beyond c(90) = 3.959, so the whole sequence
    // lies above 0. No division by zero with a baseline rate of 0.
    #[test]
    fn a_few_canary_errors_against_none_on_stable() {
        let strata = [pair(10.0, 100.0, 0.0, 900.0)];
        assert!(close(z(&strata, 0.0, 1.0), 9.535, 1e-3));
        let r = compare(&strata, &tuning(rho_for(1000.0, 0.05))).unwrap();
        assert!(close(r.multiplier, 3.959, 1e-3), "{r:?}");
        assert!(r.interval.lower > 0.0, "{r:?}");
        // The ends are where the score reaches the boundary.
        assert!(close(z(&strata, r.interval.lower, 1.0), r.multiplier, 1e-6));
        assert!(close(
            z(&strata, r.interval.upper, 1.0),
            -r.multiplier,
            1e-6
        ));
        assert_eq!((r.candidate_rate, r.baseline_rate), (0.1, 0.0));
        // Nothing to compare yet.
        assert!(compare(&[pair(0.0, 0.0, 0.0, 900.0)], &tuning(126.0)).is_none());
    }

    // Two intervals with different weights and base rates: canary 2/100
    // and 30/1000 against stable 20/1900 and 30/1000. Mantel-Haenszel: w =
    // 95 and 500, d = 0.02 - 0.010526 = 0.009474 and 0; estimate = 95 *
    // 0.009474 / 595 = 0.0015126. Pooling the counts instead would compare
    // 32/1100 = 2.9% with 50/2900 = 1.7% and see a difference that is only
    // the second interval's higher base rate falling more on the canary.
    #[test]
    fn strata_compare_each_interval_with_itself() {
        let strata = [
            pair(2.0, 100.0, 20.0, 1900.0),
            pair(30.0, 1000.0, 30.0, 1000.0),
        ];
        let r = compare(&strata, &tuning(126.0)).unwrap();
        assert!(close(r.difference, 0.0015126, 1e-6), "{r:?}");
        assert!(r.interval.lower < 0.0 && r.interval.upper > 0.0);
        assert_eq!((r.candidate, r.candidate_n), (32.0, 1100.0));
    }

    // A design effect d widens the sequence like a sample d times smaller.
    #[test]
    fn the_design_effect_widens_the_sequence() {
        let strata = [pair(30.0, 1000.0, 20.0, 1000.0)];
        let plain = compare(&strata, &tuning(126.0)).unwrap();
        let mut clustered = tuning(126.0);
        clustered.design_effect = 4.0;
        let wide = compare(&strata, &clustered).unwrap();
        assert!(close(wide.effective_n, plain.effective_n / 4.0, 1e-9));
        assert!(
            wide.interval.upper - wide.interval.lower > plain.interval.upper - plain.interval.lower
        );
        let quarter = compare(&[pair(7.5, 250.0, 5.0, 250.0)], &tuning(126.0)).unwrap();
        assert!(
            close(wide.interval.upper, quarter.interval.upper, 1e-6),
            "{wide:?} {quarter:?}"
        );
    }
}
