//! Starting, supervising and stopping the local mesh.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::check::{self, istio_message};
use super::forward::Forward;
use super::istio::{self, IstioDir};
use super::network::Network;
use super::pods::{Images, Plan, Pod};
use super::state::{self, ComponentState, Kind, State};
use super::supervisor::{self, Component, Isolation, Ready, Spec};
use super::values::{self, Rendered};
use super::{RunArgs, abs, control, prometheus, require};

/// How long a component may take to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// SIGTERM to SIGKILL when the mesh stops (the model-service drains for the
/// chart's shutdownDrainSeconds, Istio's agent for its drain duration).
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// Everything started so far, stopped together when dropped.
pub struct Running {
    pub components: Vec<Component>,
    forward: Option<Forward>,
    pods: Vec<Pod>,
    network: Option<Network>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.forward = None;
        supervisor::stop_all(&mut self.components, STOP_GRACE);
        self.components.clear();
        // Namespaces go once their holders and every process in them are gone.
        self.pods.clear();
        self.network = None;
    }
}

/// The mesh's inputs that stay fixed while it runs.
pub struct Inputs {
    pub args: RunArgs,
    pub istio: IstioDir,
    pub run_dir: PathBuf,
    pub control_socket: PathBuf,
}

impl Inputs {
    pub fn new(args: RunArgs) -> anyhow::Result<Inputs> {
        let run_dir = abs(&args.run_dir)?;
        let istio = IstioDir(abs(&args.istio_dir)?);
        let control_socket = run_dir.join("istiod.sock");
        let mut args = args;
        for path in [
            &mut args.helm,
            &mut args.envoy,
            &mut args.wasm,
            &mut args.model_service,
            &mut args.models_dir,
            &mut args.chart,
            &mut args.istiod_values,
            &mut args.gateway_values,
        ] {
            *path = abs(path)?;
        }
        Ok(Inputs {
            args,
            istio,
            run_dir,
            control_socket,
        })
    }

    fn log(&self, name: &str) -> PathBuf {
        self.run_dir.join(format!("{name}.log"))
    }
}

pub fn preflight(args: &RunArgs, istio: &IstioDir) -> anyhow::Result<()> {
    require("helm", &args.helm, "run `make tools`")?;
    require("envoy", &args.envoy, "run `make tools`")?;
    require("istiod-local", &istio.istiod_local(), "run `make istio`")?;
    require("pilot-agent", &istio.pilot_agent(), "run `make istio`")?;
    require(
        "Istio's bootstrap template",
        &istio.bootstrap_template(),
        "run `make istio`",
    )?;
    require(
        "istiod values",
        &args.istiod_values,
        "the file ships with the project",
    )?;
    require(
        "gateway values",
        &args.gateway_values,
        "the file ships with the project",
    )?;
    Ok(())
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    if args.check {
        return check::check(&args);
    }
    let inputs = Inputs::new(args)?;
    let args = &inputs.args;
    preflight(args, &inputs.istio)?;
    require(
        "model-service",
        &args.model_service,
        "run `make run`, which builds it",
    )?;
    require("the filter module", &args.wasm, "run `make wasm`")?;
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "the local mesh creates network namespaces for its pods, which needs root (run it with sudo)"
        );
    }
    let stop = stop_on_signals()?;
    let run_dir = &inputs.run_dir;
    prepare_run_dir(run_dir)?;

    let started = Instant::now();
    let rendered = values::render(&inputs, &args.set)?;
    let network = Network::create()?;
    let mut state = State::new(
        run_dir,
        state::Network {
            cidr: network.cidr(),
            node_ip: network.node_ip().to_string(),
        },
        args.set.clone(),
    );
    state.findings = rendered.findings();
    let mut running = Running {
        components: Vec::new(),
        forward: None,
        pods: Vec::new(),
        network: None,
    };
    let Some(plan) = start_control_plane(
        &inputs,
        &rendered,
        &network,
        &stop,
        &mut running,
        &mut state,
    )?
    else {
        return Ok(ExitCode::SUCCESS);
    };
    start_pods(
        &inputs,
        plan,
        &rendered,
        &network,
        &stop,
        &mut running,
        &mut state,
    )?;
    if stop.load(Ordering::Relaxed) {
        return Ok(ExitCode::SUCCESS);
    }
    // What a proxy refused (e.g. a Wasm plugin its configuration) is said
    // last and loudly: it changes what users see.
    let refused = check::rejections(
        &istio::status(&inputs.control_socket)?.rejected,
        &state.components,
    );
    open_gateway(args, &rendered, &mut running, &mut state)?;
    crate::alerts::write_rule_file(run_dir, &rendered.objects)?;
    let prometheus_note = start_prometheus(&inputs, &stop, &mut running, &mut state)?;
    running.network = Some(network);
    state.urls = urls(&state);
    state.write()?;

    if let Some(note) = &prometheus_note {
        eprintln!("warning: {note}");
    }
    for finding in &state.findings {
        println!("  - {finding}");
    }
    for line in &refused {
        eprintln!("warning: {line}");
    }
    state.findings.extend(refused);
    println!(
        "Local mesh is up in {:.1} s (Istio's control plane drives every proxy; logs in {}):",
        started.elapsed().as_secs_f64(),
        run_dir.display()
    );
    for (what, url) in &state.urls {
        println!("  {what:<18} {url}");
    }
    println!("`meshctl set KEY=VALUE,...` changes chart values live; Ctrl-C stops everything.");
    // Ready only once the URLs are printed: readers of state.json may read them.
    state.ready = true;
    state.write()?;

    let mut live = values::Live::new(&inputs, rendered);
    control::serve(run_dir, &mut running, &mut state, &mut live, &stop)?;
    println!("Stopping the local mesh...");
    drop(running);
    drop(state);
    println!("Stopped.");
    Ok(ExitCode::SUCCESS)
}

