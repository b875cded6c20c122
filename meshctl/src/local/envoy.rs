//! Envoy bootstraps for the local gateway and sidecars, shaped like the
//! configuration istiod pushes (names, node metadata, filter order).

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use super::plan::{
    ClusterPlan, FaultPlan, HeaderEdits, HeaderMatch, PathMatch, PluginPlan, ProxyStats, RoutePlan,
    StringMatcher, Workload,
};

/// Istio version the node metadata claims, as in the chart's CRDs.
const ISTIO_VERSION: &str = "1.30.3";

fn duration(d: Duration) -> String {
    format!("{}.{:09}s", d.as_secs(), d.subsec_nanos())
}

/// Istio percentages (0..100, fractional) as Envoy fractions per million.
fn per_million(percent: f64) -> Value {
    json!({
        "numerator": (percent * 10_000.0).round() as u64,
        "denominator": "MILLION",
    })
}

fn admin(port: u16, log: &Path) -> Value {
    json!({
        "access_log": [{
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": log.display().to_string(),
            },
        }],
        "address": socket(port),
    })
}

fn socket(port: u16) -> Value {
    json!({"socket_address": {"address": "127.0.0.1", "port_value": port}})
}

/// A proxy's stats settings: `extraStatTags` as tag extractors with the
/// regex Istio uses for its `name=.=value;.;` encoding; the stats matcher
/// (next to the server-level stats Istio always keeps); histogram buckets.
fn stats_config(stats: &ProxyStats) -> Value {
    let stats_tags: Vec<Value> = stats
        .tags
        .iter()
        .map(|tag| json!({"tag_name": tag, "regex": format!("({}=\\.=(.*?);\\.;)", regex_escape(tag))}))
        .collect();
    let mut config = json!({"stats_tags": stats_tags, "use_all_default_tags": true});
    if let Some(inclusion) = &stats.inclusion {
        let patterns: Vec<Value> = inclusion
            .regexps
            .iter()
            .map(|r| json!({"safe_regex": {"regex": r}}))
            .chain(inclusion.prefixes.iter().map(|p| json!({"prefix": p})))
            .chain(inclusion.suffixes.iter().map(|p| json!({"suffix": p})))
            .chain(
                ["cluster_manager", "listener_manager", "server", "wasm"]
                    .iter()
                    .map(|p| json!({"prefix": p})),
            )
            .collect();
        config["stats_matcher"] = json!({"inclusion_list": {"patterns": patterns}});
    }
    if !stats.histogram_buckets.is_empty() {
        config["histogram_bucket_settings"] = stats
            .histogram_buckets
            .iter()
            .map(|(prefix, buckets)| json!({"match": {"prefix": prefix}, "buckets": buckets}))
            .collect();
    }
    config
}

fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The plugin's filter. When its configuration was refused at load time,
/// the WasmPlugin's failStrategy decides, like Envoy's `failure_policy` does
/// for a plugin that fails at run time: FAIL_OPEN leaves the filter out,
/// FAIL_CLOSE answers every request with 503.
fn wasm_filter(plugin: &PluginPlan, wasm: &Path) -> Option<Value> {
    if plugin.refused {
        return (!plugin.fail_open).then(|| {
            json!({
                "name": format!("{}.fail-closed", plugin.name),
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
                    "abort": {"http_status": 503, "percentage": per_million(100.0)},
                },
            })
        });
    }
    Some(json!({
        "name": plugin.name,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": plugin.name,
                "root_id": plugin.root_id,
                "vm_config": {
                    "vm_id": plugin.name,
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": wasm.display().to_string()}},
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": plugin.configuration,
                },
                // A VM that fails at run time: FAIL_OPEN skips the filter,
                // FAIL_CLOSE answers 503, FAIL_RELOAD starts a new VM.
                "failure_policy": match (plugin.fail_open, plugin.reload) {
                    (true, _) => "FAIL_OPEN",
                    (false, true) => "FAIL_RELOAD",
                    (false, false) => "FAIL_CLOSED",
                },
            },
        },
    }))
}

fn router() -> Value {
    json!({
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
    })
}

/// Filter chain in Istio's order: AUTHN/AUTHZ plugins, fault, other
/// plugins, router.
fn http_filters(plugins: &[PluginPlan], wasm: &Path, with_fault: bool) -> Vec<Value> {
    let mut filters: Vec<Value> = plugins
        .iter()
        .filter(|p| p.early)
        .filter_map(|p| wasm_filter(p, wasm))
        .collect();
    if with_fault {
        filters.push(json!({
            "name": "envoy.filters.http.fault",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"},
        }));
    }
    filters.extend(
        plugins
            .iter()
            .filter(|p| !p.early)
            .filter_map(|p| wasm_filter(p, wasm)),
    );
    filters.push(router());
    filters
}

