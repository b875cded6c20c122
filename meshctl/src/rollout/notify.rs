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

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver as Queue, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};

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

/// The request body of `notification` for a receiver of `format`.
pub fn body(notification: &Notification, format: Format) -> Value {
    let evidence: Vec<String> = notification
        .evidence
        .iter()
        .map(|c| format!("{} {}: {}", c.metric, c.outcome, c.detail))
        .collect();
    match format {
        Format::Json => serde_json::to_value(notification).unwrap_or(Value::Null),
        Format::Slack => {
            let mut text = format!("*{}*", notification.summary);
            if !notification.reason.is_empty() {
                text.push_str(&format!("\n>{}", notification.reason));
            }
            for line in &evidence {
                text.push_str(&format!("\n• {line}"));
            }
            json!({ "text": text })
        }
        Format::Teams => {
            let mut card = vec![json!({
                "type": "TextBlock", "text": notification.summary,
                "weight": "Bolder", "size": "Medium", "wrap": true,
            })];
            if !notification.reason.is_empty() {
                card.push(json!({"type": "TextBlock", "text": notification.reason, "wrap": true}));
            }
            if !notification.evidence.is_empty() {
                let facts: Vec<Value> = notification
                    .evidence
                    .iter()
                    .map(|c| {
                        json!({"title": c.metric.to_string(), "value": format!("{}: {}", c.outcome, c.detail)})
                    })
                    .collect();
                card.push(json!({"type": "FactSet", "facts": facts}));
            }
            json!({
                "type": "message",
                "attachments": [{
                    "contentType": "application/vnd.microsoft.card.adaptive",
                    "contentUrl": null,
                    "content": {
                        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                        "type": "AdaptiveCard",
                        "version": "1.4",
                        "body": card,
                    },
                }],
            })
        }
    }
}

/// How hard to try.
#[derive(Debug, Clone, Copy)]
pub struct Delivery {
    /// Attempts per notification and receiver (at least 1).
    pub attempts: u32,
    /// Wait before the second attempt; doubled before each next one.
    pub backoff: Duration,
    /// Per attempt.
    pub timeout: Duration,
    /// Notifications waiting per receiver; more are undeliverable.
    pub queue: usize,
}

/// The fate of one notification at one receiver.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub sequence: u64,
    pub kind: Kind,
    pub receiver: String,
    pub delivered: bool,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

type Report = Arc<dyn Fn(Outcome) + Send + Sync>;

struct Worker {
    url: String,
    queue: SyncSender<Notification>,
    thread: JoinHandle<()>,
}

pub struct Notifier {
    workers: Vec<Worker>,
    stop: Arc<AtomicBool>,
    report: Report,
}

impl Notifier {
    /// A thread per receiver; `report` hears every outcome.
    pub fn start(
        targets: Vec<(String, Format)>,
        delivery: Delivery,
        report: Report,
    ) -> anyhow::Result<Notifier> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        for (url, format) in targets {
            let (queue, incoming) = sync_channel(delivery.queue.max(1));
            let (stop, report, receiver) = (stop.clone(), report.clone(), url.clone());
            let thread = std::thread::Builder::new()
                .name("notify".into())
                .spawn(move || {
                    deliver_all(&receiver, format, delivery, incoming, &stop, &report)
                })?;
            workers.push(Worker { url, queue, thread });
        }
        Ok(Notifier {
            workers,
            stop,
            report,
        })
    }

    /// Queues `notification` for every receiver; never waits.
    pub fn send(&self, notification: &Notification) {
        for worker in &self.workers {
            match worker.queue.try_send(notification.clone()) {
                Ok(()) => {}
                Err(TrySendError::Full(n) | TrySendError::Disconnected(n)) => {
                    (self.report)(undelivered(&n, &worker.url, 0, "its queue is full"))
                }
            }
        }
    }

    /// Lets the queues drain for at most `drain`, then gives up on what is
    /// left (reported undeliverable) and waits for the attempts in flight.
    pub fn finish(self, drain: Duration) {
        let deadline = Instant::now() + drain;
        let threads: Vec<JoinHandle<()>> = self.workers.into_iter().map(|w| w.thread).collect();
        while Instant::now() < deadline && !threads.iter().all(JoinHandle::is_finished) {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop.store(true, Ordering::Relaxed);
        for thread in threads {
            let _ = thread.join();
        }
    }
}

