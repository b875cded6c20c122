//! `<run-dir>/state.json`, what tests and scripts read to find the running
//! mesh, and `<run-dir>/control/`, how they ask it to act on a component or
//! to take new chart values.
//!
//! ```json
//! {"meshctl_pid": 123, "ready": true,
//!  "urls": [["app", "http://sms-checker.local:8080/sms"], ...],
//!  "hosts": ["sms-checker.local"], "gateway_port": 8080,
//!  "network": {"cidr": "10.213.0.0/24", "node_ip": "10.213.0.1"},
//!  "values": ["istio.trafficSplit.stable=80,istio.trafficSplit.canary=20"],
//!  "findings": ["PodDisruptionBudget/x: not run locally (...)", ...],
//!  "components": [{"name": "sidecar-v1", "kind": "sidecar", "version": "v1",
//!                  "pod": "model-deployment-v1-0.default", "ip": "10.213.0.2",
//!                  "pid": 456, "running": true, "restarts": 0,
//!                  "ports": {"stats": 15090, "status": 15020},
//!                  "log": "/abs/.run/sidecar-v1.log"}, ...]}
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use super::supervisor::Spec;

#[derive(Debug, Serialize)]
pub struct ComponentState {
    pub name: String,
    /// `gateway`, `sidecar`, `model-service`, `istiod` or `prometheus`.
    pub kind: String,
    pub version: Option<String>,
    /// `<pod>.<namespace>` for the pods' containers.
    pub pod: Option<String>,
    /// The address its ports are on (the pod's, or 127.0.0.1).
    pub ip: String,
    pub pid: Option<u32>,
    pub running: bool,
    pub restarts: u32,
    pub ports: BTreeMap<String, u16>,
    pub log: PathBuf,
}

impl ComponentState {
    pub fn new(spec: &Spec, kind: &str, ip: String, ports: BTreeMap<String, u16>) -> Self {
        ComponentState {
            name: spec.name.clone(),
            kind: kind.to_string(),
            version: None,
            pod: None,
            ip,
            pid: None,
            running: true,
            restarts: 0,
            ports,
            log: spec.log.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Network {
    pub cidr: String,
    pub node_ip: String,
}

#[derive(Debug, Serialize)]
pub struct State {
    pub meshctl_pid: u32,
    pub ready: bool,
    pub urls: Vec<(String, String)>,
    /// Hosts the gateway serves (send them as the Host header).
    pub hosts: Vec<String>,
    pub gateway_port: u16,
    pub network: Network,
    /// Every `--set` applied so far, in order (`helm upgrade --reuse-values`).
    pub values: Vec<String>,
    pub findings: Vec<String>,
    pub components: Vec<ComponentState>,
    #[serde(skip)]
    path: PathBuf,
    #[serde(skip)]
    pub dirty: bool,
}

impl State {
    /// Starts a new state, removing the file of an earlier run.
    pub fn new(run_dir: &Path, network: Network, values: Vec<String>) -> State {
        let _ = std::fs::remove_file(run_dir.join("state.json"));
        State {
            meshctl_pid: std::process::id(),
            ready: false,
            urls: Vec::new(),
            hosts: Vec::new(),
            gateway_port: 0,
            network,
            values,
            findings: Vec::new(),
            components: Vec::new(),
            path: run_dir.join("state.json"),
            dirty: false,
        }
    }

    /// Writes atomically (temp file + rename) so readers never see half a file.
    pub fn write(&mut self) -> anyhow::Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("write {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("write {}", self.path.display()))?;
        self.dirty = false;
        Ok(())
    }
}

/// A mesh that is gone, however meshctl leaves, has no state file.
impl Drop for State {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A `control/<component>.<action>` file.
pub struct ControlRequest {
    pub component: String,
    pub action: String,
    path: PathBuf,
}

impl ControlRequest {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn done(self) -> anyhow::Result<()> {
        std::fs::remove_file(&self.path).with_context(|| format!("remove {}", self.path.display()))
    }
}

pub fn control_requests(run_dir: &Path) -> anyhow::Result<Vec<ControlRequest>> {
    let dir = run_dir.join("control");
    let mut requests = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
        let path = entry?.path();
        let Some(file) = path.file_name().and_then(|f| f.to_str()) else {
            continue;
        };
        // Answers and files being written are not requests.
        if file.ends_with(".result") || file.ends_with(".tmp") {
            continue;
        }
        if let Some((component, action)) = file.rsplit_once('.') {
            requests.push(ControlRequest {
                component: component.to_string(),
                action: action.to_string(),
                path: path.clone(),
            });
        }
    }
    requests.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(requests)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_files_become_requests() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("control")).unwrap();
        std::fs::write(dir.path().join("control/gateway.restart"), "").unwrap();
        std::fs::write(dir.path().join("control/model-v2.stop"), "").unwrap();
        let requests = control_requests(dir.path()).unwrap();
        let pairs: Vec<_> = requests
            .iter()
            .map(|r| (r.component.as_str(), r.action.as_str()))
            .collect();
        assert_eq!(pairs, [("gateway", "restart"), ("model-v2", "stop")]);
        for request in requests {
            request.done().unwrap();
        }
        assert!(control_requests(dir.path()).unwrap().is_empty());
    }
}
