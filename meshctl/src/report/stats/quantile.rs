//! Cumulative histograms as Prometheus exposes them (`_bucket{le=...}`), and
//! the estimates read from them: `histogram_quantile` with Prometheus's exact
//! interpolation rules, and the share of observations under a threshold.

use serde::Serialize;

/// One cumulative bucket: observations `<= upper_bound`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Bucket {
    #[serde(serialize_with = "serialize_bound")]
    pub upper_bound: f64,
    pub count: f64,
}

fn serialize_bound<S: serde::Serializer>(bound: &f64, s: S) -> Result<S::Ok, S::Error> {
    if bound.is_infinite() {
        s.serialize_str("+Inf")
    } else {
        s.serialize_f64(*bound)
    }
}

/// A cumulative histogram, normalised the way Prometheus's
/// `histogram_quantile` normalises it: buckets sorted by bound, duplicate
/// bounds merged, counts made monotonic.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Histogram {
    buckets: Vec<Bucket>,
}

/// `from_buckets` before its monotonic pass: NaN bounds dropped, sorted by
/// bound, and Prometheus's coalesceBuckets: same bound (e.g. "1" and "1.0"
/// from two exporters) sums the counts, in the order given (-0 before 0).
pub fn coalesce(mut buckets: Vec<Bucket>) -> Vec<Bucket> {
    buckets.retain(|b| !b.upper_bound.is_nan());
    buckets.sort_by(|a, b| a.upper_bound.total_cmp(&b.upper_bound));
    let mut merged: Vec<Bucket> = Vec::with_capacity(buckets.len());
    for bucket in buckets {
        match merged.last_mut() {
            Some(last) if last.upper_bound == bucket.upper_bound => last.count += bucket.count,
            _ => merged.push(bucket),
        }
    }
    merged
}

impl Histogram {
    pub fn from_buckets(buckets: Vec<Bucket>) -> Histogram {
        let mut merged = coalesce(buckets);
        // Prometheus's ensureMonotonic: scrapes of different buckets are not
        // atomic, so a later bucket can be momentarily smaller.
        let mut max = 0.0_f64;
        for bucket in &mut merged {
            max = max.max(bucket.count);
            bucket.count = max;
        }
        Histogram { buckets: merged }
    }

    pub fn buckets(&self) -> &[Bucket] {
        &self.buckets
    }

    /// Total observations (the `+Inf` bucket), or 0 without one.
    pub fn count(&self) -> f64 {
        match self.buckets.last() {
            Some(last) if last.upper_bound == f64::INFINITY => last.count,
            _ => 0.0,
        }
    }

    /// Observations per bucket (not cumulative), paired with the bucket's
    /// lower and upper bounds; the lowest bucket starts at 0 (or at its own
    /// bound when that is negative), as `histogram_quantile` assumes.
    pub fn bins(&self) -> Vec<Bin> {
        let mut previous: Option<Bucket> = None;
        let mut bins = Vec::with_capacity(self.buckets.len());
        for bucket in &self.buckets {
            let (lower, below) = match previous {
                Some(p) => (p.upper_bound, p.count),
                None => (bucket.upper_bound.min(0.0), 0.0),
            };
            bins.push(Bin {
                lower,
                upper: bucket.upper_bound,
                count: bucket.count - below,
            });
            previous = Some(*bucket);
        }
        bins
    }

    /// Prometheus's `histogram_quantile(q, ...)` (promql `bucketQuantile`):
    /// linear interpolation inside the bucket holding rank `q * count`; the
    /// lowest bucket starts at 0 unless its bound is <= 0; a rank in the
    /// `+Inf` bucket yields the highest finite bound. `NaN` when Prometheus
    /// returns `NaN` (no `+Inf` bucket, fewer than two buckets, no data).
    pub fn quantile(&self, q: f64) -> f64 {
        if q.is_nan() {
            return f64::NAN;
        }
        if q < 0.0 {
            return f64::NEG_INFINITY;
        }
        if q > 1.0 {
            return f64::INFINITY;
        }
        let buckets = &self.buckets;
        if buckets.len() < 2 || buckets[buckets.len() - 1].upper_bound != f64::INFINITY {
            return f64::NAN;
        }
        let observations = buckets[buckets.len() - 1].count;
        if observations == 0.0 {
            return f64::NAN;
        }
        let mut rank = q * observations;
        // sort.Search over all but the +Inf bucket.
        let b = buckets[..buckets.len() - 1]
            .iter()
            .position(|bucket| bucket.count >= rank)
            .unwrap_or(buckets.len() - 1);
        if b == buckets.len() - 1 {
            return buckets[buckets.len() - 2].upper_bound;
        }
        if b == 0 && buckets[0].upper_bound <= 0.0 {
            return buckets[0].upper_bound;
        }
        let bucket_end = buckets[b].upper_bound;
        let mut bucket_start = 0.0;
        let mut count = buckets[b].count;
        if b > 0 {
            bucket_start = buckets[b - 1].upper_bound;
            count -= buckets[b - 1].count;
            rank -= buckets[b - 1].count;
        }
        bucket_start + (bucket_end - bucket_start) * (rank / count)
    }

