//! `meshctl run`: the local mesh, run by Istio's own control plane on the
//! Helm chart rendered with the same values a cluster install would use.
//!
//! meshctl renders the charts (this project's, Istio's istiod and gateway
//! charts), starts `istiod-local` (Istio's pilot and CA on a synthesized
//! one-node cluster), and then does what a kubelet does with the pods that
//! control plane planned: network namespaces, volumes, init containers,
//! containers (Istio's pilot-agent and Envoy, the model-service). The
//! proxies get all their configuration from Istio over xDS.
//!
//! While it runs, `<run-dir>/state.json` describes every component (see
//! [`state::State`]). Dropping a file `<run-dir>/control/<component>.<action>`
//! (action `stop`, `start` or `restart`) acts on that component; `meshctl
//! set` hands new chart values to the running mesh the same way (see
//! [`values`]).

mod check;
mod control;
mod forward;
mod istio;
mod network;
mod pods;
mod prometheus;
mod run;
pub mod state;
mod supervisor;
pub mod values;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::workspace;

pub use run::run;
pub use values::{SetArgs, set};

/// Options of `meshctl run`.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Chart values, as `helm --set` takes them (repeatable; commas allowed)
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// The Helm chart to render
    #[arg(long, default_value = workspace::CHART)]
    pub chart: PathBuf,
    /// Run this already rendered manifest (e.g. `helm template` output,
    /// edited) instead of rendering the chart; not with --set. Its
    /// WasmPlugin urls are used as they are (use file:// for a local module)
    #[arg(long, conflicts_with = "set")]
    pub manifest: Option<PathBuf>,
    /// Release name for `helm template`
    #[arg(long, default_value = "sms-checker")]
    pub release: String,
    /// Folder for logs, rendered manifests, pods, Prometheus data and state.json
    #[arg(long, default_value = workspace::RUN_DIR)]
    pub run_dir: PathBuf,
    /// Port on 127.0.0.1 forwarded to the ingress gateway (as
    /// `kubectl port-forward svc/istio-ingressgateway <port>:80`)
    #[arg(long, default_value_t = 8080)]
    pub gateway_port: u16,
    /// Prometheus port on 127.0.0.1
    #[arg(long, default_value_t = 9090)]
    pub prometheus_port: u16,
    /// Prometheus scrape interval
    #[arg(long, default_value = "5s", value_parser = crate::duration::positive)]
    pub scrape_interval: Duration,
    /// Helm, for `helm template`
    #[arg(long, env = "HELM_BIN", default_value = workspace::HELM)]
    pub helm: PathBuf,
    /// Envoy, which Istio's agent runs for every proxy
    #[arg(long, env = "ENVOY_BIN", default_value = workspace::ENVOY)]
    pub envoy: PathBuf,
    /// Istio's control plane, agent, charts and bootstrap template (`make istio`)
    #[arg(long, env = "ISTIO_DIR", default_value = workspace::ISTIO_DIR)]
    pub istio_dir: PathBuf,
    /// Values for Istio's istiod chart: what differs from a cluster install
    #[arg(long, default_value = workspace::ISTIOD_VALUES)]
    pub istiod_values: PathBuf,
    /// Values for Istio's gateway chart (the filter's stat tags)
    #[arg(long, default_value = workspace::GATEWAY_VALUES)]
    pub gateway_values: PathBuf,
    /// Prometheus; when missing the mesh runs without it
    #[arg(long, env = "PROMETHEUS_BIN", default_value = "/usr/bin/prometheus")]
    pub prometheus: PathBuf,
    /// The model-service binary, for the chart's model-service image
    #[arg(long, env = "MODEL_SERVICE_BIN", default_value = workspace::MODEL_SERVICE_BIN)]
    pub model_service: PathBuf,
    /// The trained models the model-service loads
    #[arg(long, env = "MODELS_DIR", default_value = workspace::MODELS_DIR)]
    pub models_dir: PathBuf,
    /// The cohort filter module the WasmPlugins load (`filter.url=file://...`)
    #[arg(long, env = "FILTER_WASM", default_value = workspace::FILTER_WASM)]
    pub wasm: PathBuf,
    /// Render the charts and have Istio validate and translate them: write
    /// each proxy's bootstrap and xDS resources to <run-dir>/istio, and exit
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("{what} not found at {path} ({hint})")]
pub struct Missing {
    what: &'static str,
    path: PathBuf,
    hint: &'static str,
}

fn require(what: &'static str, path: &Path, hint: &'static str) -> Result<(), Missing> {
    if path.exists() {
        Ok(())
    } else {
        Err(Missing {
            what,
            path: path.to_path_buf(),
            hint,
        })
    }
}

fn abs(path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("resolve {}", path.display()))
}
