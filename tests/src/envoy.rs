//! Real Envoy for the cohort filter's tests: bootstraps shaped the way Istio
//! shapes them, and the Envoy process with its stats. The upstreams and the
//! client around it are in [`crate::http`].
//!
//! Everything listens on 127.0.0.1 on ports from [`free_port`]; every Envoy
//! runs inside a [`Process`] guard, so a failing test leaves nothing behind.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use sms_checker_filter::config::DEFAULT_COHORT_HEADER;

pub use crate::filter_wasm;
use crate::http::http_get;
use crate::process::Process;
use crate::{envoy_bin, free_port, wait_for};

/// Histogram buckets for the filter's millisecond histograms: sub-millisecond
/// resolution at the low end, where a proxied request usually is.
pub const DURATION_BUCKETS_MS: [f64; 15] = [
    0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];

/// One route of the generated route table.
#[derive(Debug, Clone)]
pub enum Route {
    /// Requests whose `header` equals `value` go to `cluster` (the
    /// VirtualService `match: headers: exact`).
    HeaderExact {
        header: String,
        value: String,
        cluster: String,
    },
    /// Everything else, split by weight (the VirtualService default route).
    Weighted(Vec<(String, u32)>),
    /// A fixed response (for the benchmark).
    Direct { status: u16, body: String },
}

/// One listener: a route table, optionally behind the cohort filter (or any
/// other Wasm module), mirroring to `mirror_cluster`.
#[derive(Debug, Clone)]
pub struct ListenerSpec {
    pub name: String,
    pub port: u16,
    /// `(wasm file, pluginConfig JSON)`; `None` for no Wasm filter.
    pub wasm: Option<(PathBuf, String)>,
    pub routes: Vec<Route>,
    pub mirror_cluster: Option<String>,
}

/// The gateway listener as Istio builds it from the chart's VirtualService:
/// one route per cohort header value (v1 stable, v2 canary), `fallback`
/// weights as the default route, every request mirrored to v3 (the shadow).
/// The plugin config must leave the cohort header at the filter's default.
pub fn gateway_listener(port: u16, plugin_config: &str, fallback: &[(&str, u32)]) -> ListenerSpec {
    let cohort_route = |value: &str, cluster: &str| Route::HeaderExact {
        header: DEFAULT_COHORT_HEADER.into(),
        value: value.into(),
        cluster: cluster.into(),
    };
    ListenerSpec {
        name: "gateway".into(),
        port,
        wasm: Some((filter_wasm(), plugin_config.to_string())),
        routes: vec![
            cohort_route("stable", "v1"),
            cohort_route("canary", "v2"),
            // Reached only without a cohort header (Istio's split).
            Route::Weighted(
                fallback
                    .iter()
                    .map(|(cluster, weight)| (cluster.to_string(), *weight))
                    .collect(),
            ),
        ],
        mirror_cluster: Some("v3".into()),
    }
}

/// The parameters of one Envoy bootstrap.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    pub admin_port: u16,
    /// Pod labels as Istio puts them in node metadata (`LABELS`).
    pub node_labels: BTreeMap<String, String>,
    pub listeners: Vec<ListenerSpec>,
    /// `(cluster name, port on 127.0.0.1)`.
    pub clusters: Vec<(String, u16)>,
    /// An HTTP access log on every listener; `None`: none.
    pub access_log: Option<AccessLog>,
}

/// A file access log per listener, `<dir>/<listener>.access.log`, in a text
/// format of Envoy's command operators (`%REQ(...)%`, `%RESPONSE_CODE%`, ...).
#[derive(Debug, Clone)]
pub struct AccessLog {
    pub dir: PathBuf,
    pub format: String,
}

impl AccessLog {
    pub fn path(&self, listener: &str) -> PathBuf {
        self.dir.join(format!("{listener}.access.log"))
    }
}

impl Bootstrap {
    pub fn new() -> Bootstrap {
        Bootstrap {
            admin_port: free_port(),
            node_labels: BTreeMap::new(),
            listeners: Vec::new(),
            clusters: Vec::new(),
            access_log: None,
        }
    }

