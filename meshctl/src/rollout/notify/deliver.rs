//! Delivery: a thread and a bounded queue per receiver, retries with
//! backoff, and an outcome for every notification at every receiver.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver as Queue, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::body::body;
use super::{Format, Kind, Notification};

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
