//! The local mesh (`meshctl run`) as a test fixture.
//!
//! ```no_run
//! use sms_checker_tests::mesh::LocalMesh;
//! use sms_checker_tests::users::predict;
//! let mesh = LocalMesh::start(&["istio.trafficSplit.stable=95", "istio.trafficSplit.canary=5"]);
//! let reply = predict(&mesh.client(), &mesh.gateway(), None, "hello");
//! mesh.kill("model-v3"); // a crash: SIGKILL to that container
//! mesh.restart("gateway"); // stop and start again, same pod and address
//! mesh.set(&["istio.trafficSplit.canary=20,istio.trafficSplit.stable=80"]); // live, over xDS
//! // Dropping `mesh` stops meshctl, which stops every process it started.
//! ```
//!
//! The gateway and Prometheus ports are picked free on 127.0.0.1, each mesh
//! has its own pod network (network namespaces, an address per pod),
//! Prometheus scrapes every second, and the run directory is a temporary
//! folder, so meshes of several tests can run side by side.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::Value;

pub use meshctl::mesh::state::{Action, ComponentState as Component, Kind, State};

use crate::process::Process;
use crate::{envoy_bin, free_port, helm_bin, istio_dir, printed, wait_for, workspace_root};
pub use crate::{filter_wasm, meshctl_bin, model_service_bin};

/// How to start a mesh; [`LocalMesh::start`] covers the common case.
#[derive(Debug, Clone, Default)]
pub struct MeshOptions {
    /// Chart values, each as `helm --set` takes it.
    pub sets: Vec<String>,
    /// An already rendered manifest to run instead of rendering the chart.
    pub manifest: Option<PathBuf>,
    /// The Prometheus binary; `None` uses meshctl's default (Debian's).
    pub prometheus: Option<PathBuf>,
}

/// `meshctl run` in `run_dir` with this workspace's tools: helm, Envoy,
/// Istio's parts and the filter.
pub fn meshctl_run(run_dir: &Path) -> Command {
    let mut command = Command::new(meshctl_bin());
    command
        .current_dir(workspace_root())
        .arg("run")
        .arg("--run-dir")
        .arg(run_dir)
        .arg("--helm")
        .arg(helm_bin())
        .arg("--envoy")
        .arg(envoy_bin())
        .arg("--istio-dir")
        .arg(istio_dir())
        .arg("--wasm")
        .arg(filter_wasm());
    command
}

/// `http://<ip>:<port named port><path>` of a component, which must have that port.
pub fn url(component: &Component, port: &str, path: &str) -> String {
    component.url(port, path).unwrap_or_else(|| {
        panic!(
            "{} has no port {port}: {:?}",
            component.name, component.ports
        )
    })
}

/// The way into the mesh: the port-forward to the ingress gateway, and the
/// host its Gateway serves (sent as the Host header, as a browser would
/// after `/etc/hosts` maps the name to 127.0.0.1).
#[derive(Debug, Clone)]
pub struct Gateway {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The port in `base`, for URLs under `host` (as a browser would use).
    pub port: u16,
    pub host: String,
}

impl Gateway {
    pub fn get(
        &self,
        agent: &ureq::Agent,
        path: &str,
    ) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
        agent
            .get(&format!("{}{path}", self.base))
            .header("host", &self.host)
    }

    pub fn post(
        &self,
        agent: &ureq::Agent,
        path: &str,
    ) -> ureq::RequestBuilder<ureq::typestate::WithBody> {
        agent
            .post(&format!("{}{path}", self.base))
            .header("host", &self.host)
    }
}

/// A running local mesh; dropping it stops everything it started.
pub struct LocalMesh {
    // Field order matters: meshctl stops before its run dir is removed.
    meshctl: Process,
    run_dir: tempfile::TempDir,
}

impl LocalMesh {
    /// Starts the mesh from the chart rendered with `sets` and waits until
    /// every component is ready.
    pub fn start(sets: &[&str]) -> LocalMesh {
        LocalMesh::start_with(MeshOptions {
            sets: sets.iter().map(|s| s.to_string()).collect(),
            ..MeshOptions::default()
        })
    }

    /// Starts a mesh with `options`. Ports are picked free but only bound
    /// later by each process, so another test can take one in between: a
    /// start that fails on "address already in use" is tried again (three
    /// times at most); any other failure panics with every component's log.
    pub fn start_with(options: MeshOptions) -> LocalMesh {
        let mut attempt = 1;
        loop {
            match LocalMesh::try_start(&options) {
                Ok(mesh) => return mesh,
                Err(failure) if attempt < 3 && failure.contains("ddress already in use") => {
                    eprintln!("local mesh: a port was taken meanwhile; starting again");
                    attempt += 1;
                }
                Err(failure) => panic!("{failure}"),
            }
        }
    }

    /// Starts a mesh that must not come up, and returns what meshctl said.
    pub fn start_failure(options: MeshOptions) -> String {
        match LocalMesh::try_start(&options) {
            Ok(mesh) => panic!("the mesh started:\n{}", mesh.output()),
            Err(failure) => failure,
        }
    }

