//! Chart values: rendering the manifests the control plane runs on, and
//! changing them while the mesh runs (`meshctl set`), as `helm upgrade
//! --reuse-values --set` changes a release in a cluster. The chart is
//! rendered again with every value set so far plus the new ones, and the
//! control plane applies the result and pushes it to the proxies over xDS:
//! no proxy restarts.
//!
//! `meshctl set` asks the running `meshctl run` through its run directory: it
//! writes `control/values-<id>.set` (one `--set` argument per line) and waits
//! for `control/values-<id>.result` (JSON: `ok`, `error`, what changed).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use super::istio::{self, Applied, Ingress};
use super::run::Inputs;
use super::state::{self, Action, ControlRequest, State};
use crate::chart::{self, Object, Render};

/// The rendered application chart and what the local install derives from it.
pub struct Rendered {
    /// The chart's output, plus stand-in Gateways.
    pub app: String,
    pub objects: Vec<Object>,
    pub ingresses: istio::Ingresses,
    /// Istio's gateway chart, once per ingress gateway.
    pub gateways: Vec<String>,
    gateway_objects: Vec<Object>,
}

/// Renders the chart with `sets` (after pointing every WasmPlugin at the
/// local module, so an explicit `filter.url` still wins), or reads the
/// `--manifest` given instead, and Istio's gateway chart for each ingress.
pub fn render(inputs: &Inputs, sets: &[String]) -> anyhow::Result<Rendered> {
    let app = render_app(inputs, sets)?;
    let args = &inputs.args;
    let mut gateways = Vec::new();
    let mut gateway_objects = Vec::new();
    for ingress in &app.ingresses.gateways {
        let text = istio::render_gateway(&args.helm, &inputs.istio, &args.gateway_values, ingress)?;
        gateway_objects.extend(chart::parse_objects(&text)?);
        gateways.push(text);
    }
    Ok(Rendered {
        app: app.text,
        objects: app.objects,
        ingresses: app.ingresses,
        gateways,
        gateway_objects,
    })
}

/// The application's part of a render: all that `meshctl set` can change.
struct App {
    /// The chart's output, plus stand-in Gateways.
    text: String,
    objects: Vec<Object>,
    ingresses: istio::Ingresses,
}

fn render_app(inputs: &Inputs, sets: &[String]) -> anyhow::Result<App> {
    let args = &inputs.args;
    let mut text = match &args.manifest {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("read manifest {}", path.display()))?,
        None => {
            let mut all = vec![format!("filter.url=file://{}", args.wasm.display())];
            all.extend(sets.iter().cloned());
            chart::render(
                &args.helm,
                &Render {
                    chart: args.chart.clone(),
                    release: args.release.clone(),
                    sets: all,
                    ..Render::default()
                },
            )?
        }
    };
    let objects = chart::parse_objects(&text)?;
    let ingresses = istio::ingresses(&objects)?;
    for (_, doc) in &ingresses.stand_ins {
        text.push_str("\n---\n# A stand-in for a Gateway outside the chart.\n");
        text.push_str(doc);
    }
    if ingresses.gateways.is_empty() {
        bail!(
            "the chart renders no Gateway and no route bound to one: nothing would serve the gateway port"
        );
    }
    Ok(App {
        text,
        objects,
        ingresses,
    })
}

/// The files a control plane run reads, as `istiod-local` flags.
pub struct Files {
    pub istio: PathBuf,
    pub manifests: Vec<PathBuf>,
}

impl Files {
    pub fn flags(&self) -> Vec<std::ffi::OsString> {
        let mut out = vec!["--istio".into(), self.istio.clone().into_os_string()];
        for m in &self.manifests {
            out.push("--manifest".into());
            out.push(m.clone().into_os_string());
        }
        out
    }
}

impl Rendered {
    /// Writes Istio's install (for the node at `node_ip`) and the manifests.
    pub fn write(&self, inputs: &Inputs, node_ip: Ipv4Addr) -> anyhow::Result<Files> {
        let args = &inputs.args;
        let istio_yaml = istio::render_istiod(
            &args.helm,
            &inputs.istio,
            &args.istiod_values,
            node_ip,
            &args.envoy,
        )?;
        let dir = &inputs.run_dir;
        let istio = dir.join("istio-install.yaml");
        std::fs::write(&istio, istio_yaml)?;
        let mut manifests = vec![dir.join("rendered.yaml")];
        std::fs::write(&manifests[0], &self.app)?;
        for (i, text) in self.gateways.iter().enumerate() {
            let path = dir.join(format!("ingress-gateway-{i}.yaml"));
            std::fs::write(&path, text)?;
            manifests.push(path);
        }
        Ok(Files { istio, manifests })
    }

