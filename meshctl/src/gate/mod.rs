//! `meshctl gate serve`: the experiment's verdict for the progressive
//! delivery controllers teams already run. Flagger's webhooks and Argo
//! Rollouts' `web` metric provider ask over HTTP; each canary revision is a
//! session judged interval by interval with `rollout::analysis`, the
//! statistics and the code `meshctl rollout` uses. The controller moves the
//! workloads; the cohorts stay the gateway filter's (see the top-level
//! README for the routing each controller needs to keep users sticky).

pub mod hooks;
pub mod http;
pub mod sessions;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;

use crate::duration;
use crate::report::{self, DecisionArgs, Gate as GateRole, PrometheusArgs, parse_percent};
use crate::rollout::evidence::FromPrometheus;

use sessions::{Policy, Sessions};

/// The gate's port: its default `--listen`, the chart's `gate.port`, the
/// port meshctl's image exposes.
pub const PORT: u16 = 8090;

#[derive(Debug, clap::Args)]
pub struct GateArgs {
    #[command(subcommand)]
    command: GateCommand,
}

#[derive(Debug, clap::Subcommand)]
enum GateCommand {
    /// Answer Flagger's webhooks and Argo Rollouts' web metric with the verdict
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (0.0.0.0:8090 in a pod)
    #[arg(long, default_value_t = SocketAddr::from(([127, 0, 0, 1], PORT)))]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub source: PrometheusArgs,
    #[command(flatten)]
    pub decision: DecisionArgs,
    /// The canary cohort's percent of new users (the chart's
    /// istio.trafficSplit.canary): turns on the sample ratio check
    #[arg(long, value_parser = parse_percent)]
    pub canary_weight: Option<f64>,
    /// A call closer than this to its session's last judged interval gets
    /// that judgement again (Flagger asks several hooks per iteration)
    #[arg(long, default_value = "10s", value_parser = duration::positive)]
    pub min_interval: Duration,
    /// How far back confirm-rollout looks at the cohort assignment
    #[arg(long, default_value = "10m", value_parser = duration::positive)]
    pub preflight_window: Duration,
    /// Analyses kept at once; the least recently asked goes first
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub max_sessions: u64,
    /// An analysis nobody asked about for this long is forgotten
    #[arg(long, default_value = "24h", value_parser = duration::positive)]
    pub session_ttl: Duration,
}

pub fn run(args: GateArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        GateCommand::Serve(args) => serve(args),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let policy = Policy {
        settings: args.decision.settings(GateRole::Canary, None),
        canary_share: args.canary_weight.map(|w| w / 100.0),
        min_interval: args.min_interval.as_secs_f64(),
        max_sessions: args.max_sessions as usize,
        ttl: args.session_ttl.as_secs_f64(),
    };
    let gate = http::Gate {
        sessions: Sessions::new(policy),
        reader: Box::new(FromPrometheus {
            client: args.source.client()?,
            names: args.source.names(),
        }),
        preflight_window: args.preflight_window.as_secs_f64(),
        now: Box::new(report::now),
    };
    let router = http::router(Arc::new(Mutex::new(gate)));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the HTTP runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("--listen: cannot listen on {}", args.listen))?;
        println!(
            "meshctl gate: listening on http://{} (Prometheus {})",
            listener.local_addr().unwrap_or(args.listen),
            args.source.prometheus
        );
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown())
            .await
            .context("serve")
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Ctrl-C or SIGTERM (a pod's stop) ends the server after the requests in flight.
async fn shutdown() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

#[cfg(test)]
mod tests;
