//! Translating the rendered chart into what the local mesh runs, the way
//! istiod would translate it into Envoy configuration.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::chart::Object;
use super::istio::{self, unknown_fields};

/// Namespace used for names when the chart sets none (as `helm template`
/// renders without `--namespace`).
const NAMESPACE: &str = "default";
/// Istio's root namespace, where the ingress gateway runs.
const ROOT_NAMESPACE: &str = "istio-system";
const GATEWAY_NAMESPACE: &str = ROOT_NAMESPACE;

/// Something in the rendered chart that the local mesh does not reproduce,
/// or reproduces differently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// A whole object the local mesh has no counterpart for.
    NotReproduced { object: String, why: String },
    /// A field the local mesh knows but cannot reproduce.
    Unsupported {
        object: String,
        field: String,
        why: String,
    },
    /// A field the local mesh does not know at all.
    UnknownField { object: String, field: String },
    /// A deliberate local substitution (e.g. the Wasm module URL).
    Substituted { object: String, what: String },
    /// The filter refused a plugin's configuration; its failStrategy decided.
    Refused {
        plugin: String,
        proxy: String,
        message: String,
        fail_open: bool,
        reload: bool,
    },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::NotReproduced { object, why } => write!(f, "{object}: not reproduced ({why})"),
            Finding::Unsupported { object, field, why } => {
                write!(f, "{object}: {field} not reproduced ({why})")
            }
            Finding::UnknownField { object, field } => {
                write!(f, "{object}: unknown field {field} ignored")
            }
            Finding::Substituted { object, what } => write!(f, "{object}: {what}"),
            Finding::Refused {
                plugin,
                proxy,
                message,
                fail_open,
                reload,
            } => {
                let outcome = match (fail_open, reload) {
                    (true, _) => "failStrategy FAIL_OPEN: the proxy runs without this filter",
                    (false, true) => {
                        "failStrategy FAIL_RELOAD: a refused configuration cannot be reloaded, the proxy answers 503"
                    }
                    (false, false) => "failStrategy FAIL_CLOSE: the proxy answers 503",
                };
                write!(
                    f,
                    "WasmPlugin {plugin} on {proxy}: configuration refused: {message} ({outcome})"
                )
            }
        }
    }
}

/// Findings as lines, the same finding on several objects of one kind
/// merged into one line (`Deployment/a, b, c: ...`).
pub fn grouped(findings: &[Finding]) -> Vec<String> {
    /// (kind, what) shared by the names merged into one line; `None` for a
    /// finding that names no `Kind/name` object.
    type Key = Option<(String, String)>;
    let mut lines: Vec<(Key, Vec<String>)> = Vec::new();
    for finding in findings {
        let text = finding.to_string();
        let key = text.split_once(": ").and_then(|(object, rest)| {
            let (kind, name) = object.split_once('/')?;
            Some(((kind.to_string(), rest.to_string()), name.to_string()))
        });
        match key {
            Some((key, name)) => match lines.iter_mut().find(|(k, _)| k.as_ref() == Some(&key)) {
                Some((_, names)) => names.push(name),
                None => lines.push((Some(key), vec![name])),
            },
            None => lines.push((None, vec![text])),
        }
    }
    lines
        .into_iter()
        .map(|(key, names)| match key {
            Some((kind, rest)) => format!("{kind}/{}: {rest}", names.join(", ")),
            None => names.join(""),
        })
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{object}: {source}")]
    Shape {
        object: String,
        source: serde_json::Error,
    },
    #[error("{object}: {field}: {why}")]
    Invalid {
        object: String,
        field: String,
        why: String,
    },
    #[error("the chart renders no Istio Gateway, so there is nothing to serve on the gateway port")]
    NoGateway,
    #[error("the chart renders no VirtualService bound to Gateway {0}")]
    NoRoutes(String),
}

/// What the local mesh runs, derived from the chart.
#[derive(Debug, Default)]
pub struct MeshPlan {
    pub gateway: GatewayPlan,
    pub workloads: Vec<Workload>,
    pub clusters: Vec<ClusterPlan>,
    pub findings: Vec<Finding>,
}

#[derive(Debug, Default)]
pub struct GatewayPlan {
    pub name: String,
    pub stats: ProxyStats,
    pub labels: BTreeMap<String, String>,
    pub virtual_hosts: Vec<VirtualHostPlan>,
    pub plugins: Vec<PluginPlan>,
}

#[derive(Debug, Default)]
pub struct VirtualHostPlan {
    pub name: String,
    pub domains: Vec<String>,
    pub routes: Vec<RoutePlan>,
}

/// One model-service Deployment, run as one process behind one sidecar.
#[derive(Debug, Clone)]
pub struct Workload {
    pub deployment: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub version: String,
    pub model_version: String,
    pub env: Vec<(String, String)>,
    pub stats: ProxyStats,
    pub plugins: Vec<PluginPlan>,
}

impl Workload {
    pub fn app(&self) -> &str {
        self.labels
            .get("app")
            .map_or("model-service", String::as_str)
    }
}

