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
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::supervisor::Spec;

/// What a component is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// The ingress gateway's Envoy (Istio's agent runs it).
    Gateway,
    /// A model-service pod's Envoy.
    Sidecar,
    ModelService,
    /// The control plane, `istiod-local`.
    Istiod,
    Prometheus,
}

impl Kind {
    /// An Envoy, run by Istio's agent, configured by the control plane.
    pub fn is_proxy(self) -> bool {
        matches!(self, Kind::Gateway | Kind::Sidecar)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ComponentState {
    pub name: String,
    pub kind: Kind,
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
    pub fn new(spec: &Spec, kind: Kind, ip: String, ports: BTreeMap<String, u16>) -> Self {
        ComponentState {
            name: spec.name.clone(),
            kind,
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

    /// `http://<ip>:<port>/<path>` for the port named `port`, if it has one.
    pub fn url(&self, port: &str, path: &str) -> Option<String> {
        let number = self.ports.get(port)?;
        Some(format!("http://{}:{number}{path}", self.ip))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Network {
    pub cidr: String,
    pub node_ip: String,
}

#[derive(Debug, Serialize, Deserialize)]
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
    /// The file this state is written to, by the `meshctl run` that owns
    /// it; `None` in a state read back by anyone else.
    #[serde(skip)]
    path: Option<PathBuf>,
    #[serde(skip)]
    pub dirty: bool,
}

impl State {
    /// Starts a new state, removing the file of an earlier run.
    pub fn new(run_dir: &Path, network: Network, values: Vec<String>) -> State {
        let path = state_path(run_dir);
        let _ = std::fs::remove_file(&path);
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
            path: Some(path),
            dirty: false,
        }
    }

    /// The state of the mesh running with `run_dir`, as it last wrote it.
    pub fn read(run_dir: &Path) -> anyhow::Result<State> {
        let path = state_path(run_dir);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "no local mesh runs with run directory {} (start one with `make run`)",
                run_dir.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("read {}", path.display()))
    }

    /// Writes atomically (temp file + rename) so readers never see half a file.
    pub fn write(&mut self) -> anyhow::Result<()> {
        let Some(path) = &self.path else {
            anyhow::bail!("this state was read, not started: it has no file to write");
        };
        write_atomic(path, &serde_json::to_vec_pretty(self)?)?;
        self.dirty = false;
        Ok(())
    }

    pub fn component(&self, name: &str) -> Option<&ComponentState> {
        self.components.iter().find(|c| c.name == name)
    }
}

fn state_path(run_dir: &Path) -> PathBuf {
    run_dir.join("state.json")
}

/// A mesh that is gone, however meshctl leaves, has no state file.
impl Drop for State {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// What a control request asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Stop the component (SIGTERM, then SIGKILL after the grace period).
    Stop,
    /// Start it again (stopping it first if it still runs).
    Start,
    /// Stop and start it: same pod, same address.
    Restart,
    /// Take new chart values; the request file holds them, one per line.
    Set,
}

impl Action {
    pub const ALL: [Action; 4] = [Action::Stop, Action::Start, Action::Restart, Action::Set];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Stop => "stop",
            Action::Start => "start",
            Action::Restart => "restart",
            Action::Set => "set",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown action {0} (stop, start, restart, set)")]
pub struct UnknownAction(pub String);

impl FromStr for Action {
    type Err = UnknownAction;

    fn from_str(text: &str) -> Result<Action, UnknownAction> {
        Action::ALL
            .into_iter()
            .find(|a| a.as_str() == text)
            .ok_or_else(|| UnknownAction(text.to_string()))
    }
}

/// The file that asks the mesh of `run_dir` to act on `component`:
/// `control/<component>.<action>`.
pub fn request_path(run_dir: &Path, component: &str, action: Action) -> PathBuf {
    run_dir
        .join("control")
        .join(format!("{component}.{action}"))
}

/// Where the mesh answers a request: `control/<component>.result`.
pub fn result_path(request: &Path) -> PathBuf {
    request.with_extension("result")
}

/// Writes `<path>.tmp`, then renames it to `path`, so readers never see half
/// a file (and [`control_requests`] skips the `.tmp` meanwhile).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("write {}", path.display()))
}

/// A `control/<component>.<action>` file.
pub struct ControlRequest {
    pub component: String,
    /// An action meshctl does not know is answered with an error.
    pub action: Result<Action, UnknownAction>,
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
                action: action.parse(),
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
        std::fs::write(request_path(dir.path(), "gateway", Action::Restart), "").unwrap();
        std::fs::write(dir.path().join("control/model-v2.stop"), "").unwrap();
        std::fs::write(dir.path().join("control/model-v3.pause"), "").unwrap();
        let requests = control_requests(dir.path()).unwrap();
        let pairs: Vec<_> = requests
            .iter()
            .map(|r| (r.component.as_str(), r.action.clone()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("gateway", Ok(Action::Restart)),
                ("model-v2", Ok(Action::Stop)),
                ("model-v3", Err(UnknownAction("pause".into()))),
            ]
        );
        for request in requests {
            request.done().unwrap();
        }
        assert!(control_requests(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn answers_and_files_being_written_are_not_requests() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("control")).unwrap();
        let request = request_path(dir.path(), "values-1", Action::Set);
        write_atomic(&state_path(dir.path()), b"{}").unwrap();
        write_atomic(&result_path(&request), b"{}").unwrap();
        std::fs::write(dir.path().join("control/values-2.set.tmp"), "").unwrap();
        assert!(control_requests(dir.path()).unwrap().is_empty());
        write_atomic(&request, b"a=1").unwrap();
        let requests = control_requests(dir.path()).unwrap();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].path(), request);
        assert_eq!(std::fs::read_to_string(&request).unwrap(), "a=1");
        assert!(dir.path().join("control/values-1.result").exists());
        assert!(!dir.path().join("control/values-1.set.tmp").exists());
    }

    #[test]
    fn a_state_read_back_is_the_state_written_and_owns_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let network = Network {
            cidr: "10.213.0.0/24".into(),
            node_ip: "10.213.0.1".into(),
        };
        let mut state = State::new(dir.path(), network, vec!["a=1".into()]);
        state.ready = true;
        state.write().unwrap();
        let read = State::read(dir.path()).unwrap();
        assert!(read.ready);
        assert_eq!(read.values, ["a=1"]);
        drop(read);
        assert!(dir.path().join("state.json").exists());
        drop(state);
        assert!(!dir.path().join("state.json").exists());
    }
}