    /// Share of observations `<= threshold`, with the same within-bucket
    /// linear assumption as `quantile` (exact when `threshold` is a bucket
    /// bound). Above the highest finite bound it is a lower bound: what the
    /// `+Inf` bucket holds is unknown. `None` without observations.
    pub fn share_under(&self, threshold: f64) -> Option<ShareUnder> {
        let total = self.count();
        if total == 0.0 || threshold.is_nan() {
            return None;
        }
        let mut under = 0.0;
        let mut exact = false;
        for bin in self.bins() {
            if threshold >= bin.upper {
                under += bin.count;
                exact = threshold == bin.upper;
                continue;
            }
            if threshold > bin.lower && bin.upper.is_finite() {
                under += bin.count * (threshold - bin.lower) / (bin.upper - bin.lower);
                exact = false;
            } else if bin.upper.is_infinite() && threshold >= bin.lower {
                // Past the last finite bound: exact only if nothing lies there.
                exact = bin.count == 0.0;
            } else {
                exact = threshold == bin.lower || (threshold < bin.lower && under == 0.0);
            }
            break;
        }
        Some(ShareUnder {
            threshold,
            share: under / total,
            exact,
        })
    }
}

/// One bucket as a range with its own (non-cumulative) count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bin {
    pub lower: f64,
    pub upper: f64,
    pub count: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ShareUnder {
    pub threshold: f64,
    pub share: f64,
    /// The threshold is a bucket bound, so no interpolation was needed.
    pub exact: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(pairs: &[(f64, f64)]) -> Histogram {
        Histogram::from_buckets(
            pairs
                .iter()
                .map(|&(upper_bound, count)| Bucket { upper_bound, count })
                .collect(),
        )
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    // The series of Prometheus's promql/testdata/histograms.test,
    // `testhistogram_bucket{start="positive"}` at 50m: buckets 0.1, 0.2, 1,
    // +Inf hold 50, 70, 110, 120. Worked by hand with bucketQuantile's rules
    // (rank = q * 120): q=0.2 -> 0.1 * 24/50 = 0.048; q=0.5 -> 0.1 + 0.1 *
    // 10/20 = 0.15; q=0.8 -> 0.2 + 0.8 * 26/40 = 0.72; q=1 -> 1 (+Inf rule).
    // The integration test also checks against a real Prometheus.
    #[test]
    fn quantile_matches_prometheus_histograms_test_positive() {
        let h = hist(&[
            (0.1, 50.0),
            (0.2, 70.0),
            (1.0, 110.0),
            (f64::INFINITY, 120.0),
        ]);
        assert!(close(h.quantile(0.0), 0.0));
        assert!(close(h.quantile(0.2), 0.048));
        assert!(close(h.quantile(0.5), 0.15));
        assert!(close(h.quantile(0.8), 0.72));
        assert!(close(h.quantile(1.0), 1.0));
        assert_eq!(h.quantile(-0.1), f64::NEG_INFINITY);
        assert_eq!(h.quantile(1.01), f64::INFINITY);
    }

    // Same file, `start="negative"`: buckets -0.2, -0.1, 0.3, +Inf hold
    // 10, 20, 20, 30 at 50m. The lowest bucket's bound is <= 0, so ranks in
    // it return that bound: q=0.2 -> -0.2; q=0.5 -> -0.15 (interpolated in
    // (-0.2, -0.1]); q=0.8 -> 0.3 (rank 24 in the +Inf bucket).
    #[test]
    fn quantile_lowest_bucket_below_zero_returns_its_bound() {
        let h = hist(&[
            (-0.2, 10.0),
            (-0.1, 20.0),
            (0.3, 20.0),
            (f64::INFINITY, 30.0),
        ]);
        assert!(close(h.quantile(0.2), -0.2));
        assert!(close(h.quantile(0.5), -0.15));
        assert!(close(h.quantile(0.8), 0.3));
    }

    // The seed's v3 evidence: 181 of 183 observations under 5 ms
    // (le="0.005" 181, count 183). By hand: rank(0.5) = 91.5 lies in the
    // lowest bucket, interpolated from 0: 0.005 * 91.5/181.
    #[test]
    fn quantile_interpolates_lowest_bucket_from_zero() {
        let h = hist(&[(0.005, 181.0), (0.01, 183.0), (f64::INFINITY, 183.0)]);
        assert!(close(h.quantile(0.5), 0.005 * 91.5 / 181.0));
    }

    #[test]
    fn quantile_is_nan_where_prometheus_is() {
        assert!(
            hist(&[(1.0, 5.0), (2.0, 6.0)]).quantile(0.5).is_nan(),
            "no +Inf"
        );
        assert!(
            hist(&[(f64::INFINITY, 5.0)]).quantile(0.5).is_nan(),
            "one bucket"
        );
        assert!(
            hist(&[(1.0, 0.0), (f64::INFINITY, 0.0)])
                .quantile(0.5)
                .is_nan(),
            "empty"
        );
        assert!(
            hist(&[(1.0, 3.0), (f64::INFINITY, 3.0)])
                .quantile(f64::NAN)
                .is_nan()
        );
    }

    // A rank in the +Inf bucket returns the highest finite bound.
    #[test]
    fn quantile_in_inf_bucket_returns_highest_finite_bound() {
        let h = hist(&[(1.0, 1.0), (5.0, 2.0), (f64::INFINITY, 10.0)]);
        assert_eq!(h.quantile(0.99), 5.0);
    }

    #[test]
    fn buckets_are_sorted_coalesced_and_made_monotonic() {
        let h = hist(&[(f64::INFINITY, 10.0), (1.0, 4.0), (1.0, 1.0), (2.0, 3.0)]);
        let bounds: Vec<_> = h
            .buckets()
            .iter()
            .map(|b| (b.upper_bound, b.count))
            .collect();
        assert_eq!(bounds, vec![(1.0, 5.0), (2.0, 5.0), (f64::INFINITY, 10.0)]);
        let counts: Vec<_> = h.bins().iter().map(|b| b.count).collect();
        assert_eq!(counts, vec![5.0, 0.0, 5.0]);
    }

    #[test]
    fn share_under_is_exact_on_bounds_and_interpolated_between() {
        // v1 in the seed: 0 under 5 ms, 100 under 10 ms (of 100).
        let h = hist(&[(5.0, 0.0), (10.0, 100.0), (f64::INFINITY, 100.0)]);
        let at5 = h.share_under(5.0).unwrap();
        assert_eq!((at5.share, at5.exact), (0.0, true));
        let at10 = h.share_under(10.0).unwrap();
        assert_eq!((at10.share, at10.exact), (1.0, true));
        let at7 = h.share_under(7.5).unwrap();
        assert!(close(at7.share, 0.5) && !at7.exact);
        let below = h.share_under(2.0).unwrap();
        assert_eq!(below.share, 0.0);
        assert!(h.share_under(f64::NAN).is_none());
        assert!(
            hist(&[(1.0, 0.0), (f64::INFINITY, 0.0)])
                .share_under(1.0)
                .is_none()
        );
    }

    #[test]
    fn share_under_beyond_last_finite_bound_counts_only_known() {
        let h = hist(&[(1.0, 6.0), (f64::INFINITY, 10.0)]);
        let s = h.share_under(100.0).unwrap();
        assert!(close(s.share, 0.6));
        assert!(!s.exact);
        let nothing_above = hist(&[(1.0, 6.0), (f64::INFINITY, 6.0)]);
        let s = nothing_above.share_under(100.0).unwrap();
        assert_eq!((s.share, s.exact), (1.0, true));
    }
}
