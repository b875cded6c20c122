//! Helm: rendering charts (this project's and Istio's), splitting the output
//! into Kubernetes objects, and running helm's other commands (the
//! rollout's `helm upgrade`, the tests' `helm lint`).

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("cannot run helm at {path}: {source}")]
    HelmMissing {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("helm {subcommand} failed ({status}):\n{output}")]
    HelmFailed {
        subcommand: String,
        status: String,
        /// What helm said: its standard error, then any standard output.
        output: String,
    },
    #[error("rendered chart is not valid YAML (document {index}): {source}")]
    Yaml {
        index: usize,
        source: serde_norway::Error,
    },
    #[error("rendered document {index} has no {field}")]
    Malformed { index: usize, field: &'static str },
}

/// One rendered Kubernetes object: its identity plus the whole document.
#[derive(Debug, Clone)]
pub struct Object {
    pub kind: String,
    pub name: String,
    pub doc: Value,
}

impl Object {
    /// `Kind/name`, the way findings refer to an object.
    pub fn id(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }

    /// `metadata.namespace`, or `default` as `helm template` implies.
    pub fn namespace(&self) -> &str {
        self.doc
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default")
    }
}

/// One `helm template` run: a chart, its release, and the values it gets.
#[derive(Debug, Clone, Default)]
pub struct Render {
    pub chart: PathBuf,
    pub release: String,
    /// `--namespace`; `None` renders as `helm template` does by default.
    pub namespace: Option<String>,
    /// `-f` files, in order.
    pub values: Vec<PathBuf>,
    /// `--set` values, in order (later ones win, as with `helm upgrade --set`).
    pub sets: Vec<String>,
}

impl Render {
    /// `helm template` with this chart, release and values, as `helm
    /// install` or `helm upgrade` would render the chart in a cluster.
    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "template".into(),
            self.release.clone().into(),
            self.chart.clone().into(),
        ];
        if let Some(namespace) = &self.namespace {
            args.extend(["--namespace".into(), namespace.into()]);
        }
        for file in &self.values {
            args.extend(["--values".into(), file.into()]);
        }
        for set in &self.sets {
            args.extend(["--set".into(), set.into()]);
        }
        args
    }
}

/// Runs `helm template` (see [`Render::args`]); the rendered manifest.
pub fn render(helm: &Path, render: &Render) -> Result<String, ChartError> {
    run_helm(helm, render.args())
}

/// Runs helm with `args` (any subcommand: `lint`, `upgrade`, ...); its
/// standard output when it succeeds.
pub fn run_helm<I, S>(helm: &Path, args: I) -> Result<String, ChartError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let output =
        Command::new(helm)
            .args(&args)
            .output()
            .map_err(|source| ChartError::HelmMissing {
                path: helm.to_path_buf(),
                source,
            })?;
    if !output.status.success() {
        let mut said = String::from_utf8_lossy(&output.stderr).trim().to_string();
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !stdout.trim().is_empty() {
            said.push('\n');
            said.push_str(stdout.trim());
        }
        return Err(ChartError::HelmFailed {
            subcommand: args
                .first()
                .map(|a| a.to_string_lossy().into_owned())
                .unwrap_or_default(),
            status: output.status.to_string(),
            output: said,
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Splits a multi-document YAML stream into objects, skipping empty documents
/// (templates that rendered to nothing).
pub fn parse_objects(yaml: &str) -> Result<Vec<Object>, ChartError> {
    let mut objects = Vec::new();
    for (index, document) in serde_norway::Deserializer::from_str(yaml).enumerate() {
        let doc =
            Value::deserialize(document).map_err(|source| ChartError::Yaml { index, source })?;
        if doc.is_null() {
            continue;
        }
        let text = |field: &'static str, value: Option<&Value>| {
            value
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or(ChartError::Malformed { index, field })
        };
        objects.push(Object {
            kind: text("kind", doc.get("kind"))?,
            name: text("metadata.name", doc.pointer("/metadata/name"))?,
            doc,
        });
    }
    Ok(objects)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_documents_and_skips_empty_ones() {
        let yaml = "---\n# Source: a.yaml\napiVersion: v1\nkind: Service\nmetadata:\n  name: svc\n---\n---\n# only a comment\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: dep\nspec:\n  replicas: 2\n";
        let objects = parse_objects(yaml).unwrap();
        assert_eq!(objects.len(), 2);
        assert_eq!(objects[0].id(), "Service/svc");
        assert_eq!(objects[1].id(), "Deployment/dep");
        assert_eq!(objects[1].doc["spec"]["replicas"], 2);
    }

    #[test]
    fn a_document_without_a_name_is_an_error() {
        let err = parse_objects("apiVersion: v1\nkind: Service\nmetadata: {}\n").unwrap_err();
        assert!(err.to_string().contains("metadata.name"), "{err}");
    }

    #[test]
    fn invalid_yaml_is_an_error() {
        assert!(matches!(
            parse_objects("kind: [unclosed\n"),
            Err(ChartError::Yaml { .. })
        ));
    }
}
