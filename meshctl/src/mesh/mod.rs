//! `meshctl run`: the local mesh, derived from the Helm chart rendered with
//! the same values a cluster install would use.
//!
//! While it runs, `<run-dir>/state.json` describes every component (name,
//! pid, ports, log, URLs); see [`state::State`]. Dropping a file
//! `<run-dir>/control/<component>.<action>` (action `stop`, `start` or
//! `restart`) asks the running mesh to act on that component; the file is
//! removed once done and `state.json` is rewritten.

mod chart;
mod envoy;
mod istio;
mod plan;
mod prometheus;
mod state;
mod supervisor;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;

use plan::{Finding, MeshPlan};
use state::{ComponentState, State};
use supervisor::{Component, Spec};

/// Options of `meshctl run`.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Chart values, as `helm --set` takes them (repeatable; commas allowed)
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// The Helm chart to render
    #[arg(long, default_value = "manifests/sms-checker")]
    pub chart: PathBuf,
    /// Run this already rendered manifest (e.g. `helm template` output,
    /// edited) instead of rendering the chart; not with --set
    #[arg(long, conflicts_with = "set")]
    pub manifest: Option<PathBuf>,
    /// Release name for `helm template`
    #[arg(long, default_value = "sms-checker")]
    pub release: String,
    /// Folder for logs, generated configs, Prometheus data and state.json
    #[arg(long, default_value = ".run")]
    pub run_dir: PathBuf,
    /// Gateway port on 127.0.0.1
    #[arg(long, default_value_t = 8080)]
    pub gateway_port: u16,
    /// Prometheus port on 127.0.0.1
    #[arg(long, default_value_t = 9090)]
    pub prometheus_port: u16,
    /// First of the ports for admin endpoints, sidecars and services
    /// (10 per version); 0 lets the kernel pick free ports
    #[arg(long, default_value_t = 15100)]
    pub base_port: u16,
    /// Prometheus scrape interval
    #[arg(long, default_value = "5s")]
    pub scrape_interval: String,
    /// Helm, for `helm template`
    #[arg(long, env = "HELM_BIN", default_value = ".tools/bin/helm")]
    pub helm: PathBuf,
    /// Envoy, for the gateway and every sidecar
    #[arg(long, env = "ENVOY_BIN", default_value = ".tools/bin/envoy")]
    pub envoy: PathBuf,
    /// Prometheus; when missing the mesh runs without it
    #[arg(long, env = "PROMETHEUS_BIN", default_value = "/usr/bin/prometheus")]
    pub prometheus: PathBuf,
    /// The model-service binary, run once per enabled version
    #[arg(
        long,
        env = "MODEL_SERVICE_BIN",
        default_value = "target/release/model-service"
    )]
    pub model_service: PathBuf,
    /// The trained models the model-service loads
    #[arg(long, env = "MODELS_DIR", default_value = "model-service/models")]
    pub models_dir: PathBuf,
    /// The cohort filter module that stands in for every WasmPlugin url
    #[arg(
        long,
        env = "FILTER_WASM",
        default_value = "target/wasm32-wasip1/wasm-release/sms_checker_filter.wasm"
    )]
    pub wasm: PathBuf,
    /// Render, translate and validate the configs, print the findings, and exit
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{what} not found at {path} ({hint})")]
    Missing {
        what: &'static str,
        path: PathBuf,
        hint: &'static str,
    },
    #[error("Envoy rejects the generated {name} config ({path}):\n{output}")]
    EnvoyRejects {
        name: String,
        path: PathBuf,
        output: String,
    },
}

/// Every port the mesh uses, by role.
struct Ports {
    gateway: u16,
    gateway_admin: u16,
    prometheus: u16,
    /// Per workload: (sidecar inbound, sidecar admin, service).
    workloads: Vec<(u16, u16, u16)>,
}

/// Ports the kernel picks, held open until all are picked so none repeats.
struct PortPicker(Vec<std::net::TcpListener>);

impl PortPicker {
    fn pick(&mut self) -> anyhow::Result<u16> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("pick a free port")?;
        let port = listener.local_addr()?.port();
        self.0.push(listener);
        Ok(port)
    }
}

