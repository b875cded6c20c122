//! Cohort filter: sticky experiment cohorts (gateway role) and per-version,
//! per-cohort metrics (sidecar role) as one proxy-wasm HTTP filter.
//!
//! Everything but [`glue`] is plain Rust that runs and is tested on the host;
//! `glue` is compiled only for Wasm and moves data between Envoy and
//! [`logic`].
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod assign;
pub mod config;
pub mod cookie;
pub mod logic;
pub mod metrics;

#[cfg(target_arch = "wasm32")]
mod glue;

/// The crate version and the git commit it was built from (`unknown` outside
/// a checkout), logged when the VM starts.
pub const BUILD: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("SMS_FILTER_GIT_HASH"),
    ")"
);
