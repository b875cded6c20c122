//! `meshctl rollout`: ramps the canary through `--steps`, checking the
//! experiment's evidence every `--interval` with the report's statistics,
//! and rolls back, holds or promotes on its own. See `README.md` beside the
//! report for the statistics and the top-level README for the workflow.
//!
//! The decisions (`engine`) and the loop (`drive`) reach the mesh only
//! through two traits: `apply::WeightApplier` sets the canary weight,
//! `evidence::EvidenceReader` reads the report's dataset over an interval.
//! On a cluster the weight goes through `helm upgrade --reuse-values`; on
//! the local mesh through its live change of values (`meshctl set`).

pub mod analysis;
pub mod apply;
pub mod drive;
pub mod engine;
pub mod events;
pub mod evidence;
pub mod metrics;
pub mod notify;
pub mod plan;
#[cfg(test)]
pub(crate) mod simulation;

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::duration;
use crate::report::{self, DecisionArgs, Gate, PrometheusArgs, Window};

use drive::{Clock, Io};
use events::{Event, EventLog, timestamp};
use plan::{Plan, parse_steps};

/// Ramp the canary (v2) step by step on a Helm release or the local mesh,
/// judged at every interval by statistics that stay valid when watched
/// continuously.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit codes: 0 promoted (or the last step reached), 3 aborted after holding \
                        or a step declined, 4 rolled back, 5 aborted for lack of data, 130 \
                        interrupted; after 3, 4, 5 and 130 the canary is at 0%. 1 the rollout \
                        failed (the canary is set to 0% if it can be), 2 usage error."
)]
pub struct RolloutArgs {
    /// Canary weights in percent, strictly increasing
    #[arg(long, default_value = "5,10,25,50,100")]
    pub steps: Steps,
    /// Least time at each step before it may be promoted
    #[arg(long, default_value = "5m", value_parser = duration::positive)]
    pub step_time: Duration,
    /// Least requests at each step, on the canary and on stable, before it may be promoted
    #[arg(long, default_value_t = 200)]
    pub step_requests: u64,
    /// Time between checks
    #[arg(long, default_value = "30s", value_parser = duration::positive)]
    pub interval: Duration,
    /// How long a step may go on past --step-time without passing before the rollout aborts
    #[arg(long, default_value = "30m", value_parser = duration::positive)]
    pub hold_limit: Duration,
    /// Ask before applying each step's weight
    #[arg(long)]
    pub confirm: bool,
    /// Helm release of the chart on the cluster
    #[arg(long, default_value = "sms-checker")]
    pub release: String,
    /// Namespace of the release
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// The chart `helm upgrade` is given (its values are reused)
    #[arg(long, default_value = crate::workspace::CHART)]
    pub chart: PathBuf,
    /// Helm, for `helm upgrade`
    #[arg(long, env = "HELM_BIN", default_value = crate::workspace::HELM)]
    pub helm: PathBuf,
    /// Roll out on the local mesh of this run folder (`meshctl run --run-dir`) instead of a release
    #[arg(long, conflicts_with_all = ["release", "namespace"])]
    pub run_dir: Option<PathBuf>,
    #[command(flatten)]
    pub source: PrometheusArgs,
    #[command(flatten)]
    pub decision: DecisionArgs,
    /// The event log: one JSON object per line
    #[arg(long, default_value = "rollout-events.jsonl")]
    pub events: PathBuf,
    /// The HTML report written at the end
    #[arg(long, default_value = "rollout-report.html")]
    pub html: PathBuf,
    /// POST a notification to URL when the rollout starts, applies a step,
    /// starts holding and ends (repeatable; FORMAT=URL sets one receiver's format)
    #[arg(long = "notify", value_name = "URL", value_parser = notify::parse_target)]
    pub notify: Vec<notify::Target>,
    /// The notifications' body: json, or a Slack or Microsoft Teams webhook message
    #[arg(long, value_enum, default_value_t = notify::Format::Json)]
    pub notify_format: notify::Format,
    /// Attempts per notification and receiver (5xx, 429 and network errors are retried)
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub notify_attempts: u32,
    /// Wait before a notification's second attempt, doubled before each next one
    #[arg(long, default_value = "1s", value_parser = duration::positive)]
    pub notify_backoff: Duration,
    /// Time limit of one notification attempt
    #[arg(long, default_value = "10s", value_parser = duration::positive)]
    pub notify_timeout: Duration,
    /// How long the finished rollout waits for notifications still being delivered
    #[arg(long, default_value = "30s", value_parser = duration::positive)]
    pub notify_drain: Duration,
    /// Serve the rollout's metrics on http://ADDR/metrics while it runs
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

/// Notifications waiting per receiver; more are reported undeliverable.
const NOTIFY_QUEUE: usize = 64;

/// The parsed `--steps`.
#[derive(Debug, Clone)]
pub struct Steps(pub Vec<u8>);

impl std::str::FromStr for Steps {
    type Err = String;
    fn from_str(text: &str) -> Result<Steps, String> {
        parse_steps(text).map(Steps)
    }
}

/// Real time; a signal sets `stop`.
struct SystemClock {
    stop: Arc<AtomicBool>,
}

impl Clock for SystemClock {
    fn now(&mut self) -> f64 {
        report::now()
    }