fn allocate_ports(args: &RunArgs, versions: usize) -> anyhow::Result<Ports> {
    let mut workloads = Vec::new();
    if args.base_port == 0 {
        let mut picker = PortPicker(Vec::new());
        for _ in 0..versions {
            workloads.push((picker.pick()?, picker.pick()?, picker.pick()?));
        }
        return Ok(Ports {
            gateway: args.gateway_port,
            gateway_admin: picker.pick()?,
            prometheus: args.prometheus_port,
            workloads,
        });
    }
    let at = |offset: usize| -> anyhow::Result<u16> {
        u16::try_from(usize::from(args.base_port) + offset)
            .context("--base-port leaves too few ports")
    };
    for i in 0..versions {
        workloads.push((at(10 + 10 * i)?, at(11 + 10 * i)?, at(12 + 10 * i)?));
    }
    Ok(Ports {
        gateway: args.gateway_port,
        gateway_admin: at(0)?,
        prometheus: args.prometheus_port,
        workloads,
    })
}

fn require(what: &'static str, path: &Path, hint: &'static str) -> Result<(), RunError> {
    if path.exists() {
        Ok(())
    } else {
        Err(RunError::Missing {
            what,
            path: path.to_path_buf(),
            hint,
        })
    }
}

fn write_json(path: &Path, value: &serde_json::Value) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
}

/// `envoy --mode validate`; `Err(output)` when Envoy refuses the config.
fn envoy_validate(envoy: &Path, config: &Path) -> anyhow::Result<Result<(), String>> {
    let output = std::process::Command::new(envoy)
        .args(["--mode", "validate", "--log-level", "error", "-c"])
        .arg(config)
        .output()
        .with_context(|| format!("run {}", envoy.display()))?;
    if output.status.success() {
        return Ok(Ok(()));
    }
    Ok(Err(format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )))
}

/// Writes a proxy's bootstrap and has Envoy validate it. A Wasm plugin whose
/// configuration the filter refuses is marked refused (its failStrategy then
/// shapes the filter chain) and reported with the filter's own message; any
/// other refusal is an error, since it means a bad translation.
fn write_validated(
    envoy: &Path,
    proxy: &str,
    path: &Path,
    plugins: &mut [plan::PluginPlan],
    build: impl Fn(&[plan::PluginPlan]) -> serde_json::Value,
) -> anyhow::Result<Vec<Finding>> {
    let mut findings = Vec::new();
    loop {
        write_json(path, &build(plugins))?;
        let Err(output) = envoy_validate(envoy, path)? else {
            return Ok(findings);
        };
        let mut refused_any = false;
        for plugin in plugins.iter_mut().filter(|p| !p.refused) {
            if !output.contains(&format!("Unable to create Wasm plugin {}", plugin.name)) {
                continue;
            }
            let prefix = format!("wasm log {}: ", plugin.name);
            let message = output
                .lines()
                .filter_map(|line| line.split_once(&prefix).map(|(_, m)| m.trim().to_string()))
                .collect::<Vec<_>>()
                .join("; ");
            plugin.refused = true;
            refused_any = true;
            findings.push(Finding::Refused {
                plugin: plugin.name.clone(),
                proxy: proxy.to_string(),
                message: if message.is_empty() {
                    "see the proxy log".into()
                } else {
                    message
                },
                fail_open: plugin.fail_open,
                reload: plugin.reload,
            });
        }
        if !refused_any {
            return Err(RunError::EnvoyRejects {
                name: proxy.to_string(),
                path: path.to_path_buf(),
                output,
            }
            .into());
        }
    }
}

fn abs(path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("resolve {}", path.display()))
}

/// Everything needed to start the mesh, with configs written to the run dir.
struct Prepared {
    plan: MeshPlan,
    specs: Vec<(Spec, ComponentState)>,
    prometheus: Option<(Spec, ComponentState)>,
    prometheus_note: Option<String>,
    urls: Vec<(String, String)>,
}

