//! The check loop: apply a step's weight, wait an interval, read the
//! interval's evidence, let the engine decide, act. All I/O goes through
//! the two seams (`WeightApplier`, `EvidenceReader`), a clock and two
//! callbacks, so tests and the simulation drive it without a mesh and
//! without waiting.

use anyhow::Context;

use crate::report::model::Window;
use crate::report::{Comparison, Settings};

use super::apply::WeightApplier;
use super::engine::{Decision, Engine};
use super::events::{End, Event, timestamp};
use super::evidence::EvidenceReader;
use super::plan::Plan;

/// The canary weight every stop leaves behind (roll-back, abort, a declined
/// step, Ctrl-C): all users on stable, the version that served everyone
/// before. A stopped rollout has not shown the canary to be safe at its
/// current weight, and the cohorts are a hash of the user id, so a later
/// rollout brings the same users back to the canary.
pub const SAFE_WEIGHT: u8 = 0;

/// Time as Unix seconds, and waiting that Ctrl-C can cut short.
pub trait Clock {
    fn now(&mut self) -> f64;
    /// Waits until `time`; false when interrupted first.
    fn wait_until(&mut self, time: f64) -> bool;
}

pub struct Io<'a> {
    pub weights: &'a mut dyn WeightApplier,
    pub evidence: &'a mut dyn EvidenceReader,
    pub clock: &'a mut dyn Clock,
    /// With `--confirm`, asked before each step (number, canary weight):
    /// true to go on.
    pub confirm: &'a mut dyn FnMut(usize, u8) -> bool,
    pub log: &'a mut dyn FnMut(&Event),
}

/// How the rollout ended, and what to report about it.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub end: End,
    pub start: f64,
    pub finish: f64,
    /// The last judgement of the canary over every interval.
    pub comparison: Option<Comparison>,
}

fn apply(io: &mut Io, step: usize, canary: u8) -> anyhow::Result<()> {
    io.weights
        .apply(canary)
        .with_context(|| format!("set the canary to {canary}% on {}", io.weights.target()))?;
    let time = io.clock.now();
    (io.log)(&Event::Weight {
        time: timestamp(time),
        step,
        canary,
        stable: 100 - canary,
    });
    Ok(())
}

/// Runs the plan to its end. An error (a weight that cannot be applied,
/// evidence that cannot be read) first tries to leave the canary at
/// `SAFE_WEIGHT`, then returns the error.
pub fn drive(plan: Plan, settings: Settings, io: &mut Io) -> anyhow::Result<Outcome> {
    let start = io.clock.now();
    (io.log)(&Event::Start {
        time: timestamp(start),
        target: io.weights.target(),
        steps: plan.steps.clone(),
        interval_seconds: plan.interval,
    });
    let result = run(plan, settings, io, start);
    match result {
        Ok(outcome) => Ok(outcome),
        Err(err) => {
            let safe = io.weights.apply(SAFE_WEIGHT);
            let note = match safe {
                Ok(()) => format!("canary set to {SAFE_WEIGHT}%"),
                Err(e) => {
                    format!("and the canary could not be set to {SAFE_WEIGHT}% either: {e:#}")
                }
            };
            Err(err.context(format!("rollout stopped ({note})")))
        }
    }
}

fn run(plan: Plan, settings: Settings, io: &mut Io, start: f64) -> anyhow::Result<Outcome> {
    let confirm = plan.confirm;
    let interval = plan.interval;
    let first = plan.steps[0];
    if confirm && !(io.confirm)(1, first) {
        return stop(io, start, End::Declined, "step 1 declined", None);
    }
    apply(io, 1, first)?;
    let mut engine = Engine::new(plan, settings, io.clock.now());
    let mut last = io.clock.now();
    let mut settled = false;
    // The last check's judgement: the strata have not changed since, so an
    // interruption reports it rather than judging them all again.
    let mut comparison: Option<Comparison> = None;
    loop {
        if !io.clock.wait_until(last + interval) {
            let reason = format!(
                "stopped at step {} ({}%)",
                engine.step_number(),
                engine.weight()
            );
            let comparison = comparison.unwrap_or_else(|| engine.comparison());
            return stop(io, start, End::Interrupted, &reason, Some(comparison));
        }
        let now = io.clock.now();
        let window = Window {
            start: last,
            end: now,
            seconds: now - last,
        };
        let data = io
            .evidence
            .read(&window)
            .context("read the interval's evidence")?;
        let result = engine.check(now, &data, settled);
        (io.log)(&Event::check(
            now,
            &result.comparison,
            &result.decision,
            &result.progress,
        ));
        last = now;
        settled = true;
        comparison = Some(result.comparison);
        match result.decision {
            Decision::Stay { .. } => {}
            Decision::Promote { to } => {
                let step = engine.step_number() + 1;
                if confirm && !(io.confirm)(step, to) {
                    return stop(
                        io,
                        start,
                        End::Declined,
                        &format!("step {step} declined"),
                        comparison,
                    );
                }
                apply(io, step, to)?;
                engine.promoted(io.clock.now());
                settled = false;
                if to == 100 {
                    return finish(io, start, End::Promoted, to, String::new(), comparison);
                }
            }
            Decision::Complete => {
                let at = engine.weight();
                return finish(io, start, End::Completed, at, String::new(), comparison);
            }
            Decision::RollBack { reason } => {
                return stop(io, start, End::RolledBack, &reason, comparison);
            }
            Decision::Abort { verdict, reason } => {
                return stop(io, start, End::Aborted { verdict }, &reason, comparison);
            }
        }
    }
}

/// Leaves the canary at `SAFE_WEIGHT` and ends.
fn stop(
    io: &mut Io,
    start: f64,
    end: End,
    reason: &str,
    comparison: Option<Comparison>,
) -> anyhow::Result<Outcome> {
    apply(io, 0, SAFE_WEIGHT)?;
    finish(io, start, end, SAFE_WEIGHT, reason.to_string(), comparison)
}

fn finish(
    io: &mut Io,
    start: f64,
    end: End,
    canary: u8,
    reason: String,
    comparison: Option<Comparison>,
) -> anyhow::Result<Outcome> {
    let finish = io.clock.now();
    (io.log)(&Event::Done {
        time: timestamp(finish),
        end,
        canary,
        exit_code: end.exit_code(),
        reason,
    });
    Ok(Outcome {
        end,
        start,
        finish,
        comparison,
    })
}
