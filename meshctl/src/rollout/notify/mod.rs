//! Notifications: a POST to each `--notify` receiver when the rollout
//! starts, applies a step, starts holding, and ends (promoted, rolled back,
//! aborted, ...), with the reason and the checks' evidence, as plain JSON
//! or as a Slack or Microsoft Teams message.
//!
//! Delivery never touches the rollout: each receiver has its own thread
//! and a bounded queue; a full queue, a receiver that fails after every
//! retry, or one still failing when the rollout ends is reported as
//! undeliverable (the event log's `notification` records say, for every
//! notification and receiver, whether it was delivered).

mod body;
mod deliver;
#[cfg(test)]
mod tests;

pub use deliver::{Delivery, Notifier, Outcome};

use serde::Serialize;

use crate::report::Verdict;

use super::engine::Decision;
use super::events::{CheckLine, End, Event};

/// The body a receiver takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The notification as JSON (see `Notification`).
    Json,
    /// A Slack incoming webhook message (`text`, mrkdwn).
    Slack,
    /// A Microsoft Teams workflow webhook message (an Adaptive Card).
    Teams,
}

/// One `--notify`: a URL, optionally `FORMAT=URL`.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub url: String,
    /// `None`: the `--notify-format` given.
    pub format: Option<Format>,
}

pub fn parse_target(text: &str) -> Result<Target, String> {
    let (format, url) = match text.split_once('=') {
        Some((f, url)) if !f.contains(':') => {
            let format = <Format as clap::ValueEnum>::from_str(f, true)
                .map_err(|_| format!("{f:?} is not one of json, slack, teams (FORMAT=URL)"))?;
            (Some(format), url)
        }
        _ => (None, text),
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() <= "https://".len()
    {
        return Err(format!("{url:?} is not an http:// or https:// URL"));
    }
    Ok(Target {
        url: url.to_string(),
        format,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Started,
    Step,
    Hold,
    Promoted,
    Completed,
    RolledBack,
    Aborted,
    Declined,
    Interrupted,
}

/// What a receiver is told (the `json` format's body).
#[derive(Debug, Clone, Serialize)]
pub struct Notification {
    pub source: &'static str,
    /// 1, 2, 3 ... within this rollout: a receiver can tell a retry's
    /// duplicate from a new notification.
    pub sequence: u64,
    pub kind: Kind,
    pub time: String,
    pub target: String,
    /// 1-based step and the number of steps; 0 before the first.
    pub step: usize,
    pub steps: usize,
    /// The canary weight now, in percent.
    pub canary: u8,
    pub summary: String,
    /// Why: the checks' details behind a hold, a roll-back or an abort.
    pub reason: String,
    /// The last check's evidence, one line per metric.
    pub evidence: Vec<CheckLine>,
}

/// Follows the rollout's events and says which deserve a notification: the
/// start, every step applied, the first check of a hold (not every check
/// that holds), and the end.
#[derive(Debug, Default)]
pub struct Tracker {
    sequence: u64,
    target: String,
    steps: usize,
    step: usize,
    canary: u8,
    evidence: Vec<CheckLine>,
    holding: bool,
}

impl Tracker {
    pub fn on(&mut self, event: &Event) -> Option<Notification> {
        let (kind, time, reason) = match event {
            Event::Start {
                time,
                target,
                steps,
                ..
            } => {
                self.target = target.clone();
                self.steps = steps.len();
                (Kind::Started, time, String::new())
            }
            // Step 0 is a stop's 0 %: its `done` follows.
            Event::Weight { step: 0, .. } => return None,
            Event::Weight {
                time, step, canary, ..
            } => {
                self.step = *step;
                self.canary = *canary;
                self.holding = false;
                (Kind::Step, time, String::new())
            }
            Event::Check {
                time,
                decision,
                checks,
                ..
            } => {
                self.evidence = checks.clone();
                let hold = match decision {
                    Decision::Stay {
                        verdict: Verdict::Hold,
                        reason,
                    } => Some(reason.clone()),
                    _ => None,
                };
                let first = hold.is_some() && !self.holding;
                self.holding = hold.is_some();
                match hold {
                    Some(reason) if first => (Kind::Hold, time, reason),
                    _ => return None,
                }
            }
            Event::Done {
                time,
                end,
                canary,
                reason,
                ..
            } => {
                self.canary = *canary;
                let kind = match end {
                    End::Promoted => Kind::Promoted,
                    End::Completed => Kind::Completed,
                    End::RolledBack => Kind::RolledBack,
                    End::Aborted { .. } => Kind::Aborted,
                    End::Declined => Kind::Declined,
                    End::Interrupted => Kind::Interrupted,
                };
                (kind, time, reason.clone())
            }
            Event::Notification { .. } => return None,
        };
        self.sequence += 1;
        let summary = self.summary(kind);
        Some(Notification {
            source: "meshctl rollout",
            sequence: self.sequence,
            kind,
            time: time.clone(),
            target: self.target.clone(),
            step: self.step,
            steps: self.steps,
            canary: self.canary,
            summary,
            reason,
            evidence: self.evidence.clone(),
        })
    }

    fn summary(&self, kind: Kind) -> String {
        let at = format!("step {}/{}", self.step, self.steps);
        let what = match kind {
            Kind::Started => format!("started: {} steps", self.steps),
            Kind::Step => format!("{at}: canary at {}%", self.canary),
            Kind::Hold => format!("holding at {at} ({}%)", self.canary),
            Kind::Promoted => "promoted: canary at 100%".to_string(),
            Kind::Completed => format!("completed at {at}: canary stays at {}%", self.canary),
            Kind::RolledBack => "ROLLED BACK: canary at 0%".to_string(),
            Kind::Aborted => format!("aborted at {at}: canary at 0%"),
            Kind::Declined => format!("declined at {at}: canary at 0%"),
            Kind::Interrupted => format!("interrupted at {at}: canary at {}%", self.canary),
        };
        format!("Rollout on {}: {what}", self.target)
    }
}