/// A proxy's stats settings, from the pod's Istio annotations.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProxyStats {
    /// `extraStatTags`: labels extracted from Istio's tag encoding.
    pub tags: Vec<String>,
    /// `proxyStatsMatcher`; `None` keeps every stat.
    pub inclusion: Option<StatsInclusion>,
    /// `sidecar.istio.io/statsHistogramBuckets`: stat prefix and bucket bounds.
    pub histogram_buckets: Vec<(String, Vec<f64>)>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatsInclusion {
    pub regexps: Vec<String>,
    pub prefixes: Vec<String>,
    pub suffixes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PluginPlan {
    pub name: String,
    pub root_id: String,
    /// The `pluginConfig` as JSON text, handed to the filter verbatim.
    pub configuration: String,
    pub fail_open: bool,
    /// FAIL_RELOAD: a VM that fails at run time is reloaded (a configuration
    /// refused at load time still fails closed).
    pub reload: bool,
    /// Runs before the fault filter (Istio's AUTHN/AUTHZ phases) or after it.
    pub early: bool,
    pub priority: i64,
    /// Set when Envoy refused the plugin's configuration at load time.
    pub refused: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClusterPlan {
    pub name: String,
    /// Indices into `MeshPlan::workloads`.
    pub workloads: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RoutePlan {
    pub name: String,
    pub path: PathMatch,
    pub headers: Vec<HeaderMatch>,
    /// Cluster names and weights; one entry means a plain cluster route.
    pub destinations: Vec<(String, u32)>,
    /// Cluster names and the percentage of requests copied there.
    pub mirrors: Vec<(String, f64)>,
    pub timeout: Duration,
    pub retries: Option<RetryPlan>,
    pub fault: Option<FaultPlan>,
    pub request_headers: HeaderEdits,
    pub response_headers: HeaderEdits,
}

/// Istio's `set` (overwrite), `add` (append) and `remove` on headers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HeaderEdits {
    pub set: Vec<(String, String)>,
    pub add: Vec<(String, String)>,
    pub remove: Vec<String>,
}

fn header_edits(
    t: &mut Translator,
    object: &Object,
    field: &str,
    ops: Option<&istio::HeaderOperations>,
) -> HeaderEdits {
    let Some(ops) = ops else {
        return HeaderEdits::default();
    };
    t.unknown(object, field, &ops.extra);
    HeaderEdits {
        set: ops.set.clone().into_iter().collect(),
        add: ops.add.clone().into_iter().collect(),
        remove: ops.remove.clone(),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum PathMatch {
    Prefix(String, bool),
    Exact(String, bool),
    Regex(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct HeaderMatch {
    pub name: String,
    pub matcher: StringMatcher,
    pub invert: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StringMatcher {
    Exact(String),
    Prefix(String),
    Regex(String),
    Present,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPlan {
    pub attempts: u32,
    pub retry_on: String,
    pub per_try_timeout: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FaultPlan {
    pub delay: Option<(Duration, f64)>,
    pub abort: Option<(u32, f64)>,
}

/// Parses an Istio/protobuf duration such as `5s`, `250ms`, `1m`, `1.5s`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit {
        "h" => number * 3600.0,
        "m" => number * 60.0,
        "s" => number,
        "ms" => number / 1e3,
        "us" | "µs" => number / 1e6,
        "ns" => number / 1e9,
        _ => return None,
    };
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds))
}

struct Translator {
    findings: Vec<Finding>,
}

impl Translator {
    fn spec<T: DeserializeOwned>(&self, object: &Object) -> Result<T, PlanError> {
        serde_json::from_value(object.spec()).map_err(|source| PlanError::Shape {
            object: object.id(),
            source,
        })
    }

    fn unknown(&mut self, object: &Object, prefix: &str, extra: &istio::Extra) {
        for field in unknown_fields(prefix, extra) {
            self.findings.push(Finding::UnknownField {
                object: object.id(),
                field,
            });
        }
    }

    fn unsupported(&mut self, object: &Object, field: impl Into<String>, why: impl Into<String>) {
        self.findings.push(Finding::Unsupported {
            object: object.id(),
            field: field.into(),
            why: why.into(),
        });
    }

    fn skip_some<T>(&mut self, object: &Object, field: &str, value: &Option<T>, why: &str) {
        if value.is_some() {
            self.unsupported(object, field, why);
        }
    }
}

/// Fully qualified service name, as istiod names clusters.
fn fqdn(host: &str) -> String {
    if host.contains('.') {
        host.to_string()
    } else {
        format!("{host}.{NAMESPACE}.svc.cluster.local")
    }
}

fn short_host(host: &str) -> &str {
    host.split('.').next().unwrap_or(host)
}

fn labels_match(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector
        .iter()
        .all(|(key, value)| labels.get(key) == Some(value))
}

fn string_labels(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|map| {
            map.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().map_or_else(|| v.to_string(), str::to_string),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Translates the rendered chart into a plan. `wasm_path` is the local build
/// of the filter that stands in for every WasmPlugin `url`.
pub fn translate(objects: &[Object], wasm_path: &str) -> Result<MeshPlan, PlanError> {
    let mut t = Translator {
        findings: Vec::new(),
    };
    let by_kind = |kind: &'static str| objects.iter().filter(move |o| o.kind == kind);

    let mut plan = MeshPlan::default();
    let mut services: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for object in objects {
        match object.kind.as_str() {
            "Gateway" | "VirtualService" | "DestinationRule" | "WasmPlugin" => {}
            "Deployment" => plan.workloads.extend(workload(&mut t, object)?),
            "Service" => {
                let spec = object.spec();
                services.insert(object.name.clone(), string_labels(spec.get("selector")));
                if spec
                    .get("type")
                    .and_then(Value::as_str)
                    .is_some_and(|ty| ty != "ClusterIP")
                {
                    t.unsupported(
                        object,
                        "spec.type",
                        "the local mesh reaches services on 127.0.0.1 only",
                    );
                }
            }
            "ServiceAccount" => t.findings.push(Finding::NotReproduced {
                object: object.id(),
                why: "local processes run as the current user".into(),
            }),
            "HorizontalPodAutoscaler" => t.findings.push(Finding::NotReproduced {
                object: object.id(),
                why: "one process per version, no autoscaling".into(),
            }),
            "PodDisruptionBudget" => t.findings.push(Finding::NotReproduced {
                object: object.id(),
                why: "no evictions locally".into(),
            }),
            "PodMonitor" | "ServiceMonitor" => t.findings.push(Finding::Substituted {
                object: object.id(),
                what: "the local Prometheus scrapes every proxy and service directly".into(),
            }),
            other => t.findings.push(Finding::NotReproduced {
                object: object.id(),
                why: format!("no local counterpart for kind {other}"),
            }),
        }
    }

    // The gateway: the first Gateway object; others are reported. Without
    // one, the chart attaches its routes to a Gateway of the cluster's: the
    // local mesh stands in for it, as Istio's default ingress gateway.
    let gateway_hosts = match by_kind("Gateway").next() {
        Some(gateway_object) => {
            for extra in by_kind("Gateway").skip(1) {
                t.findings.push(Finding::NotReproduced {
                    object: extra.id(),
                    why: format!("the local mesh runs one gateway ({})", gateway_object.id()),
                });
            }
            gateway(&mut t, gateway_object, &mut plan.gateway)?
        }
        None => {
            let external = objects
                .iter()
                .filter(|o| o.kind == "VirtualService")
                .filter_map(|o| o.spec().get("gateways").and_then(Value::as_array).cloned())
                .flatten()
                .filter_map(|g| g.as_str().map(str::to_string))
                .find(|g| g != "mesh")
                .ok_or(PlanError::NoGateway)?;
            plan.gateway.name = external.rsplit('/').next().unwrap_or(&external).to_string();
            plan.gateway.labels =
                BTreeMap::from([("istio".to_string(), "ingressgateway".to_string())]);
            t.findings.push(Finding::Substituted {
                object: format!("Gateway/{}", plan.gateway.name),
                what: format!(
                    "{external} is not in the chart; the local gateway stands in for it (labels istio: ingressgateway, every host)"
                ),
            });
            vec!["*".to_string()]
        }
    };

    // DestinationRules: subsets become clusters.
    let mut subsets: BTreeMap<(String, String), BTreeMap<String, String>> = BTreeMap::new();
    for object in by_kind("DestinationRule") {
        let rule: istio::DestinationRuleSpec = t.spec(object)?;
        t.unknown(object, "spec", &rule.extra);
        t.skip_some(
            object,
            "spec.trafficPolicy",
            &rule.traffic_policy,
            "load balancing and connection pool settings are Envoy defaults locally",
        );
        t.skip_some(
            object,
            "spec.workloadSelector",
            &rule.workload_selector,
            "applies to every local proxy",
        );
        for (i, subset) in rule.subsets.iter().enumerate() {
            let prefix = format!("spec.subsets[{i}]");
            t.unknown(object, &prefix, &subset.extra);
            t.skip_some(
                object,
                &format!("{prefix}.trafficPolicy"),
                &subset.traffic_policy,
                "Envoy defaults locally",
            );
            subsets.insert(
                (fqdn(&rule.host), subset.name.clone()),
                subset.labels.clone(),
            );
        }
    }

    let cluster_for = |t: &mut Translator,
                       object: &Object,
                       field: &str,
                       destination: &istio::Destination,
                       plan: &mut MeshPlan|
     -> Result<String, PlanError> {
        t.unknown(object, field, &destination.extra);
        let host = fqdn(&destination.host);
        let port = destination
            .port
            .as_ref()
            .and_then(|p| p.number)
            .unwrap_or(80);
        let mut selector = services
            .get(short_host(&destination.host))
            .cloned()
            .unwrap_or_default();
        let subset = destination.subset.clone().unwrap_or_default();
        if !subset.is_empty() {
            let labels = subsets
                .get(&(host.clone(), subset.clone()))
                .ok_or_else(|| PlanError::Invalid {
                    object: object.id(),
                    field: format!("{field}.subset"),
                    why: format!("no DestinationRule for {host} defines subset {subset}"),
                })?;
            selector.extend(labels.clone());
        }
        let name = format!("outbound|{port}|{subset}|{host}");
        if !plan.clusters.iter().any(|c| c.name == name) {
            let workloads: Vec<usize> = plan
                .workloads
                .iter()
                .enumerate()
                .filter(|(_, w)| labels_match(&selector, &w.labels))
                .map(|(i, _)| i)
                .collect();
            if workloads.is_empty() {
                t.findings.push(Finding::Unsupported {
                    object: object.id(),
                    field: field.to_string(),
                    why: format!("no rendered Deployment matches {name}; requests there get 503 as in a cluster"),
                });
            }
            plan.clusters.push(ClusterPlan {
                name: name.clone(),
                workloads,
            });
        }
        Ok(name)
    };

    // VirtualServices bound to the gateway become its virtual hosts.
    for object in by_kind("VirtualService") {
        let vs: istio::VirtualServiceSpec = t.spec(object)?;
        t.unknown(object, "spec", &vs.extra);
        t.skip_some(
            object,
            "spec.tcp",
            &vs.tcp,
            "only HTTP routes are served locally",
        );
        t.skip_some(
            object,
            "spec.tls",
            &vs.tls,
            "only HTTP routes are served locally",
        );
        let bound = vs
            .gateways
            .iter()
            .any(|g| g.rsplit('/').next() == Some(plan.gateway.name.as_str()));
        if vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh") {
            t.unsupported(
                object,
                "spec.gateways",
                "mesh-internal routing: the local services do not call each other",
            );
        }
        if !bound {
            continue;
        }
        let mut vhost = VirtualHostPlan {
            name: object.name.clone(),
            domains: Vec::new(),
            routes: Vec::new(),
        };
        // Like istiod, the gateway serves only the hosts its servers list.
        for host in vs
            .hosts
            .iter()
            .filter(|h| gateway_hosts.iter().any(|g| g == "*" || g == *h))
        {
            vhost.domains.push(host.clone());
            if host != "*" {
                vhost.domains.push(format!("{host}:*"));
            }
        }
        for (i, route) in vs.http.iter().enumerate() {
            let prefix = format!("spec.http[{i}]");
            vhost.routes.extend(http_route(
                &mut t,
                object,
                &prefix,
                route,
                &mut |t, field, d| cluster_for(t, object, field, d, &mut plan),
            )?);
        }
        plan.gateway.virtual_hosts.push(vhost);
    }
    if plan.gateway.virtual_hosts.is_empty() {
        return Err(PlanError::NoRoutes(plan.gateway.name.clone()));
    }
    // Answer for localhost too, like `kubectl port-forward` to the gateway would.
    for local in ["localhost", "localhost:*", "127.0.0.1", "127.0.0.1:*"] {
        if !plan
            .gateway
            .virtual_hosts
            .iter()
            .any(|v| v.domains.iter().any(|d| d == local || d == "*"))
        {
            plan.gateway.virtual_hosts[0]
                .domains
                .push(local.to_string());
        }
    }

    // The ingress gateway is not in the chart: in a cluster its stat tags
    // and buckets come from meshConfig.defaultConfig. Locally it takes those
    // the chart gives its sidecars, so the gateway's metrics carry labels too.
    for workload in &plan.workloads {
        for tag in &workload.stats.tags {
            if !plan.gateway.stats.tags.contains(tag) {
                plan.gateway.stats.tags.push(tag.clone());
            }
        }
        if plan.gateway.stats.histogram_buckets.is_empty() {
            plan.gateway.stats.histogram_buckets = workload.stats.histogram_buckets.clone();
        }
    }
    if !plan.gateway.stats.tags.is_empty() {
        t.findings.push(Finding::Substituted {
            object: format!("Gateway/{}", plan.gateway.name),
            what: "the local gateway uses the sidecars' extraStatTags and histogram buckets (in a cluster: meshConfig.defaultConfig)".into(),
        });
    }

    // WasmPlugins: by selector, on the gateway or on the sidecars.
    for object in by_kind("WasmPlugin") {
        let spec: istio::WasmPluginSpec = t.spec(object)?;
        let plugin = wasm_plugin(&mut t, object, &spec, wasm_path)?;
        let selector = spec.selector.clone().unwrap_or_default();
        // Istio applies a WasmPlugin to proxies of its own namespace, or to
        // all namespaces when it lives in the root namespace.
        let reaches = |namespace: &str| {
            object.namespace() == namespace || object.namespace() == ROOT_NAMESPACE
        };
        let mut applied = false;
        let mut wrong_namespace = Vec::new();
        if !selector.match_labels.is_empty()
            && labels_match(&selector.match_labels, &plan.gateway.labels)
        {
            if reaches(GATEWAY_NAMESPACE) {
                plan.gateway.plugins.push(plugin.clone());
                applied = true;
            } else {
                wrong_namespace.push(format!(
                    "the ingress gateway (namespace {GATEWAY_NAMESPACE})"
                ));
            }
        }
        for workload in &mut plan.workloads {
            if labels_match(&selector.match_labels, &workload.labels) {
                if reaches(&workload.namespace) {
                    workload.plugins.push(plugin.clone());
                    applied = true;
                } else {
                    wrong_namespace.push(format!(
                        "{} (namespace {})",
                        workload.deployment, workload.namespace
                    ));
                }
            }
        }
        for proxy in wrong_namespace {
            t.findings.push(Finding::NotReproduced {
                object: object.id(),
                why: format!(
                    "its selector matches {proxy}, but Istio applies it only in namespace {}; left out as in a cluster",
                    object.namespace()
                ),
            });
        }
        if !applied {
            t.findings.push(Finding::NotReproduced {
                object: object.id(),
                why: "it applies to neither the gateway nor a rendered Deployment".into(),
            });
        }
    }
    plan.gateway
        .plugins
        .sort_by_key(|p| std::cmp::Reverse(p.priority));
    for workload in &mut plan.workloads {
        workload
            .plugins
            .sort_by_key(|p| std::cmp::Reverse(p.priority));
    }

    plan.findings = t.findings;
    Ok(plan)
}

/// The Gateway object: its hosts, and name and selector for the plan.
fn gateway(
    t: &mut Translator,
    gateway_object: &Object,
    plan: &mut GatewayPlan,
) -> Result<Vec<String>, PlanError> {
    let gateway: istio::GatewaySpec = t.spec(gateway_object)?;
    t.unknown(gateway_object, "spec", &gateway.extra);
    let mut gateway_hosts = Vec::new();
    for (i, server) in gateway.servers.iter().enumerate() {
        let prefix = format!("spec.servers[{i}]");
        t.unknown(gateway_object, &prefix, &server.extra);
        t.skip_some(
            gateway_object,
            &format!("{prefix}.tls"),
            &server.tls,
            "the local gateway serves plain HTTP",
        );
        if let Some(port) = &server.port {
            t.unknown(gateway_object, &format!("{prefix}.port"), &port.extra);
            let protocol = port
                .protocol
                .as_deref()
                .unwrap_or("HTTP")
                .to_ascii_uppercase();
            if protocol != "HTTP" && protocol != "HTTP2" {
                t.unsupported(
                    gateway_object,
                    format!("{prefix}.port.protocol"),
                    format!("{protocol} is not served locally"),
                );
            }
            if let Some(number) = port.number {
                t.findings.push(Finding::Substituted {
                    object: gateway_object.id(),
                    what: format!("server port {number} is served on the local gateway port"),
                });
            }
        }
        gateway_hosts.extend(
            server
                .hosts
                .iter()
                .map(|h| h.rsplit('/').next().unwrap_or(h).to_string()),
        );
    }
    plan.name = gateway_object.name.clone();
    plan.labels = gateway.selector.clone();
    Ok(gateway_hosts)
}

fn workload(t: &mut Translator, object: &Object) -> Result<Option<Workload>, PlanError> {
    let spec = object.spec();
    let labels = string_labels(spec.pointer("/template/metadata/labels"));
    let Some(version) = labels.get("version").cloned() else {
        t.findings.push(Finding::NotReproduced {
            object: object.id(),
            why: "its pods carry no `version` label, so no local model version runs for it".into(),
        });
        return Ok(None);
    };
    if let Some(replicas) = spec
        .get("replicas")
        .and_then(Value::as_u64)
        .filter(|r| *r != 1)
    {
        t.unsupported(
            object,
            "spec.replicas",
            format!("{replicas} replicas run as one local process"),
        );
    }
    for key in spec.as_object().into_iter().flat_map(|m| m.keys()) {
        if !["replicas", "selector", "template"].contains(&key.as_str()) {
            t.unsupported(
                object,
                format!("spec.{key}"),
                "rollout settings have no local effect",
            );
        }
    }
    let template_metadata = spec
        .pointer("/template/metadata")
        .and_then(Value::as_object);
    for key in template_metadata.into_iter().flat_map(|m| m.keys()) {
        if !["labels", "annotations"].contains(&key.as_str()) {
            t.unknown(
                object,
                "spec.template.metadata",
                &BTreeMap::from([(key.clone(), Value::Null)]),
            );
        }
    }
    let annotations = spec
        .pointer("/template/metadata/annotations")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut stats = ProxyStats::default();
    for (key, value) in &annotations {
        match key.as_str() {
            "proxy.istio.io/config" => {
                let text = value.as_str().unwrap_or_default();
                let config: istio::ProxyConfig =
                    serde_norway::from_str(text).map_err(|err| PlanError::Invalid {
                        object: object.id(),
                        field: "proxy.istio.io/config".into(),
                        why: err.to_string(),
                    })?;
                for field in unknown_fields("proxy.istio.io/config", &config.extra) {
                    t.unsupported(object, field, "only extraStatTags is reproduced");
                }
                stats.tags = config.extra_stat_tags;
                if let Some(matcher) = config.proxy_stats_matcher {
                    for field in
                        unknown_fields("proxy.istio.io/config.proxyStatsMatcher", &matcher.extra)
                    {
                        t.unsupported(object, field, "only the inclusion lists are reproduced");
                    }
                    stats.inclusion = Some(StatsInclusion {
                        regexps: matcher.inclusion_regexps,
                        prefixes: matcher.inclusion_prefixes,
                        suffixes: matcher.inclusion_suffixes,
                    });
                }
            }
            "sidecar.istio.io/statsHistogramBuckets" => {
                let text = value.as_str().unwrap_or_default();
                let buckets: BTreeMap<String, Vec<f64>> =
                    serde_json::from_str(text).map_err(|err| PlanError::Invalid {
                        object: object.id(),
                        field: "sidecar.istio.io/statsHistogramBuckets".into(),
                        why: format!("expected {{\"<stat prefix>\": [bounds...]}}: {err}"),
                    })?;
                stats.histogram_buckets = buckets.into_iter().collect();
            }
            "sidecar.istio.io/inject" => {}
            key if key.starts_with("prometheus.io/") => {}
            key => t.unsupported(object, format!("annotation {key}"), "no local effect"),
        }
    }
    let pod = spec
        .get("template")
        .and_then(|t| t.get("spec"))
        .cloned()
        .unwrap_or(Value::Null);
    for key in pod.as_object().into_iter().flat_map(|m| m.keys()) {
        if key != "containers" {
            t.unsupported(
                object,
                format!("spec.template.spec.{key}"),
                "pod settings have no local effect",
            );
        }
    }
    let containers = pod
        .get("containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if containers.len() > 1 {
        t.unsupported(
            object,
            "spec.template.spec.containers",
            "only the first container runs (as model-service)",
        );
    }
    let mut env = Vec::new();
    let mut model_version = version.clone();
    if let Some(container) = containers.first().and_then(Value::as_object) {
        for (key, value) in container {
            match key.as_str() {
                "name" | "ports" | "imagePullPolicy" => {}
                "image" => t.findings.push(Finding::Substituted {
                    object: object.id(),
                    what: format!(
                        "image {} runs as the local model-service build",
                        value.as_str().unwrap_or("?")
                    ),
                }),
                "env" => {
                    for (i, var) in value.as_array().into_iter().flatten().enumerate() {
                        let name = var.get("name").and_then(Value::as_str).unwrap_or_default();
                        match var.get("value") {
                            Some(v) => {
                                let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                                if name == "MODEL_VERSION" {
                                    model_version = v.clone();
                                }
                                env.push((name.to_string(), v));
                            }
                            None => t.unsupported(
                                object,
                                format!("containers[0].env[{i}] {name}"),
                                "only literal values are passed locally",
                            ),
                        }
                    }
                }
                other => t.unsupported(
                    object,
                    format!("containers[0].{other}"),
                    "container settings have no local effect",
                ),
            }
        }
    }
    Ok(Some(Workload {
        deployment: object.name.clone(),
        namespace: object.namespace().to_string(),
        labels,
        version,
        model_version,
        env,
        stats,
        plugins: Vec::new(),
    }))
}

fn percent(value: Option<istio::Percent>, default: f64) -> f64 {
    value.map_or(default, |p| p.value.clamp(0.0, 100.0))
}

fn string_matcher(
    t: &mut Translator,
    object: &Object,
    field: &str,
    m: &istio::StringMatch,
) -> Result<StringMatcher, PlanError> {
    t.unknown(object, field, &m.extra);
    match (&m.exact, &m.prefix, &m.regex) {
        (Some(v), None, None) => Ok(StringMatcher::Exact(v.clone())),
        (None, Some(v), None) => Ok(StringMatcher::Prefix(v.clone())),
        (None, None, Some(v)) => Ok(StringMatcher::Regex(v.clone())),
        (None, None, None) => Ok(StringMatcher::Present),
        _ => Err(PlanError::Invalid {
            object: object.id(),
            field: field.to_string(),
            why: "set exactly one of exact, prefix, regex".into(),
        }),
    }
}

type ClusterFor<'a> =
    dyn FnMut(&mut Translator, &str, &istio::Destination) -> Result<String, PlanError> + 'a;

fn http_route(
    t: &mut Translator,
    object: &Object,
    prefix: &str,
    route: &istio::HttpRoute,
    cluster_for: &mut ClusterFor<'_>,
) -> Result<Vec<RoutePlan>, PlanError> {
    t.unknown(object, prefix, &route.extra);
    for (field, value) in [
        ("redirect", &route.redirect),
        ("directResponse", &route.direct_response),
        ("delegate", &route.delegate),
        ("rewrite", &route.rewrite),
        ("corsPolicy", &route.cors_policy),
    ] {
        t.skip_some(
            object,
            &format!("{prefix}.{field}"),
            value,
            "not translated by the local mesh",
        );
    }
    let bad = |field: String, why: &str| PlanError::Invalid {
        object: object.id(),
        field,
        why: why.to_string(),
    };
    if route.route.is_empty() {
        return Err(bad(
            format!("{prefix}.route"),
            "a route needs at least one destination",
        ));
    }
    let mut destinations = Vec::new();
    for (i, dest) in route.route.iter().enumerate() {
        let field = format!("{prefix}.route[{i}]");
        t.unknown(object, &field, &dest.extra);
        t.skip_some(
            object,
            &format!("{field}.headers"),
            &dest.headers,
            "not translated by the local mesh",
        );
        let cluster = cluster_for(t, &format!("{field}.destination"), &dest.destination)?;
        let weight = if route.route.len() == 1 {
            100
        } else {
            dest.weight.unwrap_or(0)
        };
        // istiod leaves zero-weight destinations out of the weighted cluster.
        if weight > 0 {
            destinations.push((cluster, weight));
        }
    }
    if destinations.is_empty() {
        return Err(bad(
            format!("{prefix}.route"),
            "every destination has weight 0",
        ));
    }
    let mut mirrors = Vec::new();
    if let Some(mirror) = &route.mirror {
        mirrors.push((
            cluster_for(t, &format!("{prefix}.mirror"), mirror)?,
            percent(route.mirror_percentage, 100.0),
        ));
    }
    for (i, mirror) in route.mirrors.iter().enumerate() {
        let field = format!("{prefix}.mirrors[{i}]");
        t.unknown(object, &field, &mirror.extra);
        mirrors.push((
            cluster_for(t, &format!("{field}.destination"), &mirror.destination)?,
            percent(mirror.percentage, 100.0),
        ));
    }
    let duration = |field: String, text: &Option<String>| -> Result<Option<Duration>, PlanError> {
        text.as_deref()
            .map(|s| parse_duration(s).ok_or_else(|| bad(field, "not a duration (e.g. 5s, 250ms)")))
            .transpose()
    };
    let timeout = duration(format!("{prefix}.timeout"), &route.timeout)?.unwrap_or(Duration::ZERO);
    // Without `retries`, istiod applies its default retry policy.
    let retries = match &route.retries {
        None => Some(RetryPlan {
            attempts: 2,
            retry_on: "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
                .into(),
            per_try_timeout: None,
        }),
        Some(r) => {
            t.unknown(object, &format!("{prefix}.retries"), &r.extra);
            let per_try_timeout = duration(
                format!("{prefix}.retries.perTryTimeout"),
                &r.per_try_timeout,
            )?;
            match r.attempts.unwrap_or(0) {
                0 => None,
                attempts => Some(RetryPlan {
                    attempts,
                    retry_on: r.retry_on.clone().unwrap_or_else(|| "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes".into()),
                    per_try_timeout,
                }),
            }
        }
    };
    let fault = match &route.fault {
        None => None,
        Some(f) => {
            t.unknown(object, &format!("{prefix}.fault"), &f.extra);
            let delay = match &f.delay {
                None => None,
                Some(d) => {
                    t.unknown(object, &format!("{prefix}.fault.delay"), &d.extra);
                    let fixed =
                        duration(format!("{prefix}.fault.delay.fixedDelay"), &d.fixed_delay)?
                            .ok_or_else(|| {
                                bad(format!("{prefix}.fault.delay.fixedDelay"), "required")
                            })?;
                    let pct = d
                        .percentage
                        .map(|p| p.value)
                        .or(d.percent.map(f64::from))
                        .unwrap_or(100.0);
                    Some((fixed, pct.clamp(0.0, 100.0)))
                }
            };
            let abort = match &f.abort {
                None => None,
                Some(a) => {
                    t.unknown(object, &format!("{prefix}.fault.abort"), &a.extra);
                    let status = a
                        .http_status
                        .filter(|s| (200..600).contains(s))
                        .ok_or_else(|| {
                            bad(
                                format!("{prefix}.fault.abort.httpStatus"),
                                "an HTTP status 200..599 is required",
                            )
                        })?;
                    Some((status, percent(a.percentage, 100.0)))
                }
            };
            Some(FaultPlan { delay, abort })
        }
    };

    let mut headers_and_paths = Vec::new();
    if route.matches.is_empty() {
        headers_and_paths.push((PathMatch::Prefix("/".into(), true), Vec::new()));
    }
    for (i, m) in route.matches.iter().enumerate() {
        let field = format!("{prefix}.match[{i}]");
        t.unknown(object, &field, &m.extra);
        for (name, value) in [
            ("authority", &m.authority),
            ("scheme", &m.scheme),
            ("port", &m.port),
            ("queryParams", &m.query_params),
            ("sourceLabels", &m.source_labels),
            ("gateways", &m.gateways),
            ("sourceNamespace", &m.source_namespace),
        ] {
            t.skip_some(
                object,
                &format!("{field}.{name}"),
                value,
                "not translated by the local mesh",
            );
        }
        let case_sensitive = !m.ignore_uri_case.unwrap_or(false);
        let path = match &m.uri {
            None => PathMatch::Prefix("/".into(), case_sensitive),
            Some(uri) => match string_matcher(t, object, &format!("{field}.uri"), uri)? {
                StringMatcher::Exact(v) => PathMatch::Exact(v, case_sensitive),
                StringMatcher::Prefix(v) => PathMatch::Prefix(v, case_sensitive),
                StringMatcher::Regex(v) => PathMatch::Regex(v),
                StringMatcher::Present => PathMatch::Prefix("/".into(), case_sensitive),
            },
        };
        let mut headers = Vec::new();
        for (name, value) in &m.headers {
            let matcher = string_matcher(t, object, &format!("{field}.headers.{name}"), value)?;
            headers.push(HeaderMatch {
                name: name.to_ascii_lowercase(),
                matcher,
                invert: false,
            });
        }
        for (name, value) in &m.without_headers {
            let matcher =
                string_matcher(t, object, &format!("{field}.withoutHeaders.{name}"), value)?;
            headers.push(HeaderMatch {
                name: name.to_ascii_lowercase(),
                matcher,
                invert: true,
            });
        }
        if let Some(method) = &m.method {
            let matcher = string_matcher(t, object, &format!("{field}.method"), method)?;
            headers.push(HeaderMatch {
                name: ":method".into(),
                matcher,
                invert: false,
            });
        }
        headers_and_paths.push((path, headers));
    }

    let (request_headers, response_headers) = match &route.headers {
        None => (HeaderEdits::default(), HeaderEdits::default()),
        Some(h) => {
            t.unknown(object, &format!("{prefix}.headers"), &h.extra);
            (
                header_edits(
                    t,
                    object,
                    &format!("{prefix}.headers.request"),
                    h.request.as_ref(),
                ),
                header_edits(
                    t,
                    object,
                    &format!("{prefix}.headers.response"),
                    h.response.as_ref(),
                ),
            )
        }
    };

    let base = route
        .name
        .clone()
        .unwrap_or_else(|| format!("{}.{prefix}", object.name));
    // Like istiod: one Envoy route per match block, sharing the action.
    Ok(headers_and_paths
        .into_iter()
        .enumerate()
        .map(|(i, (path, headers))| RoutePlan {
            name: if i == 0 {
                base.clone()
            } else {
                format!("{base}.{i}")
            },
            path,
            headers,
            destinations: destinations.clone(),
            mirrors: mirrors.clone(),
            timeout,
            retries: retries.clone(),
            fault: fault.clone(),
            request_headers: request_headers.clone(),
            response_headers: response_headers.clone(),
        })
        .collect())
}

fn wasm_plugin(
    t: &mut Translator,
    object: &Object,
    spec: &istio::WasmPluginSpec,
    wasm_path: &str,
) -> Result<PluginPlan, PlanError> {
    t.unknown(object, "spec", &spec.extra);
    if let Some(selector) = &spec.selector {
        t.unknown(object, "spec.selector", &selector.extra);
    }
    if let Some(url) = &spec.url {
        t.findings.push(Finding::Substituted {
            object: object.id(),
            what: format!("module {url} is loaded from the local build {wasm_path}"),
        });
    }
    for (i, m) in spec.matches.iter().enumerate() {
        let field = format!("spec.match[{i}]");
        t.unknown(object, &field, &m.extra);
        t.skip_some(
            object,
            &format!("{field}.ports"),
            &m.ports,
            "plugins run on every local listener",
        );
        if m.mode.as_deref().is_some_and(|mode| mode == "CLIENT") {
            t.unsupported(
                object,
                format!("{field}.mode"),
                "local sidecars have no outbound listener; the plugin runs inbound",
            );
        }
    }
    for (field, value) in [
        ("targetRefs", &spec.target_refs),
        ("targetRef", &spec.target_ref),
        ("vmConfig", &spec.vm_config),
    ] {
        t.skip_some(
            object,
            &format!("spec.{field}"),
            value,
            "not translated by the local mesh; placement is by selector",
        );
    }
    if spec.plugin_type.as_deref().is_some_and(|ty| ty != "HTTP") {
        t.unsupported(object, "spec.type", "only HTTP plugins run locally");
    }
    let (fail_open, reload) = match spec.fail_strategy.as_deref() {
        None | Some("FAIL_CLOSE") => (false, false),
        Some("FAIL_OPEN") => (true, false),
        Some("FAIL_RELOAD") => (false, true),
        Some(other) => {
            return Err(PlanError::Invalid {
                object: object.id(),
                field: "spec.failStrategy".into(),
                why: format!("{other} is not one of FAIL_CLOSE, FAIL_OPEN, FAIL_RELOAD"),
            });
        }
    };
    let early = match spec.phase.as_deref() {
        None | Some("UNSPECIFIED_PHASE") | Some("STATS") => false,
        Some("AUTHN") | Some("AUTHZ") => true,
        Some(other) => {
            return Err(PlanError::Invalid {
                object: object.id(),
                field: "spec.phase".into(),
                why: format!("{other} is not one of AUTHN, AUTHZ, STATS, UNSPECIFIED_PHASE"),
            });
        }
    };
    let configuration = match &spec.plugin_config {
        None => String::new(),
        Some(config) => serde_json::to_string(config).map_err(|source| PlanError::Shape {
            object: object.id(),
            source,
        })?,
    };
    Ok(PluginPlan {
        name: format!("{}.{}", object.namespace(), object.name),
        root_id: spec.plugin_name.clone().unwrap_or_default(),
        configuration,
        fail_open,
        reload,
        early,
        priority: spec.priority.unwrap_or(0),
        refused: false,
    })
}

#[cfg(test)]
mod tests {
    use super::super::chart::parse_objects;
    use super::*;

    /// `helm template` of the chart with its default values.
    const CHART: &str = include_str!("testdata/chart.yaml");
    const WASM: &str = "/build/filter.wasm";

    fn plan_of(yaml: &str) -> MeshPlan {
        translate(&parse_objects(yaml).unwrap(), WASM).unwrap()
    }

    fn edit(find: &str, replace: &str) -> String {
        assert!(CHART.contains(find), "fixture lacks {find:?}");
        CHART.replacen(find, replace, 1)
    }

    #[test]
    fn one_workload_per_deployment_with_istio_labels_and_stat_tags() {
        let plan = plan_of(CHART);
        let versions: Vec<_> = plan.workloads.iter().map(|w| w.version.as_str()).collect();
        assert_eq!(versions, ["v1", "v2", "v3"]);
        let v2 = &plan.workloads[1];
        assert_eq!(v2.deployment, "model-deployment-v2");
        assert_eq!(v2.app(), "model-service");
        assert_eq!(v2.model_version, "v2");
        assert!(v2.stats.tags.iter().any(|t| t == "cohort"));
        assert!(v2.stats.tags.iter().any(|t| t == "version"));
        assert_eq!(plan.gateway.stats.tags, v2.stats.tags);
        assert!(
            v2.stats
                .inclusion
                .as_ref()
                .is_some_and(|i| i.regexps.iter().any(|p| p.contains("sms_model_")))
        );
    }

    #[test]
    fn routes_follow_the_virtual_service() {
        let plan = plan_of(CHART);
        let vhost = &plan.gateway.virtual_hosts[0];
        assert!(vhost.domains.contains(&"sms-checker.local".to_string()));
        assert!(vhost.domains.contains(&"localhost:*".to_string()));
        // The mesh-only host is not served by the gateway.
        assert!(
            !vhost
                .domains
                .iter()
                .any(|d| d.starts_with("model-service."))
        );
        let canary = &vhost.routes[0];
        assert_eq!(
            canary.headers,
            [HeaderMatch {
                name: "x-experiment-cohort".into(),
                matcher: StringMatcher::Exact("canary".into()),
                invert: false
            }]
        );
        let v2 = "outbound|8081|v2|model-service.default.svc.cluster.local";
        let v3 = "outbound|8081|v3|model-service.default.svc.cluster.local";
        assert_eq!(canary.destinations, [(v2.to_string(), 100)]);
        assert_eq!(canary.mirrors, [(v3.to_string(), 100.0)]);
        let split = vhost.routes.last().unwrap();
        assert!(split.headers.is_empty());
        let weights: Vec<u32> = split.destinations.iter().map(|d| d.1).collect();
        assert_eq!(weights, [90, 10]);
        // istiod's default retry policy applies without `retries`.
        assert_eq!(split.retries.as_ref().map(|r| r.attempts), Some(2));
        let cluster = plan.clusters.iter().find(|c| c.name == v3).unwrap();
        assert_eq!(cluster.workloads, [2]);
    }

    #[test]
    fn weights_follow_set_values() {
        let yaml = edit("weight: 90", "weight: 95").replacen("weight: 10", "weight: 5", 1);
        let plan = plan_of(&yaml);
        let split = plan.gateway.virtual_hosts[0].routes.last().unwrap();
        assert_eq!(
            split.destinations.iter().map(|d| d.1).collect::<Vec<_>>(),
            [95, 5]
        );
    }

    #[test]
    fn plugins_land_by_selector_with_their_fail_strategy() {
        let plan = plan_of(CHART);
        assert_eq!(plan.gateway.plugins.len(), 1);
        let gateway = &plan.gateway.plugins[0];
        assert_eq!(gateway.name, "istio-system.sms-checker-cohort-gateway");
        assert!(gateway.fail_open && gateway.early);
        let config: Value = serde_json::from_str(&gateway.configuration).unwrap();
        assert_eq!(config["role"], "gateway");
        for workload in &plan.workloads {
            assert_eq!(workload.plugins.len(), 1, "{}", workload.version);
            let config: Value = serde_json::from_str(&workload.plugins[0].configuration).unwrap();
            assert_eq!(config["role"], "sidecar");
            assert_eq!(config["version"], workload.version.as_str());
        }
        let closed = plan_of(&edit("failStrategy: FAIL_OPEN", "failStrategy: FAIL_CLOSE"));
        assert!(!closed.gateway.plugins[0].fail_open);
        let reload = plan_of(&edit(
            "failStrategy: FAIL_OPEN",
            "failStrategy: FAIL_RELOAD",
        ));
        assert!(reload.gateway.plugins[0].reload && !reload.gateway.plugins[0].fail_open);
    }

    #[test]
    fn faults_are_translated_per_route() {
        let yaml = edit(
            "    - name: cohort-canary\n",
            "    - name: cohort-canary\n      fault:\n        delay:\n          fixedDelay: 250ms\n          percentage:\n            value: 50\n        abort:\n          httpStatus: 503\n          percentage:\n            value: 1.5\n",
        );
        let plan = plan_of(&yaml);
        let fault = plan.gateway.virtual_hosts[0].routes[0]
            .fault
            .clone()
            .unwrap();
        assert_eq!(fault.delay, Some((Duration::from_millis(250), 50.0)));
        assert_eq!(fault.abort, Some((503, 1.5)));
    }

    #[test]
    fn what_cannot_be_reproduced_is_reported() {
        let plan = plan_of(CHART);
        let text: Vec<String> = plan.findings.iter().map(ToString::to_string).collect();
        let has = |needle: &str| text.iter().any(|t| t.contains(needle));
        assert!(
            has("PodDisruptionBudget/model-deployment-v1: not reproduced"),
            "{text:#?}"
        );
        assert!(has("containers[0].resources"), "{text:#?}");
        assert!(has("spec.gateways"), "{text:#?}");
        assert!(has("module oci://"), "{text:#?}");
    }

    #[test]
    fn unknown_fields_are_reported_with_their_path() {
        let yaml = edit(
            "    - name: split\n",
            "    - name: split\n      frobnicate: true\n",
        );
        let plan = plan_of(&yaml);
        assert!(plan.findings.iter().any(|f| matches!(
            f,
            Finding::UnknownField { object, field } if object == "VirtualService/model-service" && field == "spec.http[2].frobnicate"
        )), "{:#?}", plan.findings);
    }

    #[test]
    fn a_disabled_version_has_no_workload_and_its_subset_no_endpoints() {
        // What `versions.v2.enabled=false` removes: the Deployment.
        let objects: Vec<_> = parse_objects(CHART)
            .unwrap()
            .into_iter()
            .filter(|o| !(o.kind == "Deployment" && o.name == "model-deployment-v2"))
            .collect();
        let plan = translate(&objects, WASM).unwrap();
        assert_eq!(plan.workloads.len(), 2);
        let v2 = plan
            .clusters
            .iter()
            .find(|c| c.name.contains("|v2|"))
            .unwrap();
        assert!(v2.workloads.is_empty());
    }

    #[test]
    fn invalid_input_gets_a_clear_error() {
        let err = translate(
            &parse_objects(&edit("subset: v2", "subset: v9")).unwrap(),
            WASM,
        )
        .unwrap_err();
        assert!(err.to_string().contains("subset v9"), "{err}");
        let err = translate(
            &parse_objects(&edit("failStrategy: FAIL_OPEN", "failStrategy: SOMETIMES")).unwrap(),
            WASM,
        )
        .unwrap_err();
        assert!(err.to_string().contains("spec.failStrategy"), "{err}");
        let mesh_only = CHART
            .replace("kind: Gateway", "kind: NotAGateway")
            .replace("    - sms-checker-gateway\n", "");
        assert!(matches!(
            translate(&parse_objects(&mesh_only).unwrap(), WASM),
            Err(PlanError::NoGateway)
        ));
    }

    #[test]
    fn the_same_finding_on_several_objects_is_one_line() {
        let finding = |object: &str, field: &str| Finding::Unsupported {
            object: object.into(),
            field: field.into(),
            why: "no local effect".into(),
        };
        let lines = grouped(&[
            finding("Deployment/a", "resources"),
            finding("Deployment/b", "resources"),
            finding("Service/a", "resources"),
            finding("Deployment/a", "probes"),
        ]);
        assert_eq!(
            lines,
            [
                "Deployment/a, b: resources not reproduced (no local effect)",
                "Service/a: resources not reproduced (no local effect)",
                "Deployment/a: probes not reproduced (no local effect)",
            ]
        );
    }

    #[test]
    fn routes_attached_to_a_gateway_outside_the_chart_get_a_stand_in() {
        // What `istio.gateway.enabled=false` renders: no Gateway object.
        let objects: Vec<_> = parse_objects(CHART)
            .unwrap()
            .into_iter()
            .filter(|o| o.kind != "Gateway")
            .collect();
        let plan = translate(&objects, WASM).unwrap();
        assert_eq!(plan.gateway.name, "sms-checker-gateway");
        assert_eq!(
            plan.gateway.labels.get("istio").map(String::as_str),
            Some("ingressgateway")
        );
        // The gateway WasmPlugin selects it, as it would the cluster's gateway.
        assert_eq!(plan.gateway.plugins.len(), 1);
        assert!(
            plan.gateway.virtual_hosts[0]
                .domains
                .contains(&"sms-checker.local".to_string())
        );
        assert!(
            plan.findings
                .iter()
                .any(|f| f.to_string().contains("stands in for it"))
        );
    }

    #[test]
    fn a_wasm_plugin_outside_the_gateway_namespace_is_left_out_as_istio_would() {
        let yaml = edit(
            "  name: sms-checker-cohort-gateway\n  namespace: istio-system",
            "  name: sms-checker-cohort-gateway\n  namespace: default",
        );
        let plan = plan_of(&yaml);
        assert!(plan.gateway.plugins.is_empty());
        assert!(
            plan.findings.iter().any(|f| f
                .to_string()
                .contains("Istio applies it only in namespace default")),
            "{:#?}",
            plan.findings
        );
    }

    #[test]
    fn route_header_edits_are_translated() {
        let yaml = edit(
            "    - name: split\n",
            "    - name: split\n      headers:\n        request:\n          set:\n            x-env: local\n        response:\n          remove:\n            - server\n",
        );
        let plan = plan_of(&yaml);
        let split = plan.gateway.virtual_hosts[0].routes.last().unwrap();
        assert_eq!(
            split.request_headers.set,
            [("x-env".to_string(), "local".to_string())]
        );
        assert_eq!(split.response_headers.remove, ["server"]);
        assert!(
            !plan
                .findings
                .iter()
                .any(|f| f.to_string().contains("headers")),
            "{:#?}",
            plan.findings
        );
    }

    #[test]
    fn histogram_buckets_and_inclusion_prefixes_are_translated() {
        let yaml = CHART.replace(
            "        prometheus.io/scrape: \"true\"\n",
            "        prometheus.io/scrape: \"true\"\n        sidecar.istio.io/statsHistogramBuckets: '{\"wasmcustom\":[0.5,1,5]}'\n",
        )
        .replace("          proxyStatsMatcher:\n", "          proxyStatsMatcher:\n            inclusionPrefixes: [\"wasmcustom.\"]\n");
        let plan = plan_of(&yaml);
        let stats = &plan.workloads[0].stats;
        assert_eq!(
            stats.histogram_buckets,
            [("wasmcustom".to_string(), vec![0.5, 1.0, 5.0])]
        );
        assert_eq!(stats.inclusion.as_ref().unwrap().prefixes, ["wasmcustom."]);
        assert_eq!(
            plan.gateway.stats.histogram_buckets,
            stats.histogram_buckets
        );
        let bad = CHART.replace(
            "        prometheus.io/scrape: \"true\"\n",
            "        prometheus.io/scrape: \"true\"\n        sidecar.istio.io/statsHistogramBuckets: 'not json'\n",
        );
        let err = translate(&parse_objects(&bad).unwrap(), WASM).unwrap_err();
        assert!(err.to_string().contains("statsHistogramBuckets"), "{err}");
    }

    #[test]
    fn durations_parse_like_istio() {
        assert_eq!(parse_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_duration("5"), None);
    }
}
