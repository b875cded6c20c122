//! Validating every object the chart renders: core kinds with
//! `kubernetes-validate` (strict), Istio and Gateway API kinds with
//! `crd-check` (Kubernetes' own API server validation: the CRDs' schemas with
//! unknown fields refused, and their CEL rules) against every pinned set of
//! CRDs, Prometheus Operator kinds with the models generated from its API
//! types.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::chart::{ChartError, is_crd_kind, is_prometheus_operator, run};
use crate::{printed, tool};

/// Oldest Kubernetes the chart supports (`kubeVersion` in Chart.yaml).
pub const KUBERNETES_VERSION: &str = "1.33.0";
/// Every Kubernetes release core objects are validated for: the oldest
/// supported and the newest kubernetes-validate knows.
pub const KUBERNETES_VERSIONS: [&str; 2] = [KUBERNETES_VERSION, "1.37.0"];

/// The CRD pins, one per line (`make chart-crds` reads the same file).
pub const CRD_PINS: &str = include_str!("../crd-pins.txt");
/// The pins file, for the Makefile test.
pub const CRD_PINS_FILE: &str = "tests/crd-pins.txt";

/// One pinned CRD file: the Go module version that ships it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrdPin {
    /// `istio` or `gateway-api`.
    pub set: String,
    pub module: String,
    pub version: String,
    /// The file's path inside the module.
    pub file: String,
    pub sha256: String,
}

impl CrdPin {
    /// "Istio v1.31.4", "Gateway API v1.6.0".
    pub fn label(&self) -> String {
        let name = match self.set.as_str() {
            "istio" => "Istio",
            "gateway-api" => "Gateway API",
            "flagger" => "Flagger",
            "argo-rollouts" => "Argo Rollouts",
            other => other,
        };
        format!("{name} {}", self.version)
    }

    /// The file in Go's module cache, checked against its SHA-256.
    pub fn path(&self) -> Result<PathBuf, ChartError> {
        let path = module_cache()?
            .join(format!(
                "{}@{}",
                escape_module_path(&self.module),
                self.version
            ))
            .join(&self.file);
        let bytes = std::fs::read(&path).map_err(|e| {
            ChartError::Crds(format!(
                "{}: {e} (run `make chart-crds`: it fetches {}@{})",
                path.display(),
                self.module,
                self.version
            ))
        })?;
        let digest = model_service::dataset::hex(&Sha256::digest(&bytes));
        if digest != self.sha256 {
            return Err(ChartError::Crds(format!(
                "{} has SHA-256 {digest}, expected {} ({})",
                path.display(),
                self.sha256,
                self.label()
            )));
        }
        Ok(path)
    }
}

/// Every pinned CRD file, in the pins file's order.
pub fn crd_pins() -> Vec<CrdPin> {
    CRD_PINS
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(fields.len(), 5, "{CRD_PINS_FILE}: bad line {line:?}");
            CrdPin {
                set: fields[0].into(),
                module: fields[1].into(),
                version: fields[2].into(),
                file: fields[3].into(),
                sha256: fields[4].into(),
            }
        })
        .collect()
}

/// Go's module cache (`go env GOMODCACHE`).
fn module_cache() -> Result<PathBuf, ChartError> {
    static CACHE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    CACHE
        .get_or_init(|| {
            let out = Command::new("go")
                .args(["env", "GOMODCACHE"])
                .output()
                .map_err(|e| format!("go env GOMODCACHE: {e}"))?;
            let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if !out.status.success() || dir.is_empty() {
                return Err(format!("go env GOMODCACHE: {}", printed(&out)));
            }
            Ok(PathBuf::from(dir))
        })
        .clone()
        .map_err(ChartError::Crds)
}

/// A module path as the module cache spells it: capitals as `!` + lower case.
fn escape_module_path(module: &str) -> String {
    module
        .chars()
        .flat_map(|c| {
            if c.is_ascii_uppercase() {
                vec!['!', c.to_ascii_lowercase()]
            } else {
                vec![c]
            }
        })
        .collect()
}

/// The CRDs of one Istio release with the Gateway API's: what a cluster
/// running that Istio with those Gateway API CRDs serves.
#[derive(Debug, Clone)]
pub struct CrdSet {
    /// "Istio v1.31.4 + Gateway API v1.6.0".
    pub name: String,
    pub files: Vec<PathBuf>,
}

/// One set per pinned Istio release, each with every Gateway API file.
pub fn crd_sets() -> Result<&'static [CrdSet], ChartError> {
    static SETS: OnceLock<Result<Vec<CrdSet>, String>> = OnceLock::new();
    SETS.get_or_init(|| load_sets().map_err(|e| e.to_string()))
        .as_deref()
        .map_err(|e| ChartError::Crds(e.clone()))
}