fn undelivered(n: &Notification, receiver: &str, attempts: u32, error: &str) -> Outcome {
    Outcome {
        sequence: n.sequence,
        kind: n.kind,
        receiver: receiver.to_string(),
        delivered: false,
        attempts,
        error: Some(error.to_string()),
    }
}

fn deliver_all(
    receiver: &str,
    format: Format,
    delivery: Delivery,
    incoming: Queue<Notification>,
    stop: &AtomicBool,
    report: &Report,
) {
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(delivery.timeout))
        .http_status_as_error(false)
        .build()
        .new_agent();
    for notification in incoming {
        if stop.load(Ordering::Relaxed) {
            report(undelivered(
                &notification,
                receiver,
                0,
                "the rollout ended before it was sent",
            ));
            continue;
        }
        report(deliver(
            &agent,
            receiver,
            format,
            delivery,
            &notification,
            stop,
        ));
    }
}

/// Attempts until a 2xx, a refusal that a retry cannot change (a 4xx other
/// than 429), the last attempt, or the end of the rollout.
fn deliver(
    agent: &ureq::Agent,
    receiver: &str,
    format: Format,
    delivery: Delivery,
    notification: &Notification,
    stop: &AtomicBool,
) -> Outcome {
    let body = body(notification, format).to_string();
    let mut wait = delivery.backoff;
    let mut error = String::new();
    let attempts = delivery.attempts.max(1);
    for attempt in 1..=attempts {
        let sent = agent
            .post(receiver)
            .header("content-type", "application/json")
            .send(body.as_str());
        let retry = match sent {
            Ok(response) if response.status().is_success() => {
                return Outcome {
                    sequence: notification.sequence,
                    kind: notification.kind,
                    receiver: receiver.to_string(),
                    delivered: true,
                    attempts: attempt,
                    error: None,
                };
            }
            Ok(response) => {
                let status = response.status();
                error = format!("HTTP {status}");
                status.as_u16() == 429 || status.is_server_error()
            }
            Err(e) => {
                error = e.to_string();
                true
            }
        };
        if !retry || attempt == attempts {
            return undelivered(notification, receiver, attempt, &error);
        }
        // Sleeps in steps so that the rollout's end cuts the wait short.
        let until = Instant::now() + wait;
        while Instant::now() < until {
            if stop.load(Ordering::Relaxed) {
                let why = format!("{error}; the rollout ended before the next attempt");
                return undelivered(notification, receiver, attempt, &why);
            }
            std::thread::sleep(Duration::from_millis(20).min(wait));
        }
        wait = wait.saturating_mul(2);
    }
    undelivered(notification, receiver, attempts, &error)
}

#[cfg(test)]
mod tests {
    use super::super::engine::{ArmCount, Progress};
    use super::super::events::timestamp;
    use super::*;
    use crate::report::model::Metric;

    fn check(decision: Decision) -> Event {
        let arm = ArmCount::default();
        Event::Check {
            time: timestamp(60.0),
            verdict: Verdict::Hold,
            decision,
            progress: Progress {
                step: 1,
                steps: 2,
                weight: 5,
                seconds_in_step: 60.0,
                canary_in_step: arm,
                stable_in_step: arm,
                canary_total: arm,
                stable_total: arm,
            },
            checks: vec![CheckLine {
                metric: Metric::ErrorRate,
                outcome: Verdict::Hold,
                detail: "0.00% vs 0.00%, at most 3.10%".into(),
                rates: None,
                sample_ratio: None,
            }],
        }
    }

    fn hold() -> Decision {
        Decision::Stay {
            verdict: Verdict::Hold,
            reason: "error rate: 0.00% vs 0.00%, at most 3.10%".into(),
        }
    }

