//! `meshctl`: parses the command line and dispatches; the work lives in the
//! library (`lib.rs`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use meshctl::{gate, image, mesh, report, rollout};

#[derive(Parser)]
#[command(
    name = "meshctl",
    version,
    about = "The sms-checker mesh workspace CLI"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Bring up the local mesh from the chart, driven by Istio's own control plane
    Run(mesh::RunArgs),
    /// Change chart values of the running local mesh (as `helm upgrade --reuse-values --set`)
    Set(mesh::SetArgs),
    /// Compare the experiment's versions on Prometheus data: tables, histograms, a verdict
    Report(report::ReportArgs),
    /// Ramp the canary step by step, judged at every interval; roll back on evidence of harm
    Rollout(rollout::RolloutArgs),
    /// Serve the verdict to Flagger's webhooks and Argo Rollouts' web metric
    Gate(gate::GateArgs),
    /// Build the filter and model-service OCI images without Docker, and push them
    Image(image::ImageArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => mesh::run(args),
        Command::Set(args) => mesh::set(args),
        Command::Report(args) => report::run(args),
        Command::Rollout(args) => rollout::run(args),
        Command::Gate(args) => gate::run(args),
        Command::Image(args) => image::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("meshctl: {err:#}");
            ExitCode::FAILURE
        }
    }
}
