//! `meshctl`, the workspace CLI, as a library: the subcommands' parts, which
//! `main.rs` dispatches to and the end-to-end tests (`tests/`) drive
//! directly, so that neither re-implements the other.
//!
//! Each subcommand lives in its own module, which exposes `pub struct
//! <Name>Args` (`clap::Args`) and `pub fn run(args: <Name>Args) ->
//! anyhow::Result<ExitCode>`.
//!
//! Error convention: a module defines its own error enum (`thiserror`) for the
//! failures a caller can act on, and returns them through `anyhow::Result` so
//! `main` prints the whole context chain and exits with status 1. An
//! `Ok(ExitCode)` is for outcomes that are not errors of the tool itself
//! (e.g. a check that ran and found a failure).

pub mod alerts;
pub mod chart;
pub mod duration;
pub mod gate;
pub mod image;
pub mod mesh;
pub mod report;
pub mod rollout;
pub mod workspace;
