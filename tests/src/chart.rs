//! Rendering the Helm chart with the real `helm`, and finding objects in
//! what it rendered. Validating them is [`crate::schemas`]'s job.

use std::fmt;
use std::path::PathBuf;
use std::process::Command;

use meshctl::chart::Render;
use serde_json::Value;

use crate::{helm_bin, workspace_root};

/// A chart that failed to render, lint or validate.
#[derive(Debug)]
pub enum ChartError {
    /// helm failed (its message is in the error), or printed no valid YAML.
    Render(meshctl::chart::ChartError),
    /// A validator could not be started.
    Spawn { tool: PathBuf, error: String },
    /// A validator's input could not be written.
    Yaml(String),
    /// An object does not match its schema.
    Invalid { object: String, errors: Vec<String> },
    /// A pinned CRD file is missing or not the pinned file.
    Crds(String),
}

impl fmt::Display for ChartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChartError::Render(err) => write!(f, "{err}"),
            ChartError::Spawn { tool, error } => {
                write!(f, "cannot run {}: {error}", tool.display())
            }
            ChartError::Yaml(msg) => write!(f, "validator input: {msg}"),
            ChartError::Invalid { object, errors } => {
                write!(f, "{object} is invalid:\n  {}", errors.join("\n  "))
            }
            ChartError::Crds(msg) => write!(f, "CRDs: {msg}"),
        }
    }
}

impl std::error::Error for ChartError {}

impl From<meshctl::chart::ChartError> for ChartError {
    fn from(err: meshctl::chart::ChartError) -> ChartError {
        ChartError::Render(err)
    }
}

impl ChartError {
    /// What helm said when it refused to render or lint, if that is the failure.
    pub fn helm_message(&self) -> Option<&str> {
        match self {
            ChartError::Render(meshctl::chart::ChartError::HelmFailed { output, .. }) => {
                Some(output)
            }
            _ => None,
        }
    }
}

/// The chart's folder.
pub fn chart_dir() -> PathBuf {
    workspace_root().join(meshctl::workspace::CHART)
}

/// Runs `command` to completion, capturing its output.
pub(crate) fn run(command: &mut Command) -> Result<std::process::Output, ChartError> {
    command.output().map_err(|e| ChartError::Spawn {
        tool: PathBuf::from(command.get_program()),
        error: e.to_string(),
    })
}

/// Runs helm (`make tools`) with `args`; stdout on success.
pub fn helm(args: &[&str]) -> Result<String, ChartError> {
    Ok(meshctl::chart::run_helm(&helm_bin(), args)?)
}

/// The chart rendered by meshctl as release `sms-checker` in namespace
/// `demo`, with `--set key=value` pairs: one JSON value per object.
pub fn render(sets: &[(&str, &str)]) -> Result<Vec<Value>, ChartError> {
    let yaml = meshctl::chart::render(
        &helm_bin(),
        &Render {
            chart: chart_dir(),
            release: "sms-checker".into(),
            namespace: Some("demo".into()),
            sets: sets.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            ..Render::default()
        },
    )?;
    parse_objects(&yaml)
}

/// Splits a multi-document YAML stream into its objects, as meshctl does.
pub fn parse_objects(yaml: &str) -> Result<Vec<Value>, ChartError> {
    Ok(meshctl::chart::parse_objects(yaml)?
        .into_iter()
        .map(|object| object.doc)
        .collect())
}

/// `Kind/name` of an object, for messages.
pub fn describe(object: &Value) -> String {
    format!(
        "{}/{}",
        object["kind"].as_str().unwrap_or("?"),
        object["metadata"]["name"].as_str().unwrap_or("?")
    )
}

/// Every object of `kind`.
pub fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

/// The object of `kind` called `name`, if rendered.
pub fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

fn group_of(object: &Value) -> &str {
    let api_version = object["apiVersion"].as_str().unwrap_or("");
    match api_version.rsplit_once('/') {
        Some((group, _)) => group,
        None => "",
    }
}

/// Istio's and the Gateway API's groups: validated against their CRDs, not
/// kubernetes-validate.
pub fn is_crd_kind(object: &Value) -> bool {
    let group = group_of(object);
    group.ends_with(".istio.io") || group == "gateway.networking.k8s.io"
}

/// Prometheus Operator kinds: their CRDs are not pinned here, see
/// [`crate::schemas::prometheus_operator_validate`].
pub fn is_prometheus_operator(object: &Value) -> bool {
    group_of(object) == "monitoring.coreos.com"
}
