//! Applying a canary weight: the seam between the rollout and a mesh. The
//! stable weight is always 100 - canary, the chart's
//! `istio.trafficSplit.stable` and `istio.trafficSplit.canary`, which drive
//! both the gateway filter's cohorts and the VirtualService's fallback.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use crate::chart;

/// Sets the share of users in the canary cohort; stable gets the rest.
/// Growing the canary keeps every user already in it (the filter's cohorts
/// are monotone); setting it to 0 moves every canary user to stable.
pub trait WeightApplier {
    /// What the weights go to, for messages and the event log.
    fn target(&self) -> String;
    /// Sets the canary to `canary` percent (0-100) and stable to the rest,
    /// returning once the change is accepted.
    fn apply(&mut self, canary: u8) -> anyhow::Result<()>;
}

/// The chart values for `canary` percent (at most 100), stable first.
fn split_values(canary: u8) -> [String; 2] {
    let canary = canary.min(100);
    [
        format!("istio.trafficSplit.stable={}", 100 - canary),
        format!("istio.trafficSplit.canary={canary}"),
    ]
}

/// A Helm release on a cluster: `helm upgrade --reuse-values` with the two
/// weights, so every other value the release was installed with stays.
pub struct Helm {
    pub helm: PathBuf,
    pub chart: PathBuf,
    pub release: String,
    pub namespace: String,
}

impl Helm {
    /// The arguments of the `helm` call for `canary` percent.
    pub fn args(&self, canary: u8) -> Vec<String> {
        let [stable, canary] = split_values(canary);
        [
            "upgrade",
            &self.release,
            &self.chart.display().to_string(),
            "--namespace",
            &self.namespace,
            "--reuse-values",
            "--set",
            &stable,
            "--set",
            &canary,
        ]
        .map(String::from)
        .to_vec()
    }
}

impl WeightApplier for Helm {
    fn target(&self) -> String {
        format!(
            "helm release {} in namespace {}",
            self.release, self.namespace
        )
    }

    fn apply(&mut self, canary: u8) -> anyhow::Result<()> {
        chart::run_helm(&self.helm, self.args(canary))
            .map(drop)
            .with_context(|| format!("helm upgrade to canary {canary}% failed"))
    }
}

/// The local mesh of a run folder (`meshctl run --run-dir`): the values
/// change live, as `meshctl set` changes them, and the call returns once
/// every proxy has acknowledged the new configuration.
pub struct LocalMesh {
    pub run_dir: PathBuf,
    pub timeout: Duration,
}

impl WeightApplier for LocalMesh {
    fn target(&self) -> String {
        format!("the local mesh in {}", self.run_dir.display())
    }

    fn apply(&mut self, canary: u8) -> anyhow::Result<()> {
        let values = split_values(canary).join(",");
        crate::mesh::values::set_values(&self.run_dir, &[values], self.timeout)
            .map(drop)
            .with_context(|| format!("set the canary to {}% on the local mesh", canary.min(100)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn helm(program: &str) -> Helm {
        Helm {
            helm: PathBuf::from(program),
            chart: PathBuf::from("manifests/sms-checker"),
            release: "sms-checker".into(),
            namespace: "sms".into(),
        }
    }

    #[test]
    fn helm_upgrade_reuses_values_and_sets_both_weights() {
        assert_eq!(
            helm("helm").args(25).join(" "),
            "upgrade sms-checker manifests/sms-checker --namespace sms --reuse-values \
             --set istio.trafficSplit.stable=75 --set istio.trafficSplit.canary=25"
        );
        assert!(
            helm("helm")
                .args(0)
                .join(" ")
                .ends_with("istio.trafficSplit.stable=100 --set istio.trafficSplit.canary=0")
        );
    }

    // `false` exits 1 without output: the failure names the weight; a
    // missing program names its path.
    #[test]
    fn a_failing_helm_is_an_error() {
        let err = helm("false").apply(10).unwrap_err().to_string();
        assert!(
            err.starts_with("helm upgrade to canary 10% failed"),
            "{err}"
        );
        let err = helm("/nonexistent/helm").apply(10).unwrap_err();
        assert!(format!("{err:#}").contains("cannot run helm at /nonexistent/helm"));
    }
}
