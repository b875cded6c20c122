//! Validating every object the chart renders: core kinds with
//! `kubernetes-validate` (strict), Istio kinds against the `openAPIV3Schema`
//! of Istio's own CRDs (closed to unknown fields) and their CEL rules,
//! Prometheus Operator kinds with the models generated from its API types.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::chart::{ChartError, describe, is_istio, is_prometheus_operator, parse_objects, run};
use crate::{printed, shared_dir, tool, workspace_root};

/// Istio release whose CRDs the rendered objects are checked against
/// (`make chart-crds` reads it, and the checksum, from here).
pub const ISTIO_VERSION: &str = "1.30.3";
/// SHA-256 of `kubernetes/customresourcedefinitions.gen.yaml` at that tag.
pub const ISTIO_CRDS_SHA256: &str =
    "dcb43ff6b9af2f629b80b6a82597f5a91db259c757e66cc5353ac007da28351a";
/// Oldest Kubernetes the chart supports (`kubeVersion` in Chart.yaml).
pub const KUBERNETES_VERSION: &str = "1.33.0";
/// Every Kubernetes release core objects are validated for: the oldest
/// supported and the newest kubernetes-validate knows.
pub const KUBERNETES_VERSIONS: [&str; 2] = [KUBERNETES_VERSION, "1.37.0"];

/// The pinned CRD file's name, in `$SMS_SHARED_DIR/schemas/` or `.tools/schemas/`.
pub fn istio_crds_file() -> String {
    format!("istio-{ISTIO_VERSION}-customresourcedefinitions.gen.yaml")
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

/// Where the pinned Istio CRDs are: `$SMS_SHARED_DIR/schemas/` or, for a
/// checkout without it, `.tools/schemas/` (`make chart-crds` fetches it).
pub fn istio_crds_path() -> Result<PathBuf, ChartError> {
    let file = istio_crds_file();
    let candidates = [
        shared_dir().join("schemas").join(&file),
        workspace_root().join(".tools/schemas").join(&file),
    ];
    candidates
        .iter()
        .find(|p| p.exists())
        .cloned()
        .ok_or_else(|| {
            ChartError::Crds(format!(
                "{file} not found in {} (run `make chart-crds`)",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" or ")
            ))
        })
}

/// Compiled validators for every served version of every Istio CRD, with
/// the CRDs' CEL rules (`x-kubernetes-validations`) that JSON Schema cannot run.
pub struct IstioSchemas {
    validators: HashMap<(String, String), jsonschema::Validator>,
    rules: HashMap<(String, String), Vec<CelRule>>,
}

/// One step from a schema node to the values it describes.
#[derive(Clone, Debug)]
enum Step {
    Field(String),
    /// Every array item or map value.
    Each,
}

/// A CEL rule of a CRD and where in the object it applies.
#[derive(Clone, Debug)]
struct CelRule {
    path: Vec<Step>,
    rule: String,
    message: String,
}

impl IstioSchemas {
    /// Loads the pinned CRD file, checking its SHA-256 first.
    pub fn load() -> Result<IstioSchemas, ChartError> {
        Self::load_from(&istio_crds_path()?)
    }

    pub fn load_from(path: &Path) -> Result<IstioSchemas, ChartError> {
        let bytes = std::fs::read(path)
            .map_err(|e| ChartError::Crds(format!("{}: {e}", path.display())))?;
        let digest = model_service::dataset::hex(&Sha256::digest(&bytes));
        if digest != ISTIO_CRDS_SHA256 {
            return Err(ChartError::Crds(format!(
                "{} has SHA-256 {digest}, expected {ISTIO_CRDS_SHA256} (Istio {ISTIO_VERSION})",
                path.display()
            )));
        }
        let text = String::from_utf8(bytes).map_err(|e| ChartError::Crds(e.to_string()))?;
        let mut validators = HashMap::new();
        let mut rules = HashMap::new();
        for crd in parse_objects(&text)? {
            let group = crd["spec"]["group"].as_str().unwrap_or_default();
            let kind = crd["spec"]["names"]["kind"].as_str().unwrap_or_default();
            for version in crd["spec"]["versions"].as_array().into_iter().flatten() {
                if version["served"] != true {
                    continue;
                }
                let name = version["name"].as_str().unwrap_or_default();
                let mut found = Vec::new();
                collect_rules(
                    &version["schema"]["openAPIV3Schema"],
                    &mut Vec::new(),
                    &mut found,
                );
                rules.insert((format!("{group}/{name}"), kind.to_string()), found);
                let mut schema = closed_schema(&version["schema"]["openAPIV3Schema"]);
                // apiVersion, kind and metadata are the API server's, not the CRD's.
                if let Some(props) = schema["properties"].as_object_mut() {
                    props.insert(
                        "apiVersion".into(),
                        json!({"const": format!("{group}/{name}")}),
                    );
                    props.insert("kind".into(), json!({"const": kind}));
                    props.insert(
                        "metadata".into(),
                        json!({"type": "object", "required": ["name"]}),
                    );
                }
                let validator = jsonschema::draft4::new(&schema).map_err(|e| {
                    ChartError::Crds(format!("schema of {kind} {group}/{name}: {e}"))
                })?;
                validators.insert((format!("{group}/{name}"), kind.to_string()), validator);
            }
        }
        Ok(IstioSchemas { validators, rules })
    }