    fn try_start(options: &MeshOptions) -> Result<LocalMesh, String> {
        let run_dir = tempfile::Builder::new()
            .prefix("local-mesh-")
            .tempdir()
            .expect("create a run dir");
        let mut command = meshctl_run(run_dir.path());
        command
            .args(["--gateway-port", &free_port().to_string()])
            .args(["--prometheus-port", &free_port().to_string()])
            .args(["--scrape-interval", "1s"])
            .arg("--model-service")
            .arg(model_service_bin());
        for set in &options.sets {
            command.arg("--set").arg(set);
        }
        if let Some(manifest) = &options.manifest {
            command.arg("--manifest").arg(manifest);
        }
        if let Some(prometheus) = &options.prometheus {
            command.arg("--prometheus").arg(prometheus);
        }
        let log = run_dir.path().join("meshctl.out");
        let mut meshctl = Process::spawn("meshctl", command, &log);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = meshctl.try_wait() {
                return Err(format!(
                    "meshctl exited ({status}) before the mesh was ready:\n{}{}",
                    meshctl.log(),
                    component_logs(run_dir.path())
                ));
            }
            if read_state(run_dir.path()).is_some_and(|s| s.ready) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the local mesh was not ready after 120 s:\n{}{}",
                meshctl.log(),
                component_logs(run_dir.path())
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(LocalMesh { meshctl, run_dir })
    }

    pub fn run_dir(&self) -> &Path {
        self.run_dir.path()
    }

    /// The `state.json` meshctl keeps current.
    pub fn state(&self) -> State {
        read_state(self.run_dir()).expect("state.json of a running mesh")
    }

    pub fn meshctl_pid(&self) -> u32 {
        self.meshctl.pid()
    }

    /// What meshctl printed so far (URLs, findings, warnings).
    pub fn output(&self) -> String {
        self.meshctl.log()
    }

    /// The findings meshctl listed: what the local mesh does not reproduce.
    pub fn findings(&self) -> Vec<String> {
        self.state().findings.clone()
    }

    pub fn components(&self) -> Vec<Component> {
        self.state().components.clone()
    }

    /// A component by name: `gateway`, `sidecar-v1`, `model-v1`, `prometheus`, ...
    pub fn component(&self, name: &str) -> Component {
        let state = self.state();
        state
            .component(name)
            .cloned()
            .unwrap_or_else(|| panic!("no component {name} in {:?}", state.components))
    }

    /// The port-forward to the ingress gateway, and the host to ask for.
    pub fn gateway(&self) -> Gateway {
        let state = self.state();
        Gateway {
            base: format!("http://127.0.0.1:{}", state.gateway_port),
            port: state.gateway_port,
            host: state
                .hosts
                .first()
                .map_or("localhost", String::as_str)
                .to_string(),
        }
    }

    /// `http://127.0.0.1:<prometheus port>`.
    pub fn prometheus_url(&self) -> String {
        url(&self.component("prometheus"), "http", "")
    }

