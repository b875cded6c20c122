//! Starting, supervising and stopping the local mesh.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::forward::Forward;
use super::istio::{self, IstioDir};
use super::network::Network;
use super::pods::{Images, Plan, Pod};
use super::state::{self, Action, ComponentState, Kind, State};
use super::supervisor::{self, Component, Isolation, Ready, Spec};
use super::values;
use super::{RunArgs, abs, prometheus, require};

/// How long a component may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// SIGTERM to SIGKILL when the mesh stops (the model-service drains for the
/// chart's shutdownDrainSeconds, Istio's agent for its drain duration).
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Everything started so far, stopped together when dropped.
struct Running {
    components: Vec<Component>,
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
    fn new(args: RunArgs) -> anyhow::Result<Inputs> {
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

fn preflight(args: &RunArgs, istio: &IstioDir) -> anyhow::Result<()> {
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

/// `meshctl run --check`: Istio's validation and translation of the charts,
/// each proxy's configuration written to `<run-dir>/istio`.
pub fn check(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let inputs = Inputs::new(args.clone())?;
    preflight(&inputs.args, &inputs.istio)?;
    std::fs::create_dir_all(&inputs.run_dir)?;
    // The addresses the dump uses; nothing listens on them.
    let node_ip = Ipv4Addr::new(10, 244, 0, 1);
    let rendered = values::render(&inputs, &inputs.args.set)?;
    let files = rendered.write(&inputs, node_ip)?;
    let out = inputs.run_dir.join("istio");
    let _ = std::fs::remove_dir_all(&out);
    let mut command = std::process::Command::new(inputs.istio.istiod_local());
    command
        .arg("dump")
        .args(files.flags())
        .args(["--pod-cidr", "10.244.0.0/24", "--ca-dir"])
        .arg(inputs.run_dir.join("ca"))
        .arg("--bootstrap-template")
        .arg(inputs.istio.bootstrap_template())
        .arg("--out")
        .arg(&out);
    let output = command.output().context("run istiod-local dump")?;
    if !output.status.success() {
        bail!(
            "{}",
            istio_message(&String::from_utf8_lossy(&output.stderr))
        );
    }
    for finding in rendered.findings() {
        println!("  - {finding}");
    }
    println!(
        "Istio accepts the configuration; each proxy's bootstrap and xDS resources are in {}",
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The lines istiod-local printed about the input (Istio's messages),
/// without its runtime logging.
pub fn istio_message(log: &str) -> String {
    let lines: Vec<&str> = log
        .lines()
        .skip_while(|l| !l.starts_with("istiod-local:"))
        .filter(|l| !l.contains("\terror\t") && !l.contains("\twarn\t") && !l.contains("\tinfo\t"))
        .collect();
    if lines.is_empty() {
        log.lines()
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    } else {
        lines.join("\n")
    }
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    if args.check {
        return check(&args);
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

    let stop = Arc::new(AtomicBool::new(false));
    for signal in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).context("install signal handler")?;
    }

    let run_dir = &inputs.run_dir;
    std::fs::create_dir_all(run_dir.join("control"))
        .with_context(|| format!("create {}", run_dir.display()))?;
    // Containers run as their pod's users: they must reach their pod folders.
    std::fs::set_permissions(run_dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    // Left over from a run that was killed: not this run's state or requests.
    for request in state::control_requests(run_dir)? {
        request.done()?;
    }
    let pods_dir = run_dir.join("pods");
    let _ = std::fs::remove_dir_all(&pods_dir);

    let started = Instant::now();
    let rendered = values::render(&inputs, &args.set)?;
    let network = Network::create()?;
    let files = rendered.write(&inputs, network.node_ip())?;
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

    // The control plane, in the node's namespace, at the node's address.
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
    let istiod_state = ComponentState::new(
        &istiod,
        Kind::Istiod,
        network.node_ip().to_string(),
        BTreeMap::from([("grpc-xds".to_string(), istio::ISTIOD_PORT)]),
    );
    supervisor::fresh_log(&istiod.log)?;
    let mut component = Component::new(istiod);
    component.start()?;
    if let Err(err) = component.wait_ready(READY_TIMEOUT, &stop) {
        let log = std::fs::read_to_string(&component.spec.log).unwrap_or_default();
        bail!(
            "the Istio control plane did not start: {err}\n{}",
            istio_message(&log)
        );
    }
    let mut istiod_state = istiod_state;
    istiod_state.pid = component.pid();
    running.components.push(component);
    state.components.push(istiod_state);
    if stop.load(Ordering::Relaxed) {
        return Ok(ExitCode::SUCCESS);
    }

    // The pods, as a kubelet runs them.
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
            .push(Pod::create(pod_plan, &network, &pods_dir)?);
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
    // Init containers: in order within a pod, pods side by side.
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let handles: Vec<_> = inits
            .into_iter()
            .map(|specs| {
                let stop = &stop;
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
        component.wait_ready(READY_TIMEOUT, &stop)?;
    }
    if stop.load(Ordering::Relaxed) {
        return Ok(ExitCode::SUCCESS);
    }
    // What a proxy refused (e.g. a Wasm plugin its configuration) is said
    // last and loudly: it changes what users see.
    let refused = rejections(
        &istio::status(&inputs.control_socket)?.rejected,
        &state.components,
    );

    // The way in: 127.0.0.1:<gateway port> to the ingress gateway pod.
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

    // Prometheus on the host, scraping the pods by their annotations.
    let mut prometheus_note = None;
    if args.prometheus.exists() {
        let data = run_dir.join("prometheus-data");
        // Counts start from zero on every run.
        let _ = std::fs::remove_dir_all(&data);
        let pods: Vec<_> = running.pods.iter().map(|p| p.plan.clone()).collect();
        let config_path = run_dir.join("prometheus.yml");
        std::fs::write(
            &config_path,
            prometheus::config(args.scrape_interval, &pods),
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
        match component.wait_ready(Duration::from_secs(60), &stop) {
            Ok(()) => component_state.pid = component.pid(),
            Err(err) => {
                eprintln!("warning: {err}; running without Prometheus");
                component_state.running = false;
            }
        }
        running.components.push(component);
        state.components.push(component_state);
    } else {
        prometheus_note = Some(format!(
            "Prometheus not found at {} (install Debian's `prometheus`, e.g. `make tools`); running without it",
            args.prometheus.display()
        ));
    }
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
    while !stop.load(Ordering::Relaxed) {
        for (component, component_state) in running
            .components
            .iter_mut()
            .zip(state.components.iter_mut())
        {
            if let Some(status) = component.poll_exit() {
                eprintln!(
                    "{} exited ({status}); see {}",
                    component.spec.name,
                    component.spec.log.display()
                );
                component_state.running = false;
                component_state.pid = None;
                state.dirty = true;
            }
        }
        for request in state::control_requests(run_dir)? {
            let action = match &request.action {
                Ok(Action::Set) => {
                    live.handle(request, &mut state)?;
                    continue;
                }
                Ok(action) => *action,
                Err(unknown) => {
                    eprintln!("{}: {unknown}", request.component);
                    request.done()?;
                    continue;
                }
            };
            let position = running
                .components
                .iter()
                .position(|c| c.spec.name == request.component);
            let outcome = match position {
                None => Err(anyhow::anyhow!("no component named {}", request.component)),
                Some(i) => apply(&mut running.components[i], action).map(|pid| {
                    state.components[i].pid = pid;
                    state.components[i].running = pid.is_some();
                    state.components[i].restarts += u32::from(action != Action::Stop);
                }),
            };
            match outcome {
                Ok(()) => println!("{action} {}: done", request.component),
                Err(err) => eprintln!("{action} {}: {err:#}", request.component),
            }
            request.done()?;
            state.dirty = true;
        }
        if state.dirty {
            state.write()?;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("Stopping the local mesh...");
    drop(running);
    drop(state);
    println!("Stopped.");
    Ok(ExitCode::SUCCESS)
}

/// Explains each refusal with the proxy's own log: for a Wasm plugin, the
/// filter's message about its configuration.
pub fn rejections(rejected: &[istio::Rejection], components: &[ComponentState]) -> Vec<String> {
    rejected
        .iter()
        .map(|r| {
            let component = components
                .iter()
                .find(|c| c.pod.as_deref() == Some(r.proxy.as_str()) && c.kind.is_proxy());
            let name = component.map_or(r.proxy.as_str(), |c| c.name.as_str());
            let said: Vec<String> = component
                .and_then(|c| std::fs::read_to_string(&c.log).ok())
                .map(|log| {
                    log.lines()
                        .filter_map(|l| l.split_once("wasm log").map(|(_, m)| m))
                        .map(|m| m.split_once(": ").map_or(m, |(_, m)| m).split('\t').next().unwrap_or(m).trim().to_string())
                        .collect()
                })
                .unwrap_or_default();
            let mut line = format!("{name} ({}) refused its {} configuration: {}", r.proxy, r.kind, r.error);
            if let Some(last) = said.last() {
                line.push_str(&format!("; the filter says: {last}"));
            }
            if r.kind == "ECDS" {
                line.push_str(
                    " (Envoy keeps the filter's earlier configuration; with none, it answers that filter's requests with 500, whatever the WasmPlugin's failStrategy)",
                );
            }
            line
        })
        .collect()
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
        match c.kind {
            Kind::Gateway | Kind::Sidecar => urls.push((
                format!("{} stats", c.name),
                format!(
                    "http://{}:{}/stats/prometheus",
                    c.ip,
                    super::pods::ENVOY_STATS_PORT
                ),
            )),
            Kind::ModelService => urls.push((
                format!("{} metrics", c.name),
                format!(
                    "http://{}:{}/stats/prometheus",
                    c.ip,
                    super::pods::AGENT_STATUS_PORT
                ),
            )),
            Kind::Prometheus => urls.push((
                "prometheus".into(),
                format!("http://{}:{}", c.ip, c.ports["http"]),
            )),
            Kind::Istiod => {}
        }
    }
    urls
}

/// Stops, starts or restarts one component; the new pid when it runs
/// afterwards. (`set` acts on the values, never here.)
fn apply(component: &mut Component, action: Action) -> anyhow::Result<Option<u32>> {
    component.stop(STOP_GRACE);
    if action == Action::Stop {
        return Ok(None);
    }
    component.start()?;
    component.wait_ready(READY_TIMEOUT, &AtomicBool::new(false))?;
    Ok(component.pid())
}