    /// The bootstrap as JSON (Envoy reads JSON as YAML).
    pub fn to_json(&self) -> Value {
        let stats_tags: Vec<Value> = sms_checker_filter::metrics::TAG_NAMES
            .iter()
            .map(|tag| json!({"tag_name": tag, "regex": format!(r"({tag}=\.=(.*?);\.;)")}))
            .collect();
        json!({
            "node": {
                "id": "sidecar~127.0.0.1~test.default~default.svc.cluster.local",
                "cluster": "test.default",
                "metadata": {"LABELS": self.node_labels},
            },
            "admin": {"address": socket(self.admin_port)},
            // Histograms reach /stats/prometheus at each flush; 1 s keeps
            // tests short (Envoy's default is 5 s).
            "stats_flush_interval": "1s",
            "stats_config": {
                "stats_tags": stats_tags,
                // What Istio renders from the pod annotation
                // sidecar.istio.io/statsHistogramBuckets: {"wasmcustom": [...]}:
                // the matcher sees the full name, wasmcustom.<tags><name>.
                "histogram_bucket_settings": [{
                    "match": {"prefix": "wasmcustom"},
                    "buckets": DURATION_BUCKETS_MS,
                }],
            },
            "static_resources": {
                "listeners": self
                    .listeners
                    .iter()
                    .map(|spec| listener(spec, self.access_log.as_ref()))
                    .collect::<Vec<_>>(),
                "clusters": self.clusters.iter().map(|(name, port)| cluster(name, *port)).collect::<Vec<_>>(),
            },
        })
    }
}

impl Default for Bootstrap {
    fn default() -> Self {
        Bootstrap::new()
    }
}

fn socket(port: u16) -> Value {
    json!({"socket_address": {"address": "127.0.0.1", "port_value": port}})
}

fn cluster(name: &str, port: u16) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket(port)}}]}],
        },
    })
}

/// The Wasm filter the way Istio renders a WasmPlugin: V8, the module from a
/// local file, the pluginConfig as a `StringValue`, fail closed.
pub fn wasm_filter(name: &str, wasm: &Path, plugin_config: &str) -> Value {
    json!({
        "name": format!("istio.{name}"),
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": name,
                "root_id": "",
                "vm_config": {
                    "vm_id": name,
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": wasm.display().to_string()}},
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": plugin_config,
                },
                "fail_open": false,
            },
        },
    })
}

fn listener(spec: &ListenerSpec, access_log: Option<&AccessLog>) -> Value {
    let mut filters = Vec::new();
    if let Some((wasm, config)) = &spec.wasm {
        filters.push(wasm_filter(&spec.name, wasm, config));
    }
    filters.push(json!({
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
    }));
    let mirror = spec.mirror_cluster.as_ref().map(|cluster| {
        json!([{
            "cluster": cluster,
            "runtime_fraction": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}},
        }])
    });
    let routes: Vec<Value> = spec
        .routes
        .iter()
        .map(|route| {
            let mut action = match route {
                Route::HeaderExact { cluster, .. } => json!({"cluster": cluster}),
                Route::Weighted(weights) => json!({"weighted_clusters": {"clusters": weights
                    .iter()
                    .map(|(name, weight)| json!({"name": name, "weight": weight}))
                    .collect::<Vec<_>>()}}),
                Route::Direct { status, body } => {
                    return json!({
                        "match": {"prefix": "/"},
                        "direct_response": {"status": status, "body": {"inline_string": body}},
                    });
                }
            };
            if let Some(mirror) = &mirror {
                action["request_mirror_policies"] = mirror.clone();
            }
            let matcher = match route {
                Route::HeaderExact { header, value, .. } => json!({
                    "prefix": "/",
                    "headers": [{"name": header, "string_match": {"exact": value}}],
                }),
                _ => json!({"prefix": "/"}),
            };
            json!({"match": matcher, "route": action})
        })
        .collect();
    let mut manager = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": spec.name,
        "route_config": {
            "name": spec.name,
            "virtual_hosts": [{"name": spec.name, "domains": ["*"], "routes": routes}],
        },
        "http_filters": filters,
    });
    if let Some(log) = access_log {
        // Written when the stream ends, from the request headers as the
        // filters left them.
        manager["access_log"] = json!([{
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": log.path(&spec.name).display().to_string(),
                "log_format": {"text_format_source": {"inline_string": log.format}},
            },
        }]);
    }
    json!({
        "name": spec.name,
        "address": socket(spec.port),
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": manager,
        }]}],
    })
}