    /// An HTTP client that returns every status as a response, with no
    /// cookie jar (tests carry the user cookie themselves).
    pub fn client(&self) -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(15)))
            .build()
            .new_agent()
    }

    /// Envoy's `/stats/prometheus` of a proxy (`gateway`, `sidecar-v1`,
    /// ...), on Istio's stats port.
    pub fn proxy_stats(&self, name: &str) -> String {
        get_text(&url(&self.component(name), "stats", "/stats/prometheus"))
    }

    /// A model-service's metrics (`model-v1`, ...), as Istio's agent serves
    /// them merged with its sidecar's on the pod's status port: read there,
    /// not through the sidecar, so reading them is not a request the
    /// sidecar counts.
    pub fn service_metrics(&self, name: &str) -> String {
        let pod = self.component(name).pod;
        let sidecar = self
            .components()
            .into_iter()
            .find(|c| c.kind == Kind::Sidecar && c.pod == pod)
            .unwrap_or_else(|| panic!("no sidecar in the pod of {name}"));
        get_text(&url(&sidecar, "status", "/stats/prometheus"))
    }

    /// A command that runs `program` inside the network namespace of the pod
    /// of component `name` (its redirect rules apply: a process not run as
    /// Istio's proxy user goes out through the pod's sidecar).
    pub fn in_pod(&self, name: &str, program: &str) -> Command {
        let pid = self
            .component(name)
            .pid
            .unwrap_or_else(|| panic!("{name} is not running"));
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net=/proc/{pid}/ns/net"))
            .arg("--")
            .arg(program);
        command
    }

    /// Changes chart values of the running mesh (`meshctl set`) and waits
    /// until every proxy has the result; `Err` holds meshctl's message.
    pub fn set(&self, values: &[&str]) -> Result<String, String> {
        let output = Command::new(meshctl_bin())
            .arg("set")
            .arg("--run-dir")
            .arg(self.run_dir())
            .args(values)
            .output()
            .expect("run meshctl set");
        let text = printed(&output);
        if output.status.success() {
            Ok(text)
        } else {
            Err(text)
        }
    }

    /// A PromQL instant query: each result's labels and value.
    pub fn prometheus_query(&self, query: &str) -> Vec<(serde_json::Map<String, Value>, f64)> {
        let url = format!("{}/api/v1/query", self.prometheus_url());
        let mut response = self
            .client()
            .get(&url)
            .query("query", query)
            .call()
            .unwrap_or_else(|err| panic!("query Prometheus: {err}"));
        let body: Value =
            serde_json::from_str(&response.body_mut().read_to_string().unwrap_or_default())
                .expect("Prometheus answers JSON");
        assert_eq!(body["status"], "success", "{query}: {body}");
        body["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                let labels = r["metric"].as_object().cloned().unwrap_or_default();
                let value = r["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN);
                (labels, value)
            })
            .collect()
    }

    /// Simulates a crash: SIGKILL to the component's process group. meshctl
    /// notices and marks it stopped; it is not restarted.
    pub fn kill(&self, name: &str) {
        let pid = self
            .component(name)
            .pid
            .unwrap_or_else(|| panic!("{name} is not running"));
        killpg(Pid::from_raw(pid as i32), Signal::SIGKILL)
            .unwrap_or_else(|err| panic!("kill {name}: {err}"));
        wait_for(
            &format!("meshctl to see {name} stopped"),
            Duration::from_secs(10),
            || (!self.component(name).running).then_some(()),
        );
    }

    /// Asks meshctl to stop and start a component again on the same ports,
    /// and waits until it is ready.
    pub fn restart(&self, name: &str) {
        self.control(name, Action::Restart);
    }

    /// Asks meshctl to stop a component (graceful, unlike [`LocalMesh::kill`]).
    pub fn stop(&self, name: &str) {
        self.control(name, Action::Stop);
    }

    fn control(&self, name: &str, action: Action) {
        let before = self.component(name).restarts;
        let request = meshctl::mesh::state::request_path(self.run_dir(), name, action);
        std::fs::write(&request, "").expect("write a control request");
        wait_for(
            &format!("{action} of {name}"),
            Duration::from_secs(90),
            || {
                let done = !request.exists();
                let component = self.component(name);
                let settled = match action {
                    Action::Stop => !component.running,
                    _ => component.running && component.restarts > before,
                };
                (done && settled).then_some(())
            },
        );
    }

    /// Stops meshctl the way Ctrl-C does and returns its exit status.
    pub fn interrupt(&mut self) -> Option<std::process::ExitStatus> {
        self.meshctl.signal(Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.meshctl.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

fn read_state(run_dir: &Path) -> Option<State> {
    State::read(run_dir).ok()
}

fn get_text(url: &str) -> String {
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .new_agent();
    let mut response = agent
        .get(url)
        .call()
        .unwrap_or_else(|err| panic!("GET {url}: {err}"));
    response
        .body_mut()
        .read_to_string()
        .unwrap_or_else(|err| panic!("read {url}: {err}"))
}

/// The sum of a metric's samples whose labels include every `(name, value)`
/// in `labels`, from Prometheus exposition text.
pub fn metric_sum(text: &str, metric: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (name, rest) = series.split_once('{').unwrap_or((series, "}"));
            if name != metric {
                return None;
            }
            let label_text = rest.trim_end_matches('}');
            let matches = labels.iter().all(|(k, v)| {
                label_text
                    .split(',')
                    .any(|pair| pair == format!("{k}=\"{v}\""))
            });
            matches.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// True while a process with this pid exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
    })
}

/// The last lines of every component log in `run_dir`, for failure messages.
fn component_logs(run_dir: &Path) -> String {
    let Ok(entries) = std::fs::read_dir(run_dir) else {
        return String::new();
    };
    let mut logs: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
        .collect();
    logs.sort();
    let mut out = String::new();
    for path in logs {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(15)..];
        out.push_str(&format!(
            "\n--- {} (last {} lines)\n{}\n",
            path.display(),
            tail.len(),
            tail.join("\n")
        ));
    }
    out
}

/// The chart rendered as `meshctl run` renders it (the WasmPlugins pointed
/// at the local module), changed by `edit` as someone might by hand, and
/// written to `dir` for `--manifest`.
pub fn edited_manifest(dir: &Path, edit: impl Fn(&str) -> String) -> PathBuf {
    let rendered = meshctl::chart::render(
        &helm_bin(),
        &meshctl::chart::Render {
            chart: crate::chart::chart_dir(),
            release: "sms-checker".into(),
            sets: vec![format!("filter.url=file://{}", filter_wasm().display())],
            ..meshctl::chart::Render::default()
        },
    )
    .unwrap_or_else(|err| panic!("render the chart: {err}"));
    let edited = edit(&rendered);
    assert_ne!(edited, rendered, "the edit changed nothing");
    let path = dir.join("manifest.yaml");
    std::fs::write(&path, edited).expect("write manifest");
    path
}