    /// Validates one Istio object against the CRD version its apiVersion names.
    pub fn validate(&self, object: &Value) -> Result<(), ChartError> {
        let key = (
            object["apiVersion"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            object["kind"].as_str().unwrap_or_default().to_string(),
        );
        let validator = self
            .validators
            .get(&key)
            .ok_or_else(|| ChartError::Invalid {
                object: describe(object),
                errors: vec![format!(
                    "no served CRD version for {} {} in Istio {ISTIO_VERSION}",
                    key.0, key.1
                )],
            })?;
        let mut errors: Vec<String> = validator
            .iter_errors(object)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect();
        for rule in self.rules.get(&key).into_iter().flatten() {
            for (at, node) in nodes_at(object, &rule.path) {
                match check_cel_rule(&rule.rule, node) {
                    Some(true) => {}
                    Some(false) => errors.push(format!("{at}: {}", rule.message)),
                    // Fail rather than skip: a rule nobody checks could let
                    // through an object the API server refuses.
                    None => errors.push(format!(
                        "{at}: CEL rule not evaluated by this check: {}",
                        rule.rule
                    )),
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ChartError::Invalid {
                object: describe(object),
                errors,
            })
        }
    }
}

/// An OpenAPI v3 (Kubernetes structural) schema as a JSON Schema the way the
/// API server applies it: objects without `x-kubernetes-preserve-unknown-fields`
/// take no other fields, `nullable` admits null, and int-or-string admits both.
pub fn closed_schema(schema: &Value) -> Value {
    let Value::Object(map) = schema else {
        return schema.clone();
    };
    let mut out = Map::new();
    for (key, value) in map {
        let converted = match key.as_str() {
            "properties" | "patternProperties" | "definitions" => match value {
                Value::Object(props) => Value::Object(
                    props
                        .iter()
                        .map(|(k, v)| (k.clone(), closed_schema(v)))
                        .collect(),
                ),
                other => other.clone(),
            },
            "items" | "additionalProperties" | "not" => closed_schema(value),
            "allOf" | "anyOf" | "oneOf" => match value {
                Value::Array(list) => Value::Array(list.iter().map(closed_schema).collect()),
                other => other.clone(),
            },
            _ => value.clone(),
        };
        out.insert(key.clone(), converted);
    }
    let preserve = map.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if map.get("type") == Some(&json!("object"))
        && !preserve
        && !map.contains_key("additionalProperties")
    {
        out.insert("additionalProperties".into(), Value::Bool(false));
    }
    if map.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        out.remove("type");
        out.insert("type".into(), json!(["integer", "string"]));
    }
    if map.get("nullable") == Some(&Value::Bool(true))
        && let Some(Value::String(t)) = out.get("type").cloned()
    {
        out.insert("type".into(), json!([t, "null"]));
    }
    Value::Object(out)
}

/// Validates every rendered object: Istio kinds against the CRDs, Prometheus
/// Operator kinds with their API models, core kinds with kubernetes-validate.
pub fn validate_all(objects: &[Value], istio: &IstioSchemas) -> Result<(), ChartError> {
    let mut core = Vec::new();
    let mut operator = Vec::new();
    for object in objects {
        if is_istio(object) {
            istio.validate(object)?;
        } else if is_prometheus_operator(object) {
            operator.push(object);
        } else {
            core.push(object);
        }
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

fn collect_rules(schema: &Value, path: &mut Vec<Step>, out: &mut Vec<CelRule>) {
    for rule in schema["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
    {
        out.push(CelRule {
            path: path.clone(),
            rule: rule["rule"].as_str().unwrap_or_default().to_string(),
            message: rule["message"]
                .as_str()
                .unwrap_or("failed a CEL rule")
                .to_string(),
        });
    }
    if let Some(props) = schema["properties"].as_object() {
        for (name, child) in props {
            path.push(Step::Field(name.clone()));
            collect_rules(child, path, out);
            path.pop();
        }
    }
    for child in [&schema["items"], &schema["additionalProperties"]] {
        if child.is_object() {
            path.push(Step::Each);
            collect_rules(child, path, out);
            path.pop();
        }
    }
}

/// The values `path` reaches in `object`, with their JSON pointers.
fn nodes_at<'a>(object: &'a Value, path: &[Step]) -> Vec<(String, &'a Value)> {
    let mut nodes = vec![(String::new(), object)];
    for step in path {
        let mut next = Vec::new();
        for (at, node) in nodes {
            match (step, node) {
                (Step::Field(name), Value::Object(map)) => {
                    if let Some(child) = map.get(name) {
                        next.push((format!("{at}/{name}"), child));
                    }
                }
                (Step::Each, Value::Array(items)) => {
                    next.extend(
                        items
                            .iter()
                            .enumerate()
                            .map(|(i, child)| (format!("{at}/{i}"), child)),
                    );
                }
                (Step::Each, Value::Object(map)) => {
                    next.extend(map.iter().map(|(k, child)| (format!("{at}/{k}"), child)));
                }
                _ => {}
            }
        }
        nodes = next;
    }
    nodes
}

/// Evaluates the CEL rules Istio's CRDs put on the fields this chart renders,
/// each written out by hand from its CEL text. `None`: a rule not known here.
pub fn check_cel_rule(rule: &str, node: &Value) -> Option<bool> {
    let rule = rule.split_whitespace().collect::<Vec<_>>().join(" ");
    let keys = || node.as_object().map(|m| m.keys());
    let text = || node.as_str();
    match rule.as_str() {
        r#"self.all(key, !key.contains("*"))"# => Some(keys()?.all(|k| !k.contains('*'))),
        r#"self.all(key, key.size() != 0)"# => Some(keys()?.all(|k| !k.is_empty())),
        r#"!self.contains("*")"# => Some(!text()?.contains('*')),
        "self.size() == 0" => Some(text()?.is_empty()),
        "duration(self) >= duration('1ms')" => Some(
            meshctl::duration::parse(text()?)
                .is_ok_and(|d| d >= std::time::Duration::from_millis(1)),
        ),
        "(has(self.selector) ? 1 : 0) + (has(self.targetRef) ? 1 : 0) + (has(self.targetRefs) ? 1 : 0) <= 1" =>
        {
            let map = node.as_object()?;
            Some(
                ["selector", "targetRef", "targetRefs"]
                    .iter()
                    .filter(|k| map.contains_key(**k))
                    .count()
                    <= 1,
            )
        }
        r#"(has(self.serviceAccounts) || has(self.notServiceAccounts)) ? (!has(self.principals) && !has(self.notPrincipals) && !has(self.namespaces) && !has(self.notNamespaces)) : true"# =>
        {
            let map = node.as_object()?;
            let has = |k: &str| map.contains_key(k);
            Some(
                !(has("serviceAccounts") || has("notServiceAccounts"))
                    || !(has("principals")
                        || has("notPrincipals")
                        || has("namespaces")
                        || has("notNamespaces")),
            )
        }
        "has(self.portLevelMtls) ? (((has(self.selector) && has(self.selector.matchLabels)) ? self.selector.matchLabels : {}).size() > 0) : true" =>
        {
            let map = node.as_object()?;
            Some(
                !map.contains_key("portLevelMtls")
                    || node["selector"]["matchLabels"]
                        .as_object()
                        .is_some_and(|labels| !labels.is_empty()),
            )
        }
        r#"(has(self.valueFrom) ? self.valueFrom : "") != "HOST" || !has(self.value)"# => {
            let map = node.as_object()?;
            Some(map.get("valueFrom") != Some(&json!("HOST")) || !map.contains_key("value"))
        }
        r#"isURL(self) ? (url(self).getScheme() in ["", "http", "https", "oci", "file"]) : (isURL("http://" + self) && url("http://" + self).getScheme() in ["", "http", "https", "oci", "file"])"# =>
        {
            let url = text()?;
            let valid = !url.is_empty() && !url.chars().any(char::is_whitespace);
            Some(match url.split_once("://") {
                Some((scheme, rest)) => {
                    valid && !rest.is_empty() && ["http", "https", "oci", "file"].contains(&scheme)
                }
                // No scheme: read as http://<url>.
                None => valid,
            })
        }
        _ => None,
    }
}
