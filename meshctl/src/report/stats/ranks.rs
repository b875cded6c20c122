//! Latency as ordered categories: the Mann-Whitney U test on binned data
//! with the tie correction. Histogram buckets are ordered categories, so a
//! rank test fits them without guessing where inside a bucket each request
//! fell (every request of a bucket is one tie group). Unlike a chi-square
//! test of homogeneity over the buckets it is directional (a faster candidate
//! is not flagged) and it comes with an effect size, Vargha and Delaney's
//! A = P(candidate slower) + P(tie) / 2, which keeps huge samples from
//! turning a negligible shift into a roll-back.

use serde::Serialize;
use statrs::distribution::{ContinuousCDF, Normal};

use super::quantile::Histogram;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MannWhitney {
    pub candidate_n: f64,
    pub baseline_n: f64,
    /// U of the candidate sample.
    pub u: f64,
    /// Vargha-Delaney A = U / (n1 n2): P(candidate slower) + P(tie) / 2.
    pub a: f64,
    pub z: f64,
    /// H1: the candidate is stochastically slower.
    pub p_greater: f64,
    pub p_two_sided: f64,
}

/// Mann-Whitney U for two samples binned into the same ordered categories
/// (`candidate[k]`, `baseline[k]` observations in bin `k`), normal
/// approximation with the tie correction and without continuity correction
/// (R's `wilcox.test(exact = FALSE, correct = FALSE)`). `None` when a sample
/// is empty or the bins do not line up.
pub fn mann_whitney_binned(candidate: &[f64], baseline: &[f64]) -> Option<MannWhitney> {
    if candidate.len() != baseline.len() {
        return None;
    }
    let n1: f64 = candidate.iter().sum();
    let n2: f64 = baseline.iter().sum();
    if n1 <= 0.0 || n2 <= 0.0 {
        return None;
    }
    // U1 counts, for each candidate observation, the baseline observations
    // below it plus half of those tied with it.
    let mut u = 0.0;
    let mut baseline_below = 0.0;
    let mut ties = 0.0;
    for (&c, &b) in candidate.iter().zip(baseline) {
        u += c * (baseline_below + b / 2.0);
        baseline_below += b;
        let t = c + b;
        ties += t * t * t - t;
    }
    let n = n1 + n2;
    let mean = n1 * n2 / 2.0;
    let variance = n1 * n2 / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)));
    let (z, p_greater, p_two_sided) = if variance <= 0.0 {
        // Every observation in one bin: the samples cannot be told apart.
        (0.0, 0.5, 1.0)
    } else {
        let z = (u - mean) / variance.sqrt();
        let normal = Normal::standard();
        (z, normal.sf(z), (2.0 * normal.sf(z.abs())).min(1.0))
    };
    Some(MannWhitney {
        candidate_n: n1,
        baseline_n: n2,
        u,
        a: u / (n1 * n2),
        z,
        p_greater,
        p_two_sided,
    })
}

/// Per-bin counts of two histograms on the bucket bounds they share.
/// Cumulative counts at a shared bound are exact for both, so merging the
/// bounds only one of them has loses resolution but never invents data.
pub fn align(candidate: &Histogram, baseline: &Histogram) -> Aligned {
    let shared: Vec<f64> = candidate
        .buckets()
        .iter()
        .map(|b| b.upper_bound)
        .filter(|bound| baseline.buckets().iter().any(|b| b.upper_bound == *bound))
        .collect();
    let per_bin = |h: &Histogram| {
        let mut below = 0.0;
        shared
            .iter()
            .map(|bound| {
                let cumulative = h
                    .buckets()
                    .iter()
                    .find(|b| b.upper_bound == *bound)
                    .map_or(below, |b| b.count);
                let count = cumulative - below;
                below = cumulative;
                count
            })
            .collect::<Vec<f64>>()
    };
    Aligned {
        candidate: per_bin(candidate),
        baseline: per_bin(baseline),
        bounds: shared,
    }
}

