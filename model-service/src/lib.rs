//! The SMS spam classifier service: three model versions behind one HTTP API.
//!
//! `main.rs` only wires these together; tests drive [`app::router`]
//! in-process and [`app::serve`] on a real listener.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod app;
pub mod config;
pub mod dataset;
pub mod error;
pub mod headers;
pub mod metrics;
pub mod model;
pub mod routes;
pub mod text;
pub mod train;