fn prepare(args: &RunArgs) -> anyhow::Result<Prepared> {
    require("envoy", &args.envoy, "run `make tools`")?;
    let wasm = abs(&args.wasm)?;
    let yaml = match &args.manifest {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("read manifest {}", path.display()))?,
        None => {
            require("helm", &args.helm, "run `make tools`")?;
            chart::render(&args.helm, &args.chart, &args.release, &args.set)?
        }
    };
    let objects = chart::parse_objects(&yaml)?;
    let mut plan = plan::translate(&objects, &wasm.display().to_string())?;
    let ports = allocate_ports(args, plan.workloads.len())?;

    let run_dir = abs(&args.run_dir)?;
    std::fs::create_dir_all(run_dir.join("control"))
        .with_context(|| format!("create {}", run_dir.display()))?;
    std::fs::write(run_dir.join("rendered.yaml"), &yaml)?;
    let log = |name: &str| run_dir.join(format!("{name}.log"));

    let mut specs = Vec::new();
    let sidecar_ports: Vec<u16> = ports.workloads.iter().map(|p| p.0).collect();
    let models_dir = abs(&args.models_dir)?;
    let model_service = abs(&args.model_service)?;
    let mut findings = Vec::new();
    for (workload, &(inbound, admin, service)) in plan.workloads.iter_mut().zip(&ports.workloads) {
        let version = &workload.version.clone();
        let name = format!("model-{version}");
        let mut env = workload.env.clone();
        env.retain(|(k, _)| {
            !["SERVER_PORT", "SERVER_HOST", "MODELS_DIR", "MODEL_VERSION"].contains(&k.as_str())
        });
        env.extend([
            ("MODEL_VERSION".to_string(), workload.model_version.clone()),
            ("SERVER_PORT".to_string(), service.to_string()),
            ("SERVER_HOST".to_string(), "127.0.0.1".to_string()),
            ("MODELS_DIR".to_string(), models_dir.display().to_string()),
        ]);
        let spec = Spec {
            name: name.clone(),
            program: model_service.clone(),
            args: vec!["serve".into()],
            env,
            log: log(&name),
            ready_url: format!("http://127.0.0.1:{service}/ready"),
        };
        let state = ComponentState::new(&spec, "model-service", Some(version), [("http", service)]);
        specs.push((spec, state));

        let sidecar = format!("sidecar-{version}");
        let config = run_dir.join(format!("{sidecar}.json"));
        let access_log = run_dir.join(format!("{sidecar}.access.log"));
        let mut plugins = std::mem::take(&mut workload.plugins);
        let proxy_ports = envoy::ProxyPorts {
            listen: inbound,
            admin,
            access_log: &access_log,
        };
        let refused = write_validated(&args.envoy, &sidecar, &config, &mut plugins, |plugins| {
            envoy::sidecar_bootstrap(workload, plugins, &proxy_ports, service, &wasm)
        })?;
        workload.plugins = plugins;
        findings.extend(refused);
        let spec = envoy_spec(args, &sidecar, &config, admin, log(&sidecar))?;
        let state = ComponentState::new(
            &spec,
            "sidecar",
            Some(version),
            [("http", inbound), ("admin", admin)],
        );
        specs.push((spec, state));
    }

    let config = run_dir.join("gateway.json");
    let access_log = run_dir.join("gateway.access.log");
    let mut plugins = std::mem::take(&mut plan.gateway.plugins);
    let proxy_ports = envoy::ProxyPorts {
        listen: ports.gateway,
        admin: ports.gateway_admin,
        access_log: &access_log,
    };
    let refused = write_validated(&args.envoy, "gateway", &config, &mut plugins, |plugins| {
        envoy::gateway_bootstrap(&plan, plugins, &proxy_ports, &sidecar_ports, &wasm)
    })?;
    plan.gateway.plugins = plugins;
    findings.extend(refused);
    plan.findings.extend(findings);
    let spec = envoy_spec(
        args,
        "gateway",
        &config,
        ports.gateway_admin,
        log("gateway"),
    )?;
    let state = ComponentState::new(
        &spec,
        "gateway",
        None,
        [("http", ports.gateway), ("admin", ports.gateway_admin)],
    );
    specs.push((spec, state));

    let mut urls = Vec::new();
    let host = plan
        .gateway
        .virtual_hosts
        .iter()
        .flat_map(|v| &v.domains)
        .find(|d| !d.contains('*') && !d.starts_with("localhost") && !d.starts_with("127.0.0.1"))
        .cloned();
    urls.push((
        "app".into(),
        format!("http://localhost:{}/sms", ports.gateway),
    ));
    if let Some(host) = host {
        urls.push((
            "app (by host)".into(),
            format!(
                "curl -H 'Host: {host}' http://127.0.0.1:{}/sms",
                ports.gateway
            ),
        ));
    }
    urls.push((
        "gateway stats".into(),
        format!("http://127.0.0.1:{}/stats/prometheus", ports.gateway_admin),
    ));
    for (workload, (_, admin, service)) in plan.workloads.iter().zip(&ports.workloads) {
        let v = &workload.version;
        urls.push((
            format!("sidecar {v} stats"),
            format!("http://127.0.0.1:{admin}/stats/prometheus"),
        ));
        urls.push((
            format!("model {v} metrics"),
            format!("http://127.0.0.1:{service}/metrics"),
        ));
    }

    // Prometheus is optional: without it the mesh still runs.
    let (prometheus, prometheus_note) = if args.prometheus.exists() {
        let data = run_dir.join("prometheus-data");
        // Counts start from zero on every run.
        let _ = std::fs::remove_dir_all(&data);
        let mut targets = vec![prometheus::Target::envoy(
            "gateway",
            None,
            ports.gateway_admin,
        )];
        for (workload, (_, admin, service)) in plan.workloads.iter().zip(&ports.workloads) {
            targets.push(prometheus::Target::envoy(
                "sidecar",
                Some(&workload.version),
                *admin,
            ));
            targets.push(prometheus::Target::service(&workload.version, *service));
        }
        let config_path = run_dir.join("prometheus.yml");
        std::fs::write(
            &config_path,
            prometheus::config(&args.scrape_interval, &targets)?,
        )?;
        let name = "prometheus";
        let spec = Spec {
            name: name.into(),
            program: args.prometheus.clone(),
            args: vec![
                format!("--config.file={}", config_path.display()),
                format!("--storage.tsdb.path={}", data.display()),
                format!("--web.listen-address=127.0.0.1:{}", ports.prometheus),
                "--web.enable-lifecycle".into(),
            ],
            env: Vec::new(),
            log: log(name),
            ready_url: format!("http://127.0.0.1:{}/-/ready", ports.prometheus),
        };
        urls.push((
            "prometheus".into(),
            format!("http://127.0.0.1:{}", ports.prometheus),
        ));
        let state = ComponentState::new(&spec, "prometheus", None, [("http", ports.prometheus)]);
        (Some((spec, state)), None)
    } else {
        (
            None,
            Some(format!(
                "Prometheus not found at {} (install Debian's `prometheus`, e.g. `make tools`); running without it",
                args.prometheus.display()
            )),
        )
    };
    Ok(Prepared {
        plan,
        specs,
        prometheus,
        prometheus_note,
        urls,
    })
}