/// A flag set by Ctrl-C, SIGTERM or SIGHUP: the mesh stops at the next
/// step or poll.
fn stop_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).context("install signal handler")?;
    }
    Ok(stop)
}

fn prepare_run_dir(run_dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(run_dir.join("control"))
        .with_context(|| format!("create {}", run_dir.display()))?;
    // Containers run as their pod's users: they must reach their pod folders.
    std::fs::set_permissions(run_dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    // Left over from a run that was killed: not this run's state or requests.
    for request in state::control_requests(run_dir)? {
        request.done()?;
    }
    let _ = std::fs::remove_dir_all(run_dir.join("pods"));
    Ok(())
}

/// Starts the control plane in the node's namespace, at the node's address,
/// and returns the pods it planned (none when told to stop meanwhile).
fn start_control_plane(
    inputs: &Inputs,
    rendered: &Rendered,
    network: &Network,
    stop: &AtomicBool,
    running: &mut Running,
    state: &mut State,
) -> anyhow::Result<Option<Plan>> {
    let run_dir = &inputs.run_dir;
    let files = rendered.write(inputs, network.node_ip())?;
    let plan_path = run_dir.join("plan.json");
    let _ = std::fs::remove_file(&plan_path);
    let _ = std::fs::remove_file(&inputs.control_socket);
    let mut istiod_args = vec!["serve".to_string()];
    istiod_args.extend(
        files
            .flags()
            .iter()
            .map(|s| s.to_string_lossy().into_owned()),
    );
    istiod_args.extend([
        "--pod-cidr".into(),
        network.cidr(),
        "--ca-dir".into(),
        run_dir.join("ca").display().to_string(),
        "--plan".into(),
        plan_path.display().to_string(),
        "--listen".into(),
        format!("{}:{}", network.node_ip(), istio::ISTIOD_PORT),
        "--control".into(),
        inputs.control_socket.display().to_string(),
    ]);
    let istiod = Spec {
        name: "istiod".into(),
        program: inputs.istio.istiod_local(),
        args: istiod_args,
        env: Vec::new(),
        clear_env: false,
        log: inputs.log("istiod"),
        ready: Ready::File(inputs.control_socket.clone()),
        isolation: Isolation {
            netns: Some(network.node().path()),
            ..Isolation::default()
        },
    };
    let mut istiod_state = ComponentState::new(
        &istiod,
        Kind::Istiod,
        network.node_ip().to_string(),
        BTreeMap::from([("grpc-xds".to_string(), istio::ISTIOD_PORT)]),
    );
    supervisor::fresh_log(&istiod.log)?;
    let mut component = Component::new(istiod);
    component.start()?;
    if let Err(err) = component.wait_ready(READY_TIMEOUT, stop) {
        let log = std::fs::read_to_string(&component.spec.log).unwrap_or_default();
        bail!(
            "the Istio control plane did not start: {err}\n{}",
            istio_message(&log)
        );
    }
    istiod_state.pid = component.pid();
    running.components.push(component);
    state.components.push(istiod_state);
    if stop.load(Ordering::Relaxed) {
        return Ok(None);
    }
    let plan: Plan = serde_json::from_str(
        &std::fs::read_to_string(&plan_path)
            .with_context(|| format!("read {}", plan_path.display()))?,
    )
    .context("read the control plane's pod plan")?;
    state.findings.extend(
        plan.skipped
            .iter()
            .map(|s| format!("{s}: no controller reads this kind locally")),
    );
    state
        .findings
        .extend(plan.warnings.iter().map(|w| format!("Istio warns: {w}")));
    Ok(Some(plan))
}

/// Runs the planned pods as a kubelet does: namespaces, then each pod's init
/// containers in order (pods side by side), then every container.
fn start_pods(
    inputs: &Inputs,
    plan: Plan,
    rendered: &Rendered,
    network: &Network,
    stop: &AtomicBool,
    running: &mut Running,
    state: &mut State,
) -> anyhow::Result<()> {
    let args = &inputs.args;
    let run_dir = &inputs.run_dir;
    let pods_dir = run_dir.join("pods");
    let images = Images {
        pilot_agent: inputs.istio.pilot_agent(),
        bootstrap_template: inputs.istio.bootstrap_template(),
        model_service: args.model_service.clone(),
        models_dir: args.models_dir.clone(),
    };
    let ingress = rendered.ingress()?;
    for pod_plan in plan.pods {
        running
            .pods
            .push(Pod::create(pod_plan, network, &pods_dir)?);
    }
    let mut inits = Vec::new();
    let mut containers = Vec::new();
    for pod in &running.pods {
        let specs = pod.specs(&images, run_dir, &ingress.first_pod())?;
        inits.push(specs.init);
        for (spec, role) in specs.containers {
            let mut component_state =
                ComponentState::new(&spec, role.kind(), pod.plan.ip.to_string(), pod.ports(role));
            component_state.version = pod.version().map(str::to_string);
            component_state.pod = Some(pod.id());
            containers.push((spec, component_state));
        }
    }
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let handles: Vec<_> = inits
            .into_iter()
            .map(|specs| {
                scope.spawn(move || -> anyhow::Result<()> {
                    for spec in specs {
                        supervisor::fresh_log(&spec.log)?;
                        let mut init = Component::new(spec);
                        init.start()?;
                        init.wait_ready(READY_TIMEOUT, stop)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for handle in handles {
            handle
                .join()
                .map_err(|_| anyhow::anyhow!("an init container thread panicked"))??;
        }
        Ok(())
    })?;
    let first = running.components.len();
    for (spec, mut component_state) in containers {
        supervisor::fresh_log(&spec.log)?;
        let mut component = Component::new(spec);
        component.start()?;
        component_state.pid = component.pid();
        running.components.push(component);
        state.components.push(component_state);
    }
    for component in &mut running.components[first..] {
        component.wait_ready(READY_TIMEOUT, stop)?;
    }
    Ok(())
}

/// The way in: 127.0.0.1:<gateway port> to the ingress gateway pod.
fn open_gateway(
    args: &RunArgs,
    rendered: &Rendered,
    running: &mut Running,
    state: &mut State,
) -> anyhow::Result<()> {
    let ingress = rendered.ingress()?;
    let gateway_pod = running
        .pods
        .iter()
        .find(|p| p.plan.name == ingress.first_pod())
        .with_context(|| format!("no pod {} for the ingress gateway", ingress.first_pod()))?;
    let target = SocketAddr::from((gateway_pod.plan.ip, rendered.gateway_target_port()));
    let forward = Forward::start(
        SocketAddr::from(([127, 0, 0, 1], args.gateway_port)),
        target,
    )?;
    state.gateway_port = forward.port();
    state.hosts = rendered.hosts();
    running.forward = Some(forward);
    Ok(())
}

/// Prometheus on the host, scraping the pods by their annotations. Without
/// it the mesh still runs; the returned note says why it is missing.
fn start_prometheus(
    inputs: &Inputs,
    stop: &AtomicBool,
    running: &mut Running,
    state: &mut State,
) -> anyhow::Result<Option<String>> {
    let args = &inputs.args;
    if !args.prometheus.exists() {
        return Ok(Some(format!(
            "Prometheus not found at {} (install Debian's `prometheus`, e.g. `make tools`); running without it",
            args.prometheus.display()
        )));
    }
    let run_dir = &inputs.run_dir;
    let data = run_dir.join("prometheus-data");
    // Counts start from zero on every run.
    let _ = std::fs::remove_dir_all(&data);
    let pods: Vec<_> = running.pods.iter().map(|p| p.plan.clone()).collect();
    let config_path = run_dir.join("prometheus.yml");
    std::fs::write(
        &config_path,
        crate::alerts::local_config(
            &prometheus::config(args.scrape_interval, &pods),
            run_dir,
            crate::workspace::ROLLOUT_METRICS_ADDR,
        )?,
    )?;
    let spec = Spec {
        name: "prometheus".into(),
        program: args.prometheus.clone(),
        args: vec![
            format!("--config.file={}", config_path.display()),
            format!("--storage.tsdb.path={}", data.display()),
            format!("--web.listen-address=127.0.0.1:{}", args.prometheus_port),
            "--web.enable-lifecycle".into(),
        ],
        env: Vec::new(),
        clear_env: false,
        log: inputs.log("prometheus"),
        ready: Ready::Http(format!("http://127.0.0.1:{}/-/ready", args.prometheus_port)),
        isolation: Isolation::default(),
    };
    let mut component_state = ComponentState::new(
        &spec,
        Kind::Prometheus,
        "127.0.0.1".into(),
        BTreeMap::from([("http".to_string(), args.prometheus_port)]),
    );
    supervisor::fresh_log(&spec.log)?;
    let mut component = Component::new(spec);
    component.start()?;
    match component.wait_ready(Duration::from_secs(60), stop) {
        Ok(()) => component_state.pid = component.pid(),
        Err(err) => {
            eprintln!("warning: {err}; running without Prometheus");
            component_state.running = false;
        }
    }
    running.components.push(component);
    state.components.push(component_state);
    Ok(None)
}

/// What a person opens: the app by the host the Gateway serves (resolve it
/// to 127.0.0.1, as the chart's README says for a cluster), or with curl.
fn urls(state: &State) -> Vec<(String, String)> {
    let port = state.gateway_port;
    let mut urls = Vec::new();
    if let Some(host) = state.hosts.iter().find(|h| !h.contains('*')) {
        urls.push(("app".into(), format!("http://{host}:{port}/sms")));
        urls.push((
            "app (curl)".into(),
            format!("curl -H 'Host: {host}' http://127.0.0.1:{port}/sms"),
        ));
    }
    for c in &state.components {
        let (what, url) = match c.kind {
            Kind::Gateway | Kind::Sidecar => (
                format!("{} stats", c.name),
                c.url("stats", "/stats/prometheus"),
            ),
            // The agent's merged metrics: its status port is the proxy's, not
            // in the model-service container's port map.
            Kind::ModelService => (
                format!("{} metrics", c.name),
                Some(format!(
                    "http://{}:{}/stats/prometheus",
                    c.ip,
                    super::pods::AGENT_STATUS_PORT
                )),
            ),
            Kind::Prometheus => ("prometheus".into(), c.url("http", "")),
            Kind::Istiod => continue,
        };
        urls.extend(url.map(|url| (what, url)));
    }
    urls
}
