//! Prometheus configuration: one job scraping every proxy's
//! `/stats/prometheus` and every model-service's `/metrics`.

use serde_json::json;

use super::plan::parse_duration;

pub struct Target {
    pub path: &'static str,
    pub port: u16,
    pub labels: Vec<(&'static str, String)>,
}

impl Target {
    pub fn envoy(role: &str, version: Option<&String>, admin_port: u16) -> Target {
        let mut labels = vec![("component", role.to_string())];
        if let Some(version) = version {
            // Named like Istio's pod labels, which Prometheus relabels in a cluster.
            labels.push(("pod_version", version.clone()));
        }
        Target {
            path: "/stats/prometheus",
            port: admin_port,
            labels,
        }
    }

    pub fn service(version: &str, port: u16) -> Target {
        Target {
            path: "/metrics",
            port,
            labels: vec![
                ("component", "model-service".into()),
                ("pod_version", version.into()),
            ],
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("scrape interval {0:?} is not a duration such as 5s or 500ms")]
pub struct BadInterval(String);

/// The config as YAML text (JSON is valid YAML, and needs no extra crate).
pub fn config(scrape_interval: &str, targets: &[Target]) -> Result<String, BadInterval> {
    let interval = parse_duration(scrape_interval)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| BadInterval(scrape_interval.to_string()))?;
    let ms = interval.as_millis();
    let jobs: Vec<_> = targets
        .iter()
        .map(|t| {
            let labels: serde_json::Map<_, _> = t.labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
            let job = t.labels.iter().map(|(_, v)| v.as_str()).collect::<Vec<_>>().join("-");
            json!({
                "job_name": job,
                "metrics_path": t.path,
                "static_configs": [{"targets": [format!("127.0.0.1:{}", t.port)], "labels": labels}],
            })
        })
        .collect();
    let config = json!({
        "global": {"scrape_interval": format!("{ms}ms"), "evaluation_interval": format!("{ms}ms")},
        "scrape_configs": jobs,
    });
    Ok(serde_json::to_string_pretty(&config).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_job_per_target_with_its_labels() {
        let v1 = "v1".to_string();
        let text = config(
            "1s",
            &[
                Target::envoy("gateway", None, 1000),
                Target::envoy("sidecar", Some(&v1), 1001),
                Target::service("v1", 1002),
            ],
        )
        .unwrap();
        let value: serde_json::Value = serde_norway::from_str(&text).unwrap();
        assert_eq!(value["global"]["scrape_interval"], "1000ms");
        let jobs = value["scrape_configs"].as_array().unwrap();
        assert_eq!(jobs.len(), 3);
        assert_eq!(jobs[1]["job_name"], "sidecar-v1");
        assert_eq!(jobs[1]["metrics_path"], "/stats/prometheus");
        assert_eq!(jobs[2]["static_configs"][0]["targets"][0], "127.0.0.1:1002");
        assert_eq!(jobs[2]["static_configs"][0]["labels"]["pod_version"], "v1");
    }

    #[test]
    fn a_bad_interval_is_refused() {
        assert!(config("often", &[]).is_err());
        assert!(config("0s", &[]).is_err());
    }
}