fn access_log(path: &Path) -> Value {
    json!([{
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": path.display().to_string(),
        },
    }])
}

/// `stat_prefix` has no dots: Envoy's tag extraction stops at the first one,
/// which would leave the listener address in the metric names.
fn listener(
    name: &str,
    port: u16,
    stat_prefix: &str,
    route_config: Value,
    filters: Vec<Value>,
    log: &Path,
) -> Value {
    json!({
        "name": name,
        "address": socket(port),
        "filter_chains": [{
            "filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": stat_prefix,
                    "route_config": route_config,
                    "http_filters": filters,
                    "access_log": access_log(log),
                    "use_remote_address": true,
                },
            }],
        }],
    })
}

fn static_cluster(name: &str, ports: &[u16]) -> Value {
    let endpoints: Vec<Value> = ports
        .iter()
        .map(|p| json!({"endpoint": {"address": socket(*p)}}))
        .collect();
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": endpoints}]},
    })
}

fn string_match(matcher: &StringMatcher) -> Value {
    match matcher {
        StringMatcher::Exact(v) => json!({"exact": v}),
        StringMatcher::Prefix(v) => json!({"prefix": v}),
        StringMatcher::Regex(v) => json!({"safe_regex": {"regex": v}}),
        StringMatcher::Present => Value::Null,
    }
}

fn header_match(header: &HeaderMatch) -> Value {
    let mut m = json!({"name": header.name, "invert_match": header.invert});
    match &header.matcher {
        StringMatcher::Present => m["present_match"] = json!(true),
        other => m["string_match"] = string_match(other),
    }
    m
}

fn fault_config(fault: &FaultPlan) -> Value {
    let mut config =
        json!({"@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"});
    if let Some((delay, percent)) = fault.delay {
        config["delay"] =
            json!({"fixed_delay": duration(delay), "percentage": per_million(percent)});
    }
    if let Some((status, percent)) = fault.abort {
        config["abort"] = json!({"http_status": status, "percentage": per_million(percent)});
    }
    config
}

fn route(plan: &RoutePlan) -> Value {
    let mut m = match &plan.path {
        PathMatch::Prefix(p, case) => json!({"prefix": p, "case_sensitive": case}),
        PathMatch::Exact(p, case) => json!({"path": p, "case_sensitive": case}),
        PathMatch::Regex(r) => json!({"safe_regex": {"regex": r}}),
    };
    if !plan.headers.is_empty() {
        m["headers"] = plan.headers.iter().map(header_match).collect();
    }
    let mut action = json!({"timeout": duration(plan.timeout)});
    if let [(cluster, _)] = plan.destinations.as_slice() {
        action["cluster"] = json!(cluster);
    } else {
        let clusters: Vec<Value> = plan
            .destinations
            .iter()
            .map(|(name, weight)| json!({"name": name, "weight": weight}))
            .collect();
        action["weighted_clusters"] = json!({"clusters": clusters});
    }
    if !plan.mirrors.is_empty() {
        action["request_mirror_policies"] = plan
            .mirrors
            .iter()
            .map(|(cluster, percent)| {
                json!({
                    "cluster": cluster,
                    "runtime_fraction": {"default_value": per_million(*percent)},
                    "trace_sampled": false,
                })
            })
            .collect();
    }
    if let Some(retry) = &plan.retries {
        let mut policy = json!({
            "retry_on": retry.retry_on,
            "num_retries": retry.attempts,
            "retry_host_predicate": [{
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"},
            }],
            "host_selection_retry_max_attempts": 5,
            "retriable_status_codes": [503],
        });
        if let Some(per_try) = retry.per_try_timeout {
            policy["per_try_timeout"] = json!(duration(per_try));
        }
        action["retry_policy"] = policy;
    }
    let mut r = json!({"name": plan.name, "match": m, "route": action});
    for (edits, add_key, remove_key) in [
        (
            &plan.request_headers,
            "request_headers_to_add",
            "request_headers_to_remove",
        ),
        (
            &plan.response_headers,
            "response_headers_to_add",
            "response_headers_to_remove",
        ),
    ] {
        let to_add = headers_to_add(edits);
        if !to_add.is_empty() {
            r[add_key] = json!(to_add);
        }
        if !edits.remove.is_empty() {
            r[remove_key] = json!(edits.remove);
        }
    }
    if let Some(fault) = &plan.fault {
        r["typed_per_filter_config"] = json!({"envoy.filters.http.fault": fault_config(fault)});
    }
    r
}