    /// The manifests as the control plane takes them.
    pub fn manifests(&self) -> Vec<String> {
        let mut out = vec![self.app.clone()];
        out.extend(self.gateways.iter().cloned());
        out
    }

    /// The ingress gateway the port-forward reaches: the one the chart's
    /// Gateway selects.
    pub fn ingress(&self) -> anyhow::Result<Ingress> {
        self.ingresses
            .gateways
            .first()
            .cloned()
            .context("no ingress gateway")
    }

    pub fn gateway_target_port(&self) -> u16 {
        istio::gateway_target_port(
            &self.gateway_objects,
            istio::gateway_server_port(&self.objects),
        )
    }

    pub fn hosts(&self) -> Vec<String> {
        let mut hosts = istio::gateway_hosts(&self.objects);
        if hosts.is_empty() {
            for (_, doc) in &self.ingresses.stand_ins {
                if let Ok(objects) = chart::parse_objects(doc) {
                    hosts.extend(istio::gateway_hosts(&objects));
                }
            }
        }
        hosts
    }

    /// What the local mesh does not do as a cluster would.
    pub fn findings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (id, _) in &self.ingresses.stand_ins {
            out.push(format!(
                "Gateway/{id}: not in the chart; a stand-in selecting `istio: ingressgateway` serves the routes bound to it"
            ));
        }
        for object in &self.objects {
            let why = match object.kind.as_str() {
                "PodDisruptionBudget" => "no evictions happen locally",
                "HorizontalPodAutoscaler" => {
                    "no autoscaler runs locally; replicas stay as rendered"
                }
                "ConfigMap" => "stored; nothing local reads it (e.g. Grafana's dashboard sidecar)",
                _ => continue,
            };
            out.push(format!("{}: {why}", object.id()));
        }
        out
    }
}

