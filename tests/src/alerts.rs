//! The chart's alerting rules under Prometheus's own rule tester,
//! `promtool test rules` (Debian's `prometheus` package): the rule file as
//! meshctl takes it from the rendered chart, input series, and the alerts
//! expected at given times.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::{Map, Value, json};

use crate::chart::render;
use crate::tool;

pub fn promtool_bin() -> PathBuf {
    tool("PROMTOOL_BIN", "/usr/bin/promtool")
}

/// The rule file (as JSON) the chart renders with `sets` plus
/// `alerts.enabled=true`, release `sms-checker` in namespace `demo`.
pub fn rule_file(sets: &[(&str, &str)]) -> Value {
    let mut all = vec![("alerts.enabled", "true")];
    all.extend_from_slice(sets);
    let objects = render(&all).unwrap_or_else(|e| panic!("render {all:?}: {e}"));
    let objects: Vec<meshctl::chart::Object> = objects
        .into_iter()
        .map(|doc| meshctl::chart::Object {
            kind: doc["kind"].as_str().unwrap_or_default().to_string(),
            name: doc["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            doc,
        })
        .collect();
    let text = meshctl::alerts::rule_file(&objects)
        .expect("a readable rule file")
        .expect("alerts rendered");
    serde_json::from_str(&text).expect("the rule file is JSON")
}

/// The rule named `alert` in `rules`.
pub fn rule<'a>(rules: &'a Value, alert: &str) -> &'a Value {
    rules["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .find(|r| r["alert"] == alert)
        .unwrap_or_else(|| panic!("no rule {alert} in {rules}"))
}

/// The annotations `alert` fires with when its value prints as `value`:
/// the rule's own, its summary's one template expansion replaced.
pub fn annotations(rules: &Value, alert: &str, value: &str) -> Value {
    let mut out: Map<String, Value> = rule(rules, alert)["annotations"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let summary = out["summary"].as_str().unwrap_or_default().to_string();
    let (before, rest) = summary.split_once("{{").expect("a template in the summary");
    let (_, after) = rest.split_once("}}").expect("a closed template");
    out.insert("summary".into(), json!(format!("{before}{value}{after}")));
    Value::Object(out)
}

/// Runs promtool's unit tests `tests` (its `tests:` list, 1-minute
/// evaluation) on `rules`; the output of `promtool test rules`.
pub fn promtool_test(rules: &Value, tests: Value) -> Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let rules_path = dir.path().join("rules.yaml");
    std::fs::write(&rules_path, rules.to_string()).expect("write the rules");
    let test = json!({
        "rule_files": [rules_path],
        "evaluation_interval": "1m",
        "tests": tests,
    });
    let test_path = dir.path().join("test.yaml");
    std::fs::write(&test_path, test.to_string()).expect("write the test");
    Command::new(promtool_bin())
        .args(["test", "rules"])
        .arg(&test_path)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", promtool_bin().display()))
}
