//! The experiment's alerting rules as the chart renders them (`alerts.*`
//! values), for the local mesh's Prometheus: the rule file taken from the
//! rendered PrometheusRule or rule ConfigMap, and what the local Prometheus
//! config adds to the pods' scrape job: that rule file, and the rollout's
//! own metrics (`meshctl rollout --metrics-addr`) as a static target.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};

use crate::chart::Object;

/// The rule file in the run folder; it always exists (`groups: []` when
/// the chart renders no alerts) so a live change can turn alerts on.
pub const RULE_FILE: &str = "alert-rules.yaml";
/// The job that scrapes a running `meshctl rollout`.
pub const ROLLOUT_JOB: &str = "meshctl-rollout";

/// The rule file (`{"groups": [...]}`, JSON, which is YAML) of the
/// rendered chart: the PrometheusRule's `spec.groups`, else the ConfigMap's
/// plain rule file; `None` when the chart renders neither.
pub fn rule_file(objects: &[Object]) -> anyhow::Result<Option<String>> {
    let groups = objects.iter().find_map(|o| {
        let app = o.doc.pointer("/metadata/labels/app.kubernetes.io~1part-of");
        if app != Some(&json!("sms-checker")) {
            return None;
        }
        match o.kind.as_str() {
            "PrometheusRule" => o.doc.pointer("/spec/groups").cloned().map(Ok),
            "ConfigMap" => {
                let text = o.doc.pointer("/data/sms-checker-rules.yaml")?.as_str()?;
                Some(
                    serde_norway::from_str::<Value>(text)
                        .map(|file| file["groups"].clone())
                        .with_context(|| format!("{}: the rule file is not YAML", o.id())),
                )
            }
            _ => None,
        }
    });
    match groups.transpose()? {
        Some(groups) => Ok(Some(serde_json::to_string_pretty(
            &json!({ "groups": groups }),
        )?)),
        None => Ok(None),
    }
}

/// Writes the rule file of `objects` (or an empty one) to `run_dir`.
pub fn write_rule_file(run_dir: &Path, objects: &[Object]) -> anyhow::Result<()> {
    let text = rule_file(objects)?.unwrap_or_else(|| r#"{"groups": []}"#.to_string());
    let path = run_dir.join(RULE_FILE);
    std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))
}

/// `config` (the local Prometheus config, JSON) with the rule file of
/// `run_dir` and a job scraping a rollout's metrics at `rollout` (host:port).
pub fn local_config(config: &str, run_dir: &Path, rollout: &str) -> anyhow::Result<String> {
    let mut value: Value = serde_json::from_str(config).context("the Prometheus config")?;
    value["rule_files"] = json!([run_dir.join(RULE_FILE)]);
    if let Some(jobs) = value["scrape_configs"].as_array_mut() {
        jobs.push(json!({
            "job_name": ROLLOUT_JOB,
            "static_configs": [{"targets": [rollout]}],
        }));
    }
    Ok(serde_json::to_string_pretty(&value)?)
}

/// Rewrites the rule file after a live change of values and has the
/// Prometheus at `url` reload it (the local mesh runs it with
/// `--web.enable-lifecycle`).
pub fn reload(run_dir: &Path, objects: &[Object], url: &str) -> anyhow::Result<()> {
    write_rule_file(run_dir, objects)?;
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .new_agent();
    agent
        .post(format!("{url}/-/reload"))
        .send_empty()
        .with_context(|| format!("reload Prometheus's rules at {url}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(kind: &str, doc: Value) -> Object {
        Object {
            kind: kind.into(),
            name: "x".into(),
            doc,
        }
    }

    #[test]
    fn rules_come_from_the_prometheus_rule_or_the_config_map() {
        let labels = json!({"app.kubernetes.io/part-of": "sms-checker"});
        let groups = json!([{"name": "g", "rules": [{"alert": "A", "expr": "vector(1)"}]}]);
        let rule = object(
            "PrometheusRule",
            json!({"metadata": {"labels": labels}, "spec": {"groups": groups}}),
        );
        let map = object(
            "ConfigMap",
            json!({"metadata": {"labels": labels}, "data": {
                "sms-checker-rules.yaml": "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: vector(1)\n"}}),
        );
        let from = |objects: &[Object]| -> Value {
            serde_json::from_str(&rule_file(objects).unwrap().unwrap()).unwrap()
        };
        assert_eq!(from(std::slice::from_ref(&rule))["groups"], groups);
        assert_eq!(from(std::slice::from_ref(&map))["groups"], groups);
        // Another chart's ConfigMap is not ours; no rules, no file.
        let other = object(
            "ConfigMap",
            json!({"metadata": {}, "data": {"sms-checker-rules.yaml": "x"}}),
        );
        assert_eq!(rule_file(&[other]).unwrap(), None);
        let broken = object(
            "ConfigMap",
            json!({"metadata": {"labels": labels}, "data": {"sms-checker-rules.yaml": "groups: ["}}),
        );
        assert!(rule_file(&[broken]).is_err());
    }

    #[test]
    fn the_local_config_loads_the_rules_and_scrapes_the_rollout() {
        let config = r#"{"global": {}, "scrape_configs": [{"job_name": "kubernetes-pods"}]}"#;
        let out: Value = serde_json::from_str(
            &local_config(config, Path::new("/run"), "127.0.0.1:9469").unwrap(),
        )
        .unwrap();
        assert_eq!(out["rule_files"], json!(["/run/alert-rules.yaml"]));
        assert_eq!(out["scrape_configs"][0]["job_name"], "kubernetes-pods");
        assert_eq!(out["scrape_configs"][1]["job_name"], ROLLOUT_JOB);
        assert_eq!(
            out["scrape_configs"][1]["static_configs"][0]["targets"][0],
            "127.0.0.1:9469"
        );
    }
}