/// Two histograms on their shared bounds: `candidate[k]` and `baseline[k]`
/// observations in the bin ending at `bounds[k]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Aligned {
    pub bounds: Vec<f64>,
    pub candidate: Vec<f64>,
    pub baseline: Vec<f64>,
}

impl Aligned {
    /// Observations of each side above `bound` (a shared bound).
    pub fn above(&self, bound: f64) -> (f64, f64) {
        let sum = |counts: &[f64]| -> f64 {
            self.bounds
                .iter()
                .zip(counts)
                .filter(|(b, _)| **b > bound)
                .map(|(_, n)| n)
                .sum()
        };
        (sum(&self.candidate), sum(&self.baseline))
    }
}

#[cfg(test)]
mod tests {
    use super::super::quantile::Bucket;
    use super::super::testing::close;
    use super::*;

    #[test]
    fn mann_whitney_binned_by_hand() {
        let m = mann_whitney_binned(&[1.0, 2.0, 3.0, 1.0], &[2.0, 2.0, 1.0, 0.0]).unwrap();
        assert!(close(m.u, 25.5, 1e-12));
        assert!(close(m.a, 0.728571, 1e-6));
        assert!(close(m.z, 1.357398, 1e-6));
        assert!(close(m.p_greater, 0.087327, 1e-6));
        assert!(close(m.p_two_sided, 0.174655, 1e-6));
    }

    // Cross-check against the definition on expanded data: count pairs
    // (x > y) + (x == y) / 2 directly.
    #[test]
    fn mann_whitney_binned_u_equals_pair_count() {
        let c = [3.0, 0.0, 7.0, 2.0, 5.0];
        let b = [1.0, 4.0, 4.0, 6.0, 0.0];
        let expand = |bins: &[f64]| -> Vec<usize> {
            bins.iter()
                .enumerate()
                .flat_map(|(k, &n)| std::iter::repeat_n(k, n as usize))
                .collect()
        };
        let (xs, ys) = (expand(&c), expand(&b));
        let mut pairs = 0.0;
        for x in &xs {
            for y in &ys {
                pairs += match x.cmp(y) {
                    std::cmp::Ordering::Greater => 1.0,
                    std::cmp::Ordering::Equal => 0.5,
                    std::cmp::Ordering::Less => 0.0,
                };
            }
        }
        let m = mann_whitney_binned(&c, &b).unwrap();
        assert!(close(m.u, pairs, 1e-9));
    }

    #[test]
    fn mann_whitney_all_tied_is_no_evidence() {
        let m = mann_whitney_binned(&[0.0, 40.0, 0.0], &[0.0, 400.0, 0.0]).unwrap();
        assert_eq!((m.a, m.p_two_sided), (0.5, 1.0));
        assert!(mann_whitney_binned(&[0.0, 0.0], &[1.0, 2.0]).is_none());
        assert!(mann_whitney_binned(&[1.0], &[1.0, 2.0]).is_none());
    }

    #[test]
    fn align_keeps_shared_bounds_only() {
        let h = |pairs: &[(f64, f64)]| {
            Histogram::from_buckets(
                pairs
                    .iter()
                    .map(|&(upper_bound, count)| Bucket { upper_bound, count })
                    .collect(),
            )
        };
        let a = h(&[(1.0, 2.0), (5.0, 6.0), (10.0, 9.0), (f64::INFINITY, 10.0)]);
        let b = h(&[(1.0, 1.0), (10.0, 3.0), (f64::INFINITY, 4.0)]);
        let aligned = align(&a, &b);
        assert_eq!(aligned.bounds, vec![1.0, 10.0, f64::INFINITY]);
        assert_eq!(aligned.candidate, vec![2.0, 7.0, 1.0]);
        assert_eq!(aligned.baseline, vec![1.0, 2.0, 1.0]);
        assert_eq!(aligned.above(1.0), (8.0, 3.0));
        assert_eq!(aligned.above(10.0), (1.0, 1.0));
    }
}