/// Istio's `set` overwrites a header, `add` appends another value.
fn headers_to_add(edits: &HeaderEdits) -> Vec<Value> {
    let option = |(key, value): &(String, String), action: &str| json!({"header": {"key": key, "value": value}, "append_action": action});
    edits
        .set
        .iter()
        .map(|kv| option(kv, "OVERWRITE_IF_EXISTS_OR_ADD"))
        .chain(
            edits
                .add
                .iter()
                .map(|kv| option(kv, "APPEND_IF_EXISTS_OR_ADD")),
        )
        .collect()
}

/// Where a local Envoy listens and logs.
pub struct ProxyPorts<'a> {
    pub listen: u16,
    pub admin: u16,
    pub access_log: &'a Path,
}

/// The ingress gateway: routes from the VirtualServices, one cluster per
/// DestinationRule subset pointing at that version's sidecar.
pub fn gateway_bootstrap(
    plan: &super::plan::MeshPlan,
    plugins: &[PluginPlan],
    ports: &ProxyPorts<'_>,
    sidecar_ports: &[u16],
    wasm: &Path,
) -> Value {
    let gateway = &plan.gateway;
    let virtual_hosts: Vec<Value> = gateway
        .virtual_hosts
        .iter()
        .map(|vh| {
            json!({
                "name": vh.name,
                "domains": vh.domains,
                "routes": vh.routes.iter().map(route).collect::<Vec<_>>(),
            })
        })
        .collect();
    let with_fault = gateway
        .virtual_hosts
        .iter()
        .flat_map(|v| &v.routes)
        .any(|r| r.fault.is_some());
    let clusters: Vec<Value> = plan
        .clusters
        .iter()
        .map(|ClusterPlan { name, workloads }| {
            let ports: Vec<u16> = workloads.iter().map(|i| sidecar_ports[*i]).collect();
            static_cluster(name, &ports)
        })
        .collect();
    let labels = &gateway.labels;
    json!({
        "node": {
            "id": format!("router~127.0.0.1~{}-local.istio-system~istio-system.svc.cluster.local", gateway.name),
            "cluster": format!("{}.istio-system", labels.get("istio").map_or("istio-ingressgateway", String::as_str)),
            "metadata": {
                "LABELS": labels,
                "NAME": format!("{}-local", gateway.name),
                "NAMESPACE": "istio-system",
                "ISTIO_VERSION": ISTIO_VERSION,
            },
        },
        "admin": admin(ports.admin, Path::new("/dev/null")),
        "stats_config": stats_config(&gateway.stats),
        "static_resources": {
            "listeners": [listener(
                "0.0.0.0_8080",
                ports.listen,
                "outbound_0_0_0_0_8080",
                json!({"name": "http.8080", "virtual_hosts": virtual_hosts}),
                http_filters(plugins, wasm, with_fault),
                ports.access_log,
            )],
            "clusters": clusters,
        },
    })
}