fn load_sets() -> Result<Vec<CrdSet>, ChartError> {
    let pins = crd_pins();
    let gateway_api: Vec<&CrdPin> = pins.iter().filter(|p| p.set == "gateway-api").collect();
    let mut sets = Vec::new();
    for istio in pins.iter().filter(|p| p.set == "istio") {
        let mut files = vec![istio.path()?];
        for pin in &gateway_api {
            files.push(pin.path()?);
        }
        let mut name = istio.label();
        if let Some(first) = gateway_api.first() {
            name = format!("{name} + {}", first.label());
        }
        sets.push(CrdSet { name, files });
    }
    if sets.is_empty() {
        return Err(ChartError::Crds(format!(
            "no istio line in {CRD_PINS_FILE}"
        )));
    }
    Ok(sets)
}

/// Flagger's and Argo Rollouts' CRDs (the `flagger` and `argo-rollouts`
/// pins): what a cluster running both controllers serves, for the example
/// manifests.
pub fn controller_crd_set() -> Result<CrdSet, ChartError> {
    let pins = crd_pins();
    let mut files = Vec::new();
    let mut labels: Vec<String> = Vec::new();
    for pin in pins
        .iter()
        .filter(|p| p.set == "flagger" || p.set == "argo-rollouts")
    {
        files.push(pin.path()?);
        if !labels.contains(&pin.label()) {
            labels.push(pin.label());
        }
    }
    if files.is_empty() {
        return Err(ChartError::Crds(format!(
            "no flagger or argo-rollouts line in {CRD_PINS_FILE}"
        )));
    }
    Ok(CrdSet {
        name: labels.join(" + "),
        files,
    })
}

/// Validates objects of custom resource kinds against each of `sets` with
/// `crd-check` (`make chart-crds` builds it), in one run: what the API
/// server of a cluster with those CRDs answers to `kubectl apply
/// --validate=strict`.
pub fn crd_validate(objects: &[&Value], sets: &[CrdSet]) -> Result<(), ChartError> {
    let bin = tool("CRD_CHECK_BIN", ".tools/bin/crd-check");
    let mut input = tempfile::NamedTempFile::new().map_err(|e| ChartError::Yaml(e.to_string()))?;
    serde_json::to_writer(&mut input, objects).map_err(|e| ChartError::Yaml(e.to_string()))?;
    input.flush().map_err(|e| ChartError::Yaml(e.to_string()))?;
    let mut command = Command::new(&bin);
    for set in sets {
        command.arg("--set").arg(&set.name);
        for file in &set.files {
            command.arg("--crds").arg(file);
        }
    }
    let stdin = std::fs::File::open(input.path()).map_err(|e| ChartError::Yaml(e.to_string()))?;
    let out = run(command.stdin(stdin))?;
    let failed = |error: String| ChartError::Spawn {
        tool: bin.clone(),
        error,
    };
    // 0: all valid, 1: some invalid; anything else is crd-check failing.
    if !matches!(out.status.code(), Some(0 | 1)) {
        return Err(failed(printed(&out)));
    }
    let results: Vec<Value> = serde_json::from_slice(&out.stdout)
        .map_err(|e| failed(format!("unreadable answer ({e}): {}", printed(&out))))?;
    if results.len() != objects.len() * sets.len() {
        return Err(failed(format!(
            "{} results for {} objects in {} sets",
            results.len(),
            objects.len(),
            sets.len()
        )));
    }
    let errors = |result: &Value| -> Vec<String> {
        result["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| e.as_str().unwrap_or_default().to_string())
            .collect()
    };
    if let Some(first) = results.iter().find(|r| !errors(r).is_empty()) {
        return Err(ChartError::Invalid {
            object: format!(
                "{} ({})",
                first["object"].as_str().unwrap_or("?"),
                first["set"].as_str().unwrap_or("?")
            ),
            errors: errors(first),
        });
    }
    if out.status.code() != Some(0) {
        return Err(failed(format!(
            "exit 1 without an invalid object: {}",
            printed(&out)
        )));
    }
    Ok(())
}

/// Validates objects of custom resource kinds against every pinned set.
pub fn crd_validate_all(objects: &[&Value]) -> Result<(), ChartError> {
    crd_validate(objects, crd_sets()?)
}

/// Validates core Kubernetes objects with `kubernetes-validate --strict`.
/// A kind it has no schema for is a failure, not a warning.
pub fn kubernetes_validate(objects: &[&Value], version: &str) -> Result<(), ChartError> {
    let bin = tool("KUBERNETES_VALIDATE_BIN", ".venv/bin/kubernetes-validate");
    let mut file = tempfile::Builder::new()
        .suffix(".yaml")
        .tempfile()
        .map_err(|e| ChartError::Yaml(e.to_string()))?;
    for object in objects {
        let yaml = serde_norway::to_string(object).map_err(|e| ChartError::Yaml(e.to_string()))?;
        write!(file, "---\n{yaml}").map_err(|e| ChartError::Yaml(e.to_string()))?;
    }
    file.flush().map_err(|e| ChartError::Yaml(e.to_string()))?;
    let out = run(Command::new(&bin)
        .args(["--strict", "-k", version])
        .arg(file.path()))?;
    let text = printed(&out);
    let passed = text.lines().filter(|l| l.contains(" passed for ")).count();
    let problems: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with("INFO"))
        .map(str::to_string)
        .collect();
    if !out.status.success() || !problems.is_empty() || passed != objects.len() {
        return Err(ChartError::Invalid {
            object: format!(
                "{} core objects ({} passed, Kubernetes {version})",
                objects.len(),
                passed
            ),
            errors: if problems.is_empty() {
                vec![text]
            } else {
                problems
            },
        });
    }
    Ok(())
}