    fn wait_until(&mut self, time: f64) -> bool {
        while !self.stop.load(Ordering::Relaxed) {
            let left = time - report::now();
            if left <= 0.0 {
                return true;
            }
            std::thread::sleep(Duration::from_secs_f64(left.min(0.1)));
        }
        false
    }
}

/// Reads y/yes or an empty line on stdin as yes; anything else, or a closed
/// stdin, as no.
fn ask(step: usize, canary: u8) -> bool {
    eprint!("step {step}: set the canary to {canary}%? [Y/n] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    match std::io::stdin().lock().read_line(&mut line) {
        Ok(0) | Err(_) => false,
        Ok(_) => matches!(line.trim().to_lowercase().as_str(), "" | "y" | "yes"),
    }
}

/// How long a weight change on the local mesh may take to reach every proxy.
const LOCAL_APPLY_TIMEOUT: Duration = Duration::from_secs(60);

pub fn run(args: RolloutArgs) -> anyhow::Result<ExitCode> {
    let plan = match Plan::new(
        args.steps.0.clone(),
        args.step_time,
        args.step_requests,
        args.interval,
        args.hold_limit,
        args.confirm,
    ) {
        Ok(plan) => plan,
        Err(usage) => {
            // A usage error, like clap's: exit 2.
            eprintln!("meshctl rollout: {usage}");
            return Ok(ExitCode::from(2));
        }
    };
    let mut weights: Box<dyn apply::WeightApplier> = match &args.run_dir {
        Some(run_dir) => {
            if !run_dir.join("state.json").exists() {
                bail!(
                    "--run-dir: no local mesh runs in {} (start one with `make run`)",
                    run_dir.display()
                );
            }
            Box::new(apply::LocalMesh {
                run_dir: run_dir.clone(),
                timeout: LOCAL_APPLY_TIMEOUT,
            })
        }
        None => {
            if !args.helm.exists() {
                bail!(
                    "--helm: no helm at {} (run `make tools`, or set HELM_BIN)",
                    args.helm.display()
                );
            }
            Box::new(apply::Helm {
                helm: args.helm.clone(),
                chart: args.chart.clone(),
                release: args.release.clone(),
                namespace: args.namespace.clone(),
            })
        }
    };
    let settings = args.decision.settings(Gate::Canary, None);
    let mut reader = evidence::FromPrometheus {
        client: args.source.client()?,
        names: args.source.names(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).context("install signal handler")?;
    }
    let mut clock = SystemClock { stop };
    let log_file = Arc::new(
        EventLog::create(&args.events)
            .with_context(|| format!("--events: cannot create {}", args.events.display()))?,
    );
    let metrics = Arc::new(metrics::RolloutMetrics::new()?);
    let _server = match args.metrics_addr {
        Some(addr) => {
            let server = metrics::serve(addr, Arc::clone(&metrics))?;
            println!("rollout metrics: http://{}/metrics", server.addr);
            Some(server)
        }
        None => None,
    };
    let notifier = start_notifier(&args, Arc::clone(&log_file))?;
    let mut tracker = notify::Tracker::default();
    let mut log = |event: &Event| {
        println!("{}", event.text());
        log_file.write(event);
        metrics.on(event);
        if let (Some(notifier), Some(notification)) = (&notifier, tracker.on(event)) {
            notifier.send(&notification);
        }
    };
    let mut confirm = ask;
    let outcome = drive::drive(
        plan,
        settings.clone(),
        &mut Io {
            weights: weights.as_mut(),
            evidence: &mut reader,
            clock: &mut clock,
            confirm: &mut confirm,
            log: &mut log,
        },
    );
    // The notifications of the end (or of a failure) still go out.
    if let Some(notifier) = notifier {
        notifier.finish(args.notify_drain);
    }
    let outcome = outcome?;
    if let Some(e) = log_file.error() {
        eprintln!(
            "meshctl rollout: the event log {} is incomplete: {e}",
            args.events.display()
        );
    }
    write_report(&args, &mut reader, settings, &outcome);
    Ok(ExitCode::from(outcome.end.exit_code()))
}

/// A delivery thread per `--notify` receiver; every outcome goes to the
/// event log, and an undeliverable one to stderr too.
fn start_notifier(
    args: &RolloutArgs,
    log: Arc<EventLog>,
) -> anyhow::Result<Option<notify::Notifier>> {
    if args.notify.is_empty() {
        return Ok(None);
    }
    let targets = args
        .notify
        .iter()
        .map(|t| (t.url.clone(), t.format.unwrap_or(args.notify_format)))
        .collect();
    let delivery = notify::Delivery {
        attempts: args.notify_attempts,
        backoff: args.notify_backoff,
        timeout: args.notify_timeout,
        queue: NOTIFY_QUEUE,
    };
    let report = Arc::new(move |outcome: notify::Outcome| {
        let event = Event::Notification {
            time: timestamp(report::now()),
            outcome,
        };
        if let Event::Notification { outcome, .. } = &event
            && !outcome.delivered
        {
            eprintln!("meshctl rollout: {}", event.text());
        }
        log.write(&event);
    });
    Ok(Some(notify::Notifier::start(targets, delivery, report)?))
}

/// The report's HTML page over the whole rollout, its canary comparison the
/// rollout's own (judged interval by interval). A failure here is reported
/// but does not change the rollout's exit code.
fn write_report(
    args: &RolloutArgs,
    reader: &mut evidence::FromPrometheus,
    settings: report::Settings,
    outcome: &drive::Outcome,
) {
    let window = Window {
        start: outcome.start,
        end: outcome.finish,
        seconds: outcome.finish - outcome.start,
    };
    let written = evidence::EvidenceReader::read(reader, &window).and_then(|data| {
        let comparisons = outcome.comparison.clone().into_iter().collect();
        let page = report::html::page(&report::assemble(
            &args.source.prometheus,
            window,
            settings,
            &data,
            comparisons,
        ));
        std::fs::write(&args.html, page)
            .with_context(|| format!("--html: cannot write {}", args.html.display()))
    });
    match written {
        Ok(()) => println!("report: {}", args.html.display()),
        Err(e) => eprintln!("meshctl rollout: no HTML report: {e:#}"),
    }
}
