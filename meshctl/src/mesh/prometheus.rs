//! Prometheus configuration for the local mesh: the pods' `prometheus.io/*`
//! annotations (as Istio's injector rewrites them, pointing at the agent's
//! merged metrics) turned into targets, labelled the way Istio's sample
//! Prometheus config relabels Kubernetes pods (`kubernetes-pods` job: the pod
//! labels, `namespace`, `pod`). Prometheus has no API server to discover
//! pods from here, so the targets are written out.

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::pods::PodPlan;

/// The job name of Istio's sample config for annotated pods.
pub const JOB: &str = "kubernetes-pods";

/// Labels a pod label becomes: Prometheus' `labelmap` keeps `[a-zA-Z0-9_]`.
fn label_name(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// One static target per pod that asks to be scraped.
fn target(pod: &PodPlan) -> Option<Value> {
    let annotation = |key: &str| pod.annotations.get(key).map(String::as_str);
    if annotation("prometheus.io/scrape") != Some("true") {
        return None;
    }
    let port = annotation("prometheus.io/port")?;
    let path = annotation("prometheus.io/path").unwrap_or("/metrics");
    let mut labels: Map<String, Value> = pod
        .labels
        .iter()
        .map(|(k, v)| (label_name(k), json!(v)))
        .collect();
    labels.insert("namespace".into(), json!(pod.namespace));
    labels.insert("pod".into(), json!(pod.name));
    labels.insert("__metrics_path__".into(), json!(path));
    Some(json!({"targets": [format!("{}:{port}", pod.ip)], "labels": labels}))
}

/// The config as YAML text (JSON is valid YAML, and needs no extra crate).
pub fn config(interval: Duration, pods: &[PodPlan]) -> String {
    let ms = interval.as_millis();
    let config = json!({
        "global": {"scrape_interval": format!("{ms}ms"), "evaluation_interval": format!("{ms}ms")},
        "scrape_configs": [{
            "job_name": JOB,
            "static_configs": pods.iter().filter_map(target).collect::<Vec<_>>(),
        }],
    });
    serde_json::to_string_pretty(&config).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, annotations: &[(&str, &str)]) -> PodPlan {
        serde_json::from_value(json!({
            "name": name, "namespace": "default", "ip": "10.213.0.2",
            "labels": {"app": "model-service", "version": "v1", "app.kubernetes.io/name": "m"},
            "annotations": annotations.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<Map<_, _>>(),
            "containers": [],
        }))
        .unwrap()
    }

    #[test]
    fn annotated_pods_become_targets_with_their_labels() {
        let pods = [
            pod(
                "a",
                &[
                    ("prometheus.io/scrape", "true"),
                    ("prometheus.io/port", "15020"),
                    ("prometheus.io/path", "/stats/prometheus"),
                ],
            ),
            pod("b", &[("prometheus.io/scrape", "false")]),
        ];
        let text = config(Duration::from_secs(1), &pods);
        let value: Value = serde_norway::from_str(&text).unwrap();
        assert_eq!(value["global"]["scrape_interval"], "1000ms");
        let targets = value["scrape_configs"][0]["static_configs"]
            .as_array()
            .unwrap();
        assert_eq!(targets.len(), 1);
        assert_eq!(targets[0]["targets"][0], "10.213.0.2:15020");
        let labels = &targets[0]["labels"];
        assert_eq!(labels["__metrics_path__"], "/stats/prometheus");
        assert_eq!(labels["version"], "v1");
        assert_eq!(labels["app_kubernetes_io_name"], "m");
        assert_eq!(labels["pod"], "a");
    }
}
