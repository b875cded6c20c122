//! The statistics behind the verdict: pure functions, each file with the
//! reference values it was checked against in its tests.

pub mod cluster;
pub mod harm;
pub mod quantile;
pub mod ranks;
pub mod sequential;
pub mod srm;

pub use ranks::{MannWhitney, align, mann_whitney_binned};

/// `Some(value)` unless it is infinite or NaN (an empty histogram's quantile).
pub fn finite(value: f64) -> Option<f64> {
    value.is_finite().then_some(value)
}

/// What the statistics' tests share.
#[cfg(test)]
pub(crate) mod testing {
    use super::sequential::{Counts, Pair};

    pub fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance
    }

    /// `x1` events in `n1` trials for the candidate, `x0` in `n0` for the
    /// baseline.
    pub fn pair(x1: f64, n1: f64, x0: f64, n0: f64) -> Pair {
        Pair {
            candidate: Counts::new(x1, n1),
            baseline: Counts::new(x0, n0),
        }
    }
}