/// A running Envoy and its admin port.
pub struct Envoy {
    pub process: Process,
    pub admin_port: u16,
}

impl Envoy {
    /// Writes `bootstrap` into `dir` and starts Envoy on it, without waiting.
    pub fn spawn(name: &str, dir: &Path, bootstrap: &Bootstrap, extra_args: &[&str]) -> Envoy {
        let config = dir.join(format!("{name}.json"));
        std::fs::write(&config, bootstrap.to_json().to_string())
            .unwrap_or_else(|err| panic!("write {}: {err}", config.display()));
        let mut command = Command::new(envoy_bin());
        command
            .arg("-c")
            .arg(&config)
            .args(["--disable-hot-restart", "--log-level", "info"])
            .args(extra_args);
        let process = Process::spawn(name, command, &dir.join(format!("{name}.log")));
        Envoy {
            process,
            admin_port: bootstrap.admin_port,
        }
    }

    /// Starts Envoy and waits until every listener accepts connections.
    pub fn start(name: &str, dir: &Path, bootstrap: &Bootstrap) -> Envoy {
        Envoy::start_with_args(name, dir, bootstrap, &["--concurrency", "2"])
    }

    pub fn start_with_args(
        name: &str,
        dir: &Path,
        bootstrap: &Bootstrap,
        extra_args: &[&str],
    ) -> Envoy {
        let mut envoy = Envoy::spawn(name, dir, bootstrap, extra_args);
        let admin = envoy.admin_port;
        wait_for(
            &format!("{name} to be ready"),
            Duration::from_secs(30),
            || {
                if let Some(status) = envoy.process.try_wait() {
                    panic!(
                        "{name} exited with {status} before it was ready:\n{}",
                        envoy.process.log()
                    );
                }
                http_get(admin, "/ready")
                    .ok()
                    .filter(|r| r.status == 200)
                    .map(|_| ())
            },
        );
        for listener in &bootstrap.listeners {
            wait_for(
                &format!("{name} listener {}", listener.name),
                Duration::from_secs(10),
                || TcpStream::connect(("127.0.0.1", listener.port)).ok(),
            );
        }
        envoy
    }

    /// `/stats/prometheus` from the admin port.
    pub fn prometheus(&self) -> String {
        let response = http_get(self.admin_port, "/stats/prometheus")
            .unwrap_or_else(|err| panic!("GET /stats/prometheus: {err}"));
        assert_eq!(response.status, 200);
        response.body_text()
    }

    /// The value of the Prometheus sample line that starts with `series`
    /// (name and labels exactly as exposed), if present.
    pub fn sample(&self, series: &str) -> Option<f64> {
        sample(&self.prometheus(), series)
    }
}

/// The value of the sample `name{labels}` in Prometheus text, whatever the
/// order Envoy prints the labels in.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut want: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    want.sort();
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (got, value) = if let Some(rest) = rest.strip_prefix('{') {
            let (inner, value) = rest.split_once("} ")?;
            let mut got: Vec<(String, String)> = inner
                .split(',')
                .filter(|kv| !kv.is_empty())
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k.to_string(), v.trim_matches('"').to_string()))
                })
                .collect();
            got.sort();
            (got, value)
        } else {
            (Vec::new(), rest.strip_prefix(' ')?)
        };
        (got == want).then(|| value.trim().parse().ok()).flatten()
    })
}

/// The value of the line `series value` in Prometheus text.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}
