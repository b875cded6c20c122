//! Flags and environment variables (clap): every flag has an env twin so a
//! container is configured by its environment alone.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::model::Version;

/// The models folder of the checkout the binary was built from; images set
/// `MODELS_DIR` instead.
pub const DEFAULT_MODELS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models");

#[derive(Debug, Parser)]
#[command(
    name = "model-service",
    version,
    about = "SMS spam classifier service (model versions v1, v2, v3)",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Without a subcommand, `model-service` serves.
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (the default).
    Serve(ServeArgs),
    /// Train the models on the dataset's training split and write artifacts.
    Train(TrainArgs),
    /// Score the committed artifacts on the test split.
    Evaluate(EvaluateArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// The model version to serve.
    #[arg(long, env = "MODEL_VERSION", value_enum, default_value = "v1")]
    pub model_version: Version,
    /// Address to listen on.
    #[arg(long, env = "SERVER_HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,
    /// Port to listen on.
    #[arg(long, env = "SERVER_PORT", default_value_t = 8081)]
    pub port: u16,
    /// Folder holding `v1.json`, `v2.json`, `v3.json`.
    #[arg(long, env = "MODELS_DIR", default_value = DEFAULT_MODELS_DIR)]
    pub models_dir: PathBuf,
    /// Seconds to keep answering (readiness false) after SIGTERM before
    /// closing the listener; give Kubernetes time to remove the endpoint.
    #[arg(long, env = "SHUTDOWN_DRAIN_SECONDS", default_value_t = 0.0)]
    pub drain_seconds: f64,
    /// Worker threads of the runtime (0: one per CPU).
    #[arg(long, env = "SERVER_THREADS", default_value_t = 0)]
    pub threads: usize,
    /// Log format on stdout; the level comes from `RUST_LOG` (default info).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Args)]
pub struct DataArgs {
    /// The SMS Spam Collection file (default:
    /// `$SMS_SHARED_DIR/data/sms-spam-collection/SMSSpamCollection`).
    #[arg(long, env = "SMS_DATASET")]
    pub dataset: Option<PathBuf>,
    /// Folder of the artifacts.
    #[arg(long, env = "MODELS_DIR", default_value = DEFAULT_MODELS_DIR)]
    pub models_dir: PathBuf,
}

impl DataArgs {
    pub fn dataset_path(&self) -> PathBuf {
        self.dataset
            .clone()
            .unwrap_or_else(crate::dataset::default_path)
    }
}

#[derive(Debug, Clone, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Train only these versions (default: all).
    #[arg(long = "version", value_enum)]
    pub versions: Vec<Version>,
}

#[derive(Debug, Clone, Args)]
pub struct EvaluateArgs {
    #[command(flatten)]
    pub data: DataArgs,
}

impl ServeArgs {
    pub fn drain(&self) -> Result<std::time::Duration, String> {
        std::time::Duration::try_from_secs_f64(self.drain_seconds)
            .map_err(|err| format!("--drain-seconds {}: {err}", self.drain_seconds))
    }
}