/// The values state of a running mesh.
pub struct Live<'a> {
    inputs: &'a Inputs,
    rendered: Rendered,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SetResult {
    pub ok: bool,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub applied: Option<AppliedSummary>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppliedSummary {
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub deleted: Vec<String>,
    /// Proxies that acknowledged the new configuration.
    pub synced: Vec<String>,
    /// From the request to every proxy's acknowledgement.
    pub seconds: f64,
}

impl<'a> Live<'a> {
    pub fn new(inputs: &'a Inputs, rendered: Rendered) -> Live<'a> {
        Live { inputs, rendered }
    }

    /// Takes one `meshctl set` request and writes its result.
    pub fn handle(&mut self, request: ControlRequest, state: &mut State) -> anyhow::Result<()> {
        let started = Instant::now();
        let sets: Vec<String> = std::fs::read_to_string(request.path())
            .unwrap_or_default()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        let outcome = self.apply(&sets, state);
        let result = match outcome {
            Ok(applied) => {
                println!(
                    "set {}: applied in {:.2} s ({} proxies acknowledged)",
                    sets.join(","),
                    started.elapsed().as_secs_f64(),
                    applied.synced.len()
                );
                SetResult {
                    ok: true,
                    error: None,
                    applied: Some(AppliedSummary {
                        created: applied.created,
                        updated: applied.updated,
                        deleted: applied.deleted,
                        synced: applied.synced,
                        seconds: started.elapsed().as_secs_f64(),
                    }),
                }
            }
            Err(err) => {
                eprintln!("set {}: {err:#}", sets.join(","));
                SetResult {
                    ok: false,
                    error: Some(format!("{err:#}")),
                    applied: None,
                }
            }
        };
        state::write_atomic(
            &state::result_path(request.path()),
            &serde_json::to_vec_pretty(&result)?,
        )?;
        request.done()
    }

    fn apply(&mut self, new: &[String], state: &mut State) -> anyhow::Result<Applied> {
        if self.inputs.args.manifest.is_some() {
            bail!("this mesh runs a rendered --manifest; there is no chart to set values on");
        }
        if new.is_empty() {
            bail!("no values given");
        }
        let mut sets = state.values.clone();
        sets.extend(new.iter().cloned());
        let app = render_app(self.inputs, &sets)?;
        if app.ingresses.gateways != self.rendered.ingresses.gateways {
            bail!(
                "the new values change the ingress gateway; restart the local mesh to apply them"
            );
        }
        // Istio's gateway chart renders from the ingress alone, which is
        // unchanged: the running render stands, without another helm run.
        let rendered = Rendered {
            app: app.text,
            objects: app.objects,
            ingresses: app.ingresses,
            gateways: self.rendered.gateways.clone(),
            gateway_objects: self.rendered.gateway_objects.clone(),
        };
        let applied = istio::apply(&self.inputs.control_socket, &rendered.manifests())?;
        if !applied.rejected.is_empty() {
            // Back to what every proxy accepted, as a careful operator would.
            let back = istio::apply(&self.inputs.control_socket, &self.rendered.manifests());
            let why = super::check::rejections(&applied.rejected, &state.components).join("; ");
            match back {
                Ok(_) => bail!(
                    "proxies refused the new configuration, so the previous values stay applied: {why}"
                ),
                Err(err) => bail!(
                    "proxies refused the new configuration ({why}), and restoring the previous one failed: {err:#}"
                ),
            }
        }
        for warning in &applied.warnings {
            eprintln!("Istio warns: {warning}");
        }
        std::fs::write(self.inputs.run_dir.join("rendered.yaml"), &rendered.app)?;
        // The alerting rules follow the values (a new weight, a threshold).
        if let Some(url) = state
            .component("prometheus")
            .filter(|c| c.running)
            .and_then(|c| c.url("http", ""))
            && let Err(err) = crate::alerts::reload(&self.inputs.run_dir, &rendered.objects, &url)
        {
            eprintln!("warning: {err:#}");
        }
        self.rendered = rendered;
        state.values = sets;
        state.dirty = true;
        Ok(applied)
    }
}

/// Options of `meshctl set`.
#[derive(clap::Args, Debug, Clone)]
pub struct SetArgs {
    /// Chart values, as `helm --set` takes them (commas allowed)
    #[arg(value_name = "KEY=VALUE", required = true)]
    pub values: Vec<String>,
    /// The run directory of the running mesh
    #[arg(long, default_value = crate::workspace::RUN_DIR)]
    pub run_dir: PathBuf,
    /// How long to wait for the mesh to apply the values
    #[arg(long, default_value = "60s", value_parser = crate::duration::positive)]
    pub timeout: Duration,
}

/// Hands values to the running mesh and waits until every proxy has them.
pub fn set_values(
    run_dir: &Path,
    values: &[String],
    timeout: Duration,
) -> anyhow::Result<AppliedSummary> {
    let state = State::read(run_dir)?;
    if !state.ready {
        bail!("the local mesh in {} is still starting", run_dir.display());
    }
    let id = format!(
        "values-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let request = state::request_path(run_dir, &id, Action::Set);
    let result = state::result_path(&request);
    state::write_atomic(&request, values.join("\n").as_bytes())?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(text) = std::fs::read_to_string(&result) {
            let _ = std::fs::remove_file(&result);
            let outcome: SetResult =
                serde_json::from_str(&text).context("read the mesh's answer")?;
            return match (outcome.ok, outcome.applied) {
                (true, Some(applied)) => Ok(applied),
                _ => bail!("{}", outcome.error.unwrap_or_else(|| "refused".into())),
            };
        }
        if Instant::now() > deadline {
            let _ = std::fs::remove_file(&request);
            bail!("the local mesh did not apply the values within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `meshctl set`.
pub fn set(args: SetArgs) -> anyhow::Result<ExitCode> {
    let applied = set_values(&args.run_dir, &args.values, args.timeout)?;
    let changed: Vec<_> = applied
        .created
        .iter()
        .chain(&applied.updated)
        .chain(&applied.deleted)
        .cloned()
        .collect();
    if changed.is_empty() {
        println!("No Istio resource changed.");
    } else {
        println!(
            "Applied in {:.2} s: {}; {} proxies have it.",
            applied.seconds,
            changed.join(", "),
            applied.synced.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
