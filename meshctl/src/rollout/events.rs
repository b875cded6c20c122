//! What happened, twice: one JSON object per line for machines (the event
//! log), and a line a person can follow on the terminal.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

use crate::report::model::{Check, Metric};
use crate::report::stats::sequential::RateComparison;
use crate::report::stats::srm::SampleRatio;
use crate::report::{Comparison, Verdict};

use super::engine::{ArmCount, Decision, Progress};
use super::notify::Outcome;

/// How a rollout ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum End {
    /// The canary reached 100 %.
    Promoted,
    /// The last step, below 100 %, passed; the canary stays there.
    Completed,
    /// A check showed the canary worse: canary at 0.
    RolledBack,
    /// A step held past its limit: canary at 0.
    Aborted { verdict: Verdict },
    /// The operator declined a step at the `--confirm` prompt: canary at 0.
    Declined,
    /// Ctrl-C (or SIGTERM): canary at 0.
    Interrupted,
}

impl End {
    /// In the report's style: 0 promoted, 3 held, 4 rolled back, 5 not
    /// enough data; 130 interrupted, as shells report SIGINT.
    pub fn exit_code(self) -> u8 {
        let verdict = match self {
            End::Interrupted => return 130,
            End::Promoted | End::Completed => Verdict::Promote,
            End::RolledBack => Verdict::RollBack,
            // An abort holds or lacks data (`Decision::Abort`); any other
            // verdict counts as held, as it always has.
            End::Aborted {
                verdict: Verdict::InsufficientData,
            } => Verdict::InsufficientData,
            End::Aborted { .. } | End::Declined => Verdict::Hold,
        };
        verdict.exit_code()
    }
}

/// One check's outcome, per metric, with its numbers.
#[derive(Debug, Clone, Serialize)]
pub struct CheckLine {
    pub metric: Metric,
    pub outcome: Verdict,
    pub detail: String,
    /// The rate comparison behind it (for latency: the share above
    /// stable's p95).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rates: Option<RateComparison>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_ratio: Option<SampleRatio>,
}