fn envoy_spec(
    args: &RunArgs,
    name: &str,
    config: &Path,
    admin: u16,
    log: PathBuf,
) -> anyhow::Result<Spec> {
    Ok(Spec {
        name: name.to_string(),
        program: abs(&args.envoy)?,
        args: vec![
            "-c".into(),
            config.display().to_string(),
            "--log-level".into(),
            "info".into(),
            // One worker per proxy: the whole mesh shares a small machine.
            "--concurrency".into(),
            "1".into(),
            // Several Envoys on one host: no shared hot-restart memory.
            "--disable-hot-restart".into(),
        ],
        env: Vec::new(),
        log,
        ready_url: format!("http://127.0.0.1:{admin}/ready"),
    })
}

fn print_findings(findings: &[Finding]) {
    if findings.is_empty() {
        println!("The local mesh reproduces everything the chart renders.");
        return;
    }
    println!("Not reproduced, or reproduced differently, by the local mesh:");
    for line in plan::grouped(findings) {
        println!("  - {line}");
    }
    // A refused plugin configuration changes what users see: say it last and loudly.
    for finding in findings
        .iter()
        .filter(|f| matches!(f, Finding::Refused { .. }))
    {
        eprintln!("warning: {finding}");
    }
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let prepared = prepare(&args)?;
    print_findings(&prepared.plan.findings);
    if args.check {
        println!("Configs are valid (written to {}).", args.run_dir.display());
        return Ok(ExitCode::SUCCESS);
    }
    require(
        "model-service",
        &args.model_service,
        "run `make run`, which builds it",
    )?;
    require("the filter module", &args.wasm, "run `make wasm`")?;

    let stop = Arc::new(AtomicBool::new(false));
    for signal in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).context("install signal handler")?;
    }

    let run_dir = abs(&args.run_dir)?;
    // Left over from a run that was killed: not this run's state or requests.
    for request in state::control_requests(&run_dir)? {
        request.done()?;
    }
    let mut state = State::new(&run_dir, prepared.urls.clone(), &prepared.plan.findings);
    let mut components: Vec<Component> = Vec::new();
    let mut pending = prepared.specs;
    pending.extend(prepared.prometheus);
    // In dependency order, each phase started at once: services, sidecars,
    // gateway, Prometheus.
    for kind in ["model-service", "sidecar", "gateway", "prometheus"] {
        let (phase, rest): (Vec<_>, Vec<_>) =
            pending.into_iter().partition(|(_, s)| s.kind == kind);
        pending = rest;
        let first = components.len();
        for (spec, mut component_state) in phase {
            supervisor::fresh_log(&spec.log)?;
            let mut component = Component::new(spec);
            component.start()?;
            component_state.pid = component.pid();
            components.push(component);
            state.components.push(component_state);
        }
        for (component, component_state) in components[first..]
            .iter_mut()
            .zip(&mut state.components[first..])
        {
            if let Err(err) = component.wait_ready(Duration::from_secs(60), &stop) {
                if component_state.kind != "prometheus" {
                    return Err(err.into());
                }
                eprintln!("warning: {err}; running without Prometheus");
                component_state.running = false;
            }
        }
        state.write()?;
        if stop.load(Ordering::Relaxed) {
            break;
        }
    }
    if stop.load(Ordering::Relaxed) {
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(note) = &prepared.prometheus_note {
        eprintln!("warning: {note}");
    }
    println!(
        "Local mesh is up (logs and configs in {}):",
        run_dir.display()
    );
    for (what, url) in &prepared.urls {
        println!("  {what:<18} {url}");
    }
    println!("Ctrl-C stops everything.");
    // Ready only once the URLs are printed: readers of state.json may read them.
    state.ready = true;
    state.write()?;

    while !stop.load(Ordering::Relaxed) {
        for (component, component_state) in components.iter_mut().zip(state.components.iter_mut()) {
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
        for request in state::control_requests(&run_dir)? {
            let position = components
                .iter()
                .position(|c| c.spec.name == request.component);
            let outcome = match position {
                None => Err(anyhow::anyhow!("no component named {}", request.component)),
                Some(i) => apply(&mut components[i], &request.action).map(|pid| {
                    state.components[i].pid = pid;
                    state.components[i].running = pid.is_some();
                    state.components[i].restarts += u32::from(request.action != "stop");
                }),
            };
            match outcome {
                Ok(()) => println!("{} {}: done", request.action, request.component),
                Err(err) => eprintln!("{} {}: {err:#}", request.action, request.component),
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
    // Front to back: the gateway and Prometheus first, services last.
    while let Some(mut component) = components.pop() {
        component.stop(Duration::from_secs(5));
    }
    drop(state);
    println!("Stopped.");
    Ok(ExitCode::SUCCESS)
}

/// Acts on one component; the new pid when it runs afterwards.
fn apply(component: &mut Component, action: &str) -> anyhow::Result<Option<u32>> {
    match action {
        "stop" => {
            component.stop(Duration::from_secs(5));
            Ok(None)
        }
        "start" | "restart" => {
            component.stop(Duration::from_secs(5));
            component.start()?;
            component.wait_ready(Duration::from_secs(60), &AtomicBool::new(false))?;
            Ok(component.pid())
        }
        other => anyhow::bail!("unknown action {other} (stop, start, restart)"),
    }
}