/// A sidecar: inbound listener, the filter in sidecar role, the local
/// model-service process as the inbound cluster.
pub fn sidecar_bootstrap(
    workload: &Workload,
    plugins: &[PluginPlan],
    ports: &ProxyPorts<'_>,
    service_port: u16,
    wasm: &Path,
) -> Value {
    let cluster = format!("inbound|{service_port}||");
    let pod = format!("{}-local", workload.deployment);
    json!({
        "node": {
            "id": format!("sidecar~127.0.0.1~{pod}.default~default.svc.cluster.local"),
            "cluster": format!("{}.default", workload.app()),
            "metadata": {
                "LABELS": workload.labels,
                "NAME": pod,
                "NAMESPACE": "default",
                "WORKLOAD_NAME": workload.deployment,
                "ISTIO_VERSION": ISTIO_VERSION,
            },
        },
        "admin": admin(ports.admin, Path::new("/dev/null")),
        "stats_config": stats_config(&workload.stats),
        "static_resources": {
            "listeners": [listener(
                "virtualInbound",
                ports.listen,
                "inbound_0_0_0_0_15006",
                json!({
                    "name": "inbound|http|0",
                    "virtual_hosts": [{
                        "name": "inbound|http|0",
                        "domains": ["*"],
                        "routes": [{
                            "name": "default",
                            "match": {"prefix": "/"},
                            "route": {"cluster": cluster, "timeout": "0s"},
                        }],
                    }],
                }),
                http_filters(plugins, wasm, false),
                ports.access_log,
            )],
            "clusters": [static_cluster(&cluster, &[service_port])],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::super::plan::RetryPlan;
    use super::*;

    fn plan() -> RoutePlan {
        RoutePlan {
            name: "split".into(),
            path: PathMatch::Prefix("/".into(), true),
            headers: vec![HeaderMatch {
                name: "x-experiment-cohort".into(),
                matcher: StringMatcher::Exact("canary".into()),
                invert: false,
            }],
            destinations: vec![("a".into(), 90), ("b".into(), 10)],
            mirrors: vec![("c".into(), 12.5)],
            timeout: Duration::ZERO,
            retries: Some(RetryPlan {
                attempts: 2,
                retry_on: "connect-failure".into(),
                per_try_timeout: Some(Duration::from_millis(1500)),
            }),
            fault: Some(FaultPlan {
                delay: Some((Duration::from_millis(250), 50.0)),
                abort: None,
            }),
            request_headers: HeaderEdits {
                set: vec![("x-a".into(), "1".into())],
                add: vec![("x-b".into(), "2".into())],
                remove: vec!["x-c".into()],
            },
            response_headers: HeaderEdits::default(),
        }
    }

    #[test]
    fn routes_carry_weights_mirrors_retries_and_faults() {
        let r = route(&plan());
        assert_eq!(r["match"]["headers"][0]["string_match"]["exact"], "canary");
        assert_eq!(r["route"]["weighted_clusters"]["clusters"][1]["weight"], 10);
        let mirror = &r["route"]["request_mirror_policies"][0];
        assert_eq!(mirror["cluster"], "c");
        assert_eq!(
            mirror["runtime_fraction"]["default_value"]["numerator"],
            125_000
        );
        assert_eq!(r["route"]["timeout"], "0.000000000s");
        assert_eq!(
            r["route"]["retry_policy"]["per_try_timeout"],
            "1.500000000s"
        );
        let delay = &r["typed_per_filter_config"]["envoy.filters.http.fault"]["delay"];
        assert_eq!(delay["fixed_delay"], "0.250000000s");
        assert_eq!(delay["percentage"]["numerator"], 500_000);
        let added = &r["request_headers_to_add"];
        assert_eq!(added[0]["header"]["key"], "x-a");
        assert_eq!(added[0]["append_action"], "OVERWRITE_IF_EXISTS_OR_ADD");
        assert_eq!(added[1]["append_action"], "APPEND_IF_EXISTS_OR_ADD");
        assert_eq!(r["request_headers_to_remove"][0], "x-c");
        assert!(r.get("response_headers_to_add").is_none());
    }

    #[test]
    fn a_refused_plugin_follows_its_fail_strategy() {
        let mut plugin = PluginPlan {
            name: "ns.p".into(),
            root_id: String::new(),
            configuration: "{}".into(),
            fail_open: true,
            reload: false,
            early: true,
            priority: 0,
            refused: false,
        };
        let wasm = Path::new("/f.wasm");
        let names = |plugin: &PluginPlan| -> Vec<String> {
            http_filters(std::slice::from_ref(plugin), wasm, true)
                .iter()
                .map(|f| f["name"].as_str().unwrap_or_default().to_string())
                .collect()
        };
        assert_eq!(
            names(&plugin),
            [
                "ns.p",
                "envoy.filters.http.fault",
                "envoy.filters.http.router"
            ]
        );
        plugin.refused = true;
        assert_eq!(
            names(&plugin),
            ["envoy.filters.http.fault", "envoy.filters.http.router"]
        );
        plugin.fail_open = false;
        let filters = http_filters(std::slice::from_ref(&plugin), wasm, false);
        assert_eq!(filters[0]["name"], "ns.p.fail-closed");
        assert_eq!(filters[0]["typed_config"]["abort"]["http_status"], 503);
    }

    #[test]
    fn stat_tags_use_istio_encoding() {
        let stats = ProxyStats {
            tags: vec!["cohort".into()],
            inclusion: Some(super::super::plan::StatsInclusion {
                regexps: vec!["sms_.*".into()],
                prefixes: vec!["wasmcustom.".into()],
                suffixes: Vec::new(),
            }),
            histogram_buckets: vec![("wasmcustom".into(), vec![0.5, 1.0])],
        };
        let config = stats_config(&stats);
        assert_eq!(config["stats_tags"][0]["regex"], "(cohort=\\.=(.*?);\\.;)");
        let patterns = &config["stats_matcher"]["inclusion_list"]["patterns"];
        assert_eq!(patterns[0]["safe_regex"]["regex"], "sms_.*");
        assert_eq!(patterns[1]["prefix"], "wasmcustom.");
        assert_eq!(
            config["histogram_bucket_settings"][0]["match"]["prefix"],
            "wasmcustom"
        );
        assert_eq!(config["histogram_bucket_settings"][0]["buckets"][0], 0.5);
    }
}
