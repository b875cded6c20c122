//! Flags and environment variables (clap): every flag has an env twin so a
//! container is configured by its environment alone.

use std::net::IpAddr;
use std::path::PathBuf;

use axum::http::HeaderName;
use clap::{Args, Parser, Subcommand, ValueEnum};
use sms_checker_filter::config::{DEFAULT_COHORT_HEADER, DEFAULT_PREDICTION_HEADER};

use crate::headers::{HeaderClash, HeaderNames};
use crate::model::Version;

/// The environment variables the service reads. The chart's Deployment sets
/// some of them (tests/tests/chart_values.rs checks it sets no other name).
pub mod env {
    pub const MODEL_VERSION: &str = "MODEL_VERSION";
    pub const SERVER_HOST: &str = "SERVER_HOST";
    pub const SERVER_PORT: &str = "SERVER_PORT";
    pub const MODELS_DIR: &str = "MODELS_DIR";
    pub const SHUTDOWN_DRAIN_SECONDS: &str = "SHUTDOWN_DRAIN_SECONDS";
    pub const SERVER_THREADS: &str = "SERVER_THREADS";
    pub const LOG_FORMAT: &str = "LOG_FORMAT";
    pub const PREDICTION_HEADER: &str = "PREDICTION_HEADER";
    pub const COHORT_HEADER: &str = "COHORT_HEADER";
    pub const COHORT_RESPONSE_HEADER: &str = "COHORT_RESPONSE_HEADER";
    pub const SMS_DATASET: &str = "SMS_DATASET";
    /// The shared folder holding the dataset (see [`crate::dataset`]).
    pub const SMS_SHARED_DIR: &str = "SMS_SHARED_DIR";
}

/// The port the service listens on unless told otherwise (and the one its
/// image exposes).
pub const DEFAULT_PORT: u16 = 8081;

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
    #[arg(long, env = env::MODEL_VERSION, value_enum, default_value = "v1")]
    pub model_version: Version,
    /// Address to listen on.
    #[arg(long, env = env::SERVER_HOST, default_value = "0.0.0.0")]
    pub host: IpAddr,
    /// Port to listen on.
    #[arg(long, env = env::SERVER_PORT, default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// Folder holding `v1.json`, `v2.json`, `v3.json`.
    #[arg(long, env = env::MODELS_DIR, default_value = DEFAULT_MODELS_DIR)]
    pub models_dir: PathBuf,
    /// Seconds to keep answering (readiness false) after SIGTERM before
    /// closing the listener; give Kubernetes time to remove the endpoint.
    #[arg(long, env = env::SHUTDOWN_DRAIN_SECONDS, default_value_t = 0.0)]
    pub drain_seconds: f64,
    /// Worker threads of the runtime (0: one per CPU).
    #[arg(long, env = env::SERVER_THREADS, default_value_t = 0)]
    pub threads: usize,
    /// Log format on stdout; the level comes from `RUST_LOG` (default info).
    #[arg(long, env = env::LOG_FORMAT, value_enum, default_value = "json")]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub headers: HeaderArgs,
}

/// The header names the service shares with the cohort filter; the chart
/// passes the same values to both.
#[derive(Debug, Clone, Args)]
pub struct HeaderArgs {
    /// Response header with the verdict (spam or ham), which the sidecar's
    /// cohort filter counts by.
    #[arg(long, env = env::PREDICTION_HEADER, default_value = DEFAULT_PREDICTION_HEADER)]
    pub prediction_header: HeaderName,
    /// Request header the gateway's cohort filter sets to the user's cohort;
    /// its value is echoed in the cohort response header.
    #[arg(long, env = env::COHORT_HEADER, default_value = DEFAULT_COHORT_HEADER)]
    pub cohort_header: HeaderName,
    /// Response header that tells the client its cohort (the gateway sets
    /// the same one); the /sms page shows it. Default: the cohort header.
    #[arg(long, env = env::COHORT_RESPONSE_HEADER)]
    pub cohort_response_header: Option<HeaderName>,
}

impl HeaderArgs {
    pub fn names(&self) -> Result<HeaderNames, HeaderClash> {
        HeaderNames::new(
            self.prediction_header.clone(),
            self.cohort_header.clone(),
            self.cohort_response_header
                .clone()
                .unwrap_or_else(|| self.cohort_header.clone()),
        )
    }
}

#[derive(Debug, Clone, Args)]
pub struct DataArgs {
    /// The SMS Spam Collection file (default:
    /// `$SMS_SHARED_DIR/data/sms-spam-collection/SMSSpamCollection`).
    #[arg(long, env = env::SMS_DATASET)]
    pub dataset: Option<PathBuf>,
    /// Folder of the artifacts.
    #[arg(long, env = env::MODELS_DIR, default_value = DEFAULT_MODELS_DIR)]
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
    /// Every environment variable `serve` reads: its flags' twins.
    pub fn env_names() -> Vec<String> {
        ServeArgs::augment_args(clap::Command::new("serve"))
            .get_arguments()
            .filter_map(|arg| arg.get_env())
            .map(|name| name.to_string_lossy().into_owned())
            .collect()
    }

    pub fn drain(&self) -> Result<std::time::Duration, String> {
        std::time::Duration::try_from_secs_f64(self.drain_seconds)
            .map_err(|err| format!("--drain-seconds {}: {err}", self.drain_seconds))
    }
}