/// Validates every rendered object: Istio and Gateway API kinds against
/// every pinned CRD set, Prometheus Operator kinds with their API models,
/// core kinds with kubernetes-validate.
pub fn validate_all(objects: &[Value]) -> Result<(), ChartError> {
    let mut custom = Vec::new();
    let mut core = Vec::new();
    let mut operator = Vec::new();
    for object in objects {
        if is_crd_kind(object) {
            custom.push(object);
        } else if is_prometheus_operator(object) {
            operator.push(object);
        } else {
            core.push(object);
        }
    }
    if !custom.is_empty() {
        crd_validate_all(&custom)?;
    }
    if !operator.is_empty() {
        prometheus_operator_validate(&operator)?;
    }
    for version in KUBERNETES_VERSIONS {
        kubernetes_validate(&core, version)?;
    }
    Ok(())
}

/// Runs each object through the validator `@kubernetes-models/prometheus-operator`
/// generates from the Prometheus Operator's Go API types (types, enums,
/// patterns, required fields; it does not reject unknown fields).
const MONITOR_VALIDATOR_JS: &str = r#"
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
const [modules, input] = process.argv.slice(2);
let failed = 0;
for (const object of JSON.parse(readFileSync(input, "utf8"))) {
  const name = `${object.kind}/${object.metadata?.name}`;
  const [group, version] = String(object.apiVersion).split("/");
  const file = `${modules}/@kubernetes-models/prometheus-operator/${group}/${version}/${object.kind}.js`;
  try {
    const model = await import(pathToFileURL(file).href);
    new model[object.kind](object).validate();
    console.log(`passed ${name}`);
  } catch (error) {
    failed++;
    console.log(`ERROR ${name}: ${error.message}`);
  }
}
process.exit(failed ? 1 : 0);
"#;

/// Validates PodMonitor/ServiceMonitor objects with the npm models that
/// `make chart-monitor-models` installs (`$CHART_NODE_MODULES`).
pub fn prometheus_operator_validate(objects: &[&Value]) -> Result<(), ChartError> {
    let modules = tool("CHART_NODE_MODULES", ".tools/chart-node/node_modules");
    let package = modules.join("@kubernetes-models/prometheus-operator/package.json");
    if !package.exists() {
        return Err(ChartError::Spawn {
            tool: package,
            error: "not installed (run `make chart-monitor-models`)".into(),
        });
    }
    let dir = tempfile::tempdir().map_err(|e| ChartError::Yaml(e.to_string()))?;
    let script = dir.path().join("validate-monitors.mjs");
    let input = dir.path().join("objects.json");
    let write = |path: &Path, bytes: &[u8]| {
        std::fs::write(path, bytes)
            .map_err(|e| ChartError::Yaml(format!("{}: {e}", path.display())))
    };
    write(&script, MONITOR_VALIDATOR_JS.as_bytes())?;
    write(
        &input,
        &serde_json::to_vec(objects).map_err(|e| ChartError::Yaml(e.to_string()))?,
    )?;
    let out = run(Command::new("node").arg(&script).arg(&modules).arg(&input))?;
    let text = printed(&out);
    let passed = text.lines().filter(|l| l.starts_with("passed ")).count();
    if !out.status.success() || passed != objects.len() {
        return Err(ChartError::Invalid {
            object: format!(
                "{} Prometheus Operator objects ({passed} passed)",
                objects.len()
            ),
            errors: text.lines().map(str::to_string).collect(),
        });
    }
    Ok(())
}