impl From<&Check> for CheckLine {
    fn from(check: &Check) -> CheckLine {
        let tail = check
            .latency
            .as_ref()
            .and_then(|l| l.tail.as_ref())
            .map(|t| t.rates);
        CheckLine {
            metric: check.metric,
            outcome: check.outcome,
            detail: check.detail.clone(),
            rates: check.rates.or(tail),
            sample_ratio: check.sample_ratio,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Start {
        time: String,
        target: String,
        steps: Vec<u8>,
        interval_seconds: f64,
    },
    Weight {
        time: String,
        step: usize,
        canary: u8,
        stable: u8,
    },
    Check {
        time: String,
        verdict: Verdict,
        decision: Decision,
        progress: Progress,
        checks: Vec<CheckLine>,
    },
    Done {
        time: String,
        end: End,
        /// The canary weight the mesh is left at.
        canary: u8,
        exit_code: u8,
        reason: String,
    },
    /// A notification's fate at one `--notify` receiver, written when it is
    /// known: the last ones can follow `done`.
    Notification {
        time: String,
        #[serde(flatten)]
        outcome: Outcome,
    },
}

/// The event log file, shared by the rollout and the notification threads:
/// one JSON object per line, whole lines only. The first write error is
/// kept for the end of the rollout; nothing is lost to a failure silently.
pub struct EventLog {
    file: Mutex<(File, Option<std::io::Error>)>,
}

impl EventLog {
    pub fn create(path: &Path) -> std::io::Result<EventLog> {
        Ok(EventLog {
            file: Mutex::new((File::create(path)?, None)),
        })
    }

    pub fn write(&self, event: &Event) {
        let Ok(mut guard) = self.file.lock() else {
            return;
        };
        let (file, error) = &mut *guard;
        let line = serde_json::to_string(event).map(|mut l| {
            l.push('\n');
            l
        });
        if let Err(e) = line
            .map_err(std::io::Error::other)
            .and_then(|l| file.write_all(l.as_bytes()))
        {
            error.get_or_insert(e);
        }
    }

    /// The first write that failed, if any.
    pub fn error(&self) -> Option<String> {
        self.file
            .lock()
            .ok()
            .and_then(|g| g.1.as_ref().map(ToString::to_string))
    }
}

/// RFC 3339 with milliseconds.
pub fn timestamp(seconds: f64) -> String {
    let at = UNIX_EPOCH + Duration::from_secs_f64(seconds.max(0.0));
    humantime::format_rfc3339_millis(at).to_string()
}

impl Event {
    pub fn check(
        now: f64,
        comparison: &Comparison,
        decision: &Decision,
        progress: &Progress,
    ) -> Event {
        Event::Check {
            time: timestamp(now),
            verdict: comparison.verdict,
            decision: decision.clone(),
            progress: progress.clone(),
            checks: comparison.checks.iter().map(CheckLine::from).collect(),
        }
    }

    /// The terminal line(s) for this event.
    pub fn text(&self) -> String {
        match self {
            Event::Start {
                target,
                steps,
                interval_seconds,
                ..
            } => format!(
                "rollout on {target}: canary {} %, a check every {interval_seconds}s",
                steps
                    .iter()
                    .map(u8::to_string)
                    .collect::<Vec<_>>()
                    .join(" -> ")
            ),
            Event::Weight {
                time,
                step,
                canary,
                stable,
                ..
            } => format!(
                "{} step {step}: canary {canary}%, stable {stable}%",
                clock(time)
            ),
            Event::Check {
                time,
                verdict,
                decision,
                progress,
                checks,
            } => {
                let arm =
                    |a: &ArmCount| format!("{} requests / {} new users", a.requests, a.new_users);
                let mut out = format!(
                    "{} step {}/{} at {}% for {:.0}s: canary {}, stable {} (since start: canary {}, stable {}); checks: {verdict}",
                    clock(time),
                    progress.step,
                    progress.steps,
                    progress.weight,
                    progress.seconds_in_step,
                    arm(&progress.canary_in_step),
                    arm(&progress.stable_in_step),
                    arm(&progress.canary_total),
                    arm(&progress.stable_total),
                );
                for c in checks {
                    out.push_str(&format!("\n    {} {}: {}", c.metric, c.outcome, c.detail));
                }
                out.push_str(&format!("\n  -> {}", decision_text(decision)));
                out
            }
            Event::Done {
                time,
                end,
                canary,
                exit_code,
                reason,
            } => format!(
                "{} {}: canary left at {canary}% (exit code {exit_code}){}{reason}",
                clock(time),
                match end {
                    End::Promoted => "promoted",
                    End::Completed => "completed",
                    End::RolledBack => "rolled back",
                    End::Aborted { .. } => "aborted",
                    End::Declined => "declined",
                    End::Interrupted => "interrupted",
                },
                if reason.is_empty() { "" } else { ": " },
            ),
            Event::Notification { time, outcome } => format!(
                "{} notification {} ({:?}) to {}: {}",
                clock(time),
                outcome.sequence,
                outcome.kind,
                outcome.receiver,
                match &outcome.error {
                    None => format!("delivered (attempt {})", outcome.attempts),
                    Some(e) => format!("UNDELIVERABLE after {} attempts: {e}", outcome.attempts),
                }
            ),
        }
    }
}

/// The time of day of an RFC 3339 timestamp.
fn clock(time: &str) -> &str {
    time.get(11..19).unwrap_or(time)
}

fn decision_text(decision: &Decision) -> String {
    match decision {
        Decision::Stay { verdict, reason } => format!("stay ({verdict}): {reason}"),
        Decision::Promote { to } => format!("promote to {to}%"),
        Decision::Complete => "last step passed".to_string(),
        Decision::RollBack { reason } => format!("roll back: {reason}"),
        Decision::Abort { verdict, reason } => format!("abort ({verdict}): {reason}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_report() {
        assert_eq!(End::Promoted.exit_code(), 0);
        assert_eq!(End::RolledBack.exit_code(), 4);
        let held = End::Aborted {
            verdict: Verdict::Hold,
        };
        assert_eq!(held.exit_code(), 3);
        let short = End::Aborted {
            verdict: Verdict::InsufficientData,
        };
        assert_eq!(short.exit_code(), 5);
        assert_eq!(End::Interrupted.exit_code(), 130);
    }

    #[test]
    fn events_are_one_json_object_each() {
        let event = Event::Weight {
            time: timestamp(1_795_676_400.0),
            step: 1,
            canary: 5,
            stable: 95,
        };
        let line = serde_json::to_string(&event).unwrap();
        assert_eq!(
            line,
            r#"{"event":"weight","time":"2026-11-26T07:00:00.000Z","step":1,"canary":5,"stable":95}"#
        );
        assert_eq!(event.text(), "07:00:00 step 1: canary 5%, stable 95%");
        let done = Event::Done {
            time: timestamp(0.0),
            end: End::RolledBack,
            canary: 0,
            exit_code: 4,
            reason: "error rate: ...".into(),
        };
        let value: serde_json::Value = serde_json::to_value(&done).unwrap();
        assert_eq!(
            (value["event"].as_str(), value["end"].as_str()),
            (Some("done"), Some("rolled_back"))
        );
    }
}
