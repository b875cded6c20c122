//! "The candidate fails more often than stable", tested exactly at every
//! look: an e-process on the events alone, as Lindon, Sanden and Shirikian
//! ("Rapid regression detection in software deployments through sequential
//! testing", KDD 2022) and Lindon and Malek ("Anytime-valid inference for
//! multinomial count data", NeurIPS 2022) test count data.
//!
//! Within one interval both arms see the same conditions, so under "no
//! worse" each event (an error, a slow request) falls on the candidate with
//! probability at most theta = n1 / (n1 + n0), its share of the interval's
//! requests, whatever the base rate. With rate ratio r the share is
//! theta(r) = r n1 / (r n1 + n0). The likelihood ratio of theta(r) against
//! theta, multiplied over the events of every interval and averaged over a
//! grid of ratios r = 2^(j/4), j = 1..24 (1.19 to 64, equal weights), is a
//! nonnegative supermartingale under every r <= 1; by Ville's inequality it
//! ever reaches 1/alpha with probability at most alpha.
//!
//! Why not the confidence sequence's normal approximation here: its upper
//! tail is far too thin at a handful of events. One canary error in 200
//! requests against none in 4,000 on stable scores z = 4.5, while the
//! chance of that one error landing on the canary is 200/4200 = 4.8 %. The
//! e-value for it is 7.3, well short of 20.
//!
//! Events within an interval are counted given its request totals, so the
//! count on the candidate is hypergeometric rather than binomial; the
//! hypergeometric is smaller in the convex order (Hoeffding 1963, Theorem
//! 4), so the binomial likelihood ratio stays a supermartingale. Clustered
//! requests enter as Rao and Scott's (1992) effective counts: the events
//! divided by the design effect.

use super::sequential::Pair;

/// Rate ratios the alternative mixes over: 2^(1/4) .. 2^6.
fn ratios() -> impl Iterator<Item = f64> {
    (1..=24).map(|j| 2f64.powf(f64::from(j) / 4.0))
}

/// The e-value against "the candidate's rate is at most the baseline's"
/// after `strata`; 1 before any event.
pub fn e_value(strata: &[Pair], design_effect: f64) -> f64 {
    let deff = design_effect.max(1.0);
    let usable: Vec<(f64, f64, f64)> = strata
        .iter()
        .filter(|p| p.candidate.trials > 0.0 && p.baseline.trials > 0.0)
        .map(|p| {
            let theta = p.candidate.trials / (p.candidate.trials + p.baseline.trials);
            (theta, p.candidate.events / deff, p.baseline.events / deff)
        })
        .collect();
    let grid: Vec<f64> = ratios().collect();
    let total: f64 = grid
        .iter()
        .map(|&r| {
            let log: f64 = usable
                .iter()
                .map(|&(theta, x1, x0)| {
                    let shifted = r * theta / (r * theta + 1.0 - theta);
                    x1 * (shifted / theta).ln() + x0 * ((1.0 - shifted) / (1.0 - theta)).ln()
                })
                .sum();
            log.exp()
        })
        .sum();
    total / grid.len() as f64
}

#[cfg(test)]
mod tests {
    use super::super::testing::{close, pair};
    use super::*;

    // One canary error, canary share 1/4: E = mean over r of theta(r) /
    // theta = mean of 4 r / (r + 3), r = 2^(j/4), j = 1..24: 2.769146 (the
    // 24 terms worked one by one in Python's math module, from 4 * 1.189207
    // / 4.189207 = 1.135502 up to 4 * 64 / 67 = 3.820896). Never above
    // 1/theta = 4, however large r.
    #[test]
    fn one_error_is_weak_evidence() {
        let e = e_value(&[pair(1.0, 100.0, 0.0, 300.0)], 1.0);
        assert!(close(e, 2.769146, 1e-6), "{e}");
        assert!(e_value(&[pair(1.0, 200.0, 0.0, 4000.0)], 1.0) < 20.0);
    }

    // Five canary errors in 200 requests, none in 4,000 on stable: each
    // error lands on the canary with probability 0.0476 under "no worse",
    // all five with 2.5e-7; the mixture gives 171,134 (computed term by
    // term as above): a roll-back at alpha = 0.05 needs 20.
    #[test]
    fn a_few_canary_errors_against_none_are_clear() {
        let e = e_value(&[pair(5.0, 200.0, 0.0, 4000.0)], 1.0);
        assert!(close(e / 171_134.2, 1.0, 1e-6), "{e}");
        // Clustered: the same errors as 5 / 4 effective ones weigh less.
        assert!(e_value(&[pair(5.0, 200.0, 0.0, 4000.0)], 4.0) < e);
    }

    // Each interval brings its own share: two intervals, 2 of 100 vs 0 of
    // 300 (theta 1/4), then 1 of 500 vs 1 of 500 (theta 1/2): 2.349786.
    // No events, or a candidate doing better, is no evidence of harm.
    #[test]
    fn intervals_multiply_and_better_is_not_worse() {
        let e = e_value(
            &[pair(2.0, 100.0, 0.0, 300.0), pair(1.0, 500.0, 1.0, 500.0)],
            1.0,
        );
        assert!(close(e, 2.349786, 1e-6), "{e}");
        assert_eq!(e_value(&[pair(0.0, 100.0, 0.0, 900.0)], 1.0), 1.0);
        assert!(e_value(&[pair(0.0, 1000.0, 30.0, 1000.0)], 1.0) < 0.01);
    }
}
