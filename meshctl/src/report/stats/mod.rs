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
