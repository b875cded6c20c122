//! `<run-dir>/state.json`, what tests and scripts read to find the running
//! mesh, and `<run-dir>/control/`, how they ask it to act on a component.
//!
//! ```json
//! {"meshctl_pid": 123, "ready": true,
//!  "urls": [["app", "http://localhost:8080/sms"], ...],
//!  "findings": ["Deployment/x: spec.replicas not reproduced (...)", ...],
//!  "components": [{"name": "sidecar-v1", "kind": "sidecar", "version": "v1",
//!                  "pid": 456, "running": true, "restarts": 0,
//!                  "ports": {"http": 15110, "admin": 15111},
//!                  "log": "/abs/.run/sidecar-v1.log"}, ...]}
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use super::plan::Finding;
use super::supervisor::Spec;

#[derive(Debug, Serialize)]
pub struct ComponentState {
    pub name: String,
    /// `gateway`, `sidecar`, `model-service` or `prometheus`.
    pub kind: String,
    pub version: Option<String>,
    pub pid: Option<u32>,
    pub running: bool,
    pub restarts: u32,
    pub ports: BTreeMap<String, u16>,
    pub log: PathBuf,
}

impl ComponentState {
    pub fn new<const N: usize>(
        spec: &Spec,
        kind: &str,
        version: Option<&String>,
        ports: [(&str, u16); N],
    ) -> Self {
        ComponentState {
            name: spec.name.clone(),
            kind: kind.to_string(),
            version: version.cloned(),
            pid: None,
            running: true,
            restarts: 0,
            ports: ports.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            log: spec.log.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct State {
    pub meshctl_pid: u32,
    pub ready: bool,
    pub urls: Vec<(String, String)>,
    pub findings: Vec<String>,
    pub components: Vec<ComponentState>,
    #[serde(skip)]
    path: PathBuf,
    #[serde(skip)]
    pub dirty: bool,
}

impl State {
    /// Starts a new state, removing the file of an earlier run.
    pub fn new(run_dir: &Path, urls: Vec<(String, String)>, findings: &[Finding]) -> State {
        let _ = std::fs::remove_file(run_dir.join("state.json"));
        State {
            meshctl_pid: std::process::id(),
            ready: false,
            urls,
            findings: findings.iter().map(ToString::to_string).collect(),
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