    // Start, step 1, each hold as it begins (held, held again: no second
    // notification; waiting; held: a new hold), and the roll-back; the
    // stop's 0 % is not a step of its own.
    #[test]
    fn the_start_each_step_a_hold_once_and_the_end_are_notified() {
        let mut tracker = Tracker::default();
        let events = [
            Event::Start {
                time: timestamp(0.0),
                target: "helm release r in namespace n".into(),
                steps: vec![5, 100],
                interval_seconds: 30.0,
            },
            Event::Weight {
                time: timestamp(1.0),
                step: 1,
                canary: 5,
                stable: 95,
            },
            check(hold()),
            check(hold()),
            check(Decision::Stay {
                verdict: Verdict::InsufficientData,
                reason: "waiting".into(),
            }),
            check(hold()),
            Event::Weight {
                time: timestamp(2.0),
                step: 0,
                canary: 0,
                stable: 100,
            },
            Event::Done {
                time: timestamp(3.0),
                end: End::RolledBack,
                canary: 0,
                exit_code: 4,
                reason: "error rate: 9.00% vs 0.00%".into(),
            },
        ];
        let sent: Vec<Notification> = events.iter().filter_map(|e| tracker.on(e)).collect();
        let kinds: Vec<Kind> = sent.iter().map(|n| n.kind).collect();
        assert_eq!(
            kinds,
            [
                Kind::Started,
                Kind::Step,
                Kind::Hold,
                Kind::Hold,
                Kind::RolledBack
            ]
        );
        assert_eq!(
            sent.iter().map(|n| n.sequence).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
        let done = &sent[4];
        assert_eq!((done.canary, done.step, done.steps), (0, 1, 2));
        assert_eq!(done.reason, "error rate: 9.00% vs 0.00%");
        assert_eq!(done.evidence[0].metric, Metric::ErrorRate);
        assert_eq!(
            done.summary,
            "Rollout on helm release r in namespace n: ROLLED BACK: canary at 0%"
        );
        assert!(sent[2].reason.starts_with("error rate: 0.00%"));
    }

    #[test]
    fn each_format_carries_the_summary_reason_and_evidence() {
        let mut tracker = Tracker::default();
        tracker.on(&check(hold()));
        let n = tracker
            .on(&Event::Done {
                time: timestamp(3.0),
                end: End::Aborted {
                    verdict: Verdict::Hold,
                },
                canary: 0,
                exit_code: 3,
                reason: "step 1 (5%) not passed".into(),
            })
            .unwrap();
        let json = body(&n, Format::Json);
        assert_eq!(json["kind"], "aborted");
        assert_eq!(json["evidence"][0]["metric"], "error_rate");
        assert_eq!(json["reason"], "step 1 (5%) not passed");
        let slack = body(&n, Format::Slack);
        let text = slack["text"].as_str().unwrap();
        assert!(
            text.starts_with("*Rollout on : aborted at step 0/0"),
            "{text}"
        );
        assert!(
            text.contains("\n>step 1 (5%) not passed\n• error rate hold: 0.00%"),
            "{text}"
        );
        let teams = body(&n, Format::Teams);
        let card = &teams["attachments"][0];
        assert_eq!(
            card["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        assert_eq!(card["content"]["type"], "AdaptiveCard");
        let blocks = card["content"]["body"].as_array().unwrap();
        assert_eq!(blocks[1]["text"], "step 1 (5%) not passed");
        assert_eq!(blocks[2]["facts"][0]["title"], "error rate");
    }

    #[test]
    fn a_receiver_is_a_url_with_an_optional_format() {
        assert_eq!(
            parse_target("https://hooks.slack.com/services/T/B/X"),
            Ok(Target {
                url: "https://hooks.slack.com/services/T/B/X".into(),
                format: None
            })
        );
        assert_eq!(
            parse_target("teams=https://example.org/hook?a=b").map(|t| t.format),
            Ok(Some(Format::Teams))
        );
        // An '=' inside the URL's query is not a format.
        assert_eq!(
            parse_target("http://127.0.0.1:9/x?a=b").map(|t| t.format),
            Ok(None)
        );
        assert!(
            parse_target("discord=https://x")
                .unwrap_err()
                .contains("json, slack, teams")
        );
        assert!(
            parse_target("hooks.slack.com")
                .unwrap_err()
                .contains("not an http")
        );
        assert!(parse_target("https://").is_err());
    }
}
