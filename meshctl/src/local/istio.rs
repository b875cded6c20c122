//! The parts of the Istio and Kubernetes APIs the local mesh translates.
//!
//! Every struct keeps the fields it does not know in `extra`, so the
//! translator can report them instead of dropping them silently.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;

pub type Extra = BTreeMap<String, Value>;

/// Fields of a struct the local mesh does not know, as JSON-pointer-like paths.
pub fn unknown_fields(prefix: &str, extra: &Extra) -> Vec<String> {
    extra.keys().map(|key| format!("{prefix}.{key}")).collect()
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    #[serde(default)]
    pub servers: Vec<Server>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Server {
    pub port: Option<Port>,
    #[serde(default)]
    pub hosts: Vec<String>,
    pub tls: Option<Value>,
    /// Accepted: no local effect.
    #[serde(default, rename = "name")]
    _name: Option<IgnoredAny>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
pub struct Port {
    pub number: Option<u32>,
    pub protocol: Option<String>,
    /// Accepted: no local effect.
    #[serde(default, rename = "name")]
    _name: Option<IgnoredAny>,
    #[serde(default, rename = "targetPort")]
    _target_port: Option<IgnoredAny>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct VirtualServiceSpec {
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub gateways: Vec<String>,
    #[serde(default)]
    pub http: Vec<HttpRoute>,
    pub tcp: Option<Value>,
    pub tls: Option<Value>,
    /// Accepted: one namespace locally.
    #[serde(default, rename = "exportTo")]
    _export_to: Option<IgnoredAny>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRoute {
    pub name: Option<String>,
    #[serde(default, rename = "match")]
    pub matches: Vec<HttpMatch>,
    #[serde(default)]
    pub route: Vec<RouteDestination>,
    pub timeout: Option<String>,
    pub retries: Option<Retries>,
    pub fault: Option<Fault>,
    pub mirror: Option<Destination>,
    pub mirror_percentage: Option<Percent>,
    #[serde(default)]
    pub mirrors: Vec<Mirror>,
    pub redirect: Option<Value>,
    pub direct_response: Option<Value>,
    pub delegate: Option<Value>,
    pub rewrite: Option<Value>,
    pub cors_policy: Option<Value>,
    pub headers: Option<Headers>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpMatch {
    #[serde(default, rename = "name")]
    _name: Option<IgnoredAny>,
    pub uri: Option<StringMatch>,
    pub method: Option<StringMatch>,
    #[serde(default)]
    pub headers: BTreeMap<String, StringMatch>,
    #[serde(default)]
    pub without_headers: BTreeMap<String, StringMatch>,
    pub ignore_uri_case: Option<bool>,
    pub authority: Option<Value>,
    pub scheme: Option<Value>,
    pub port: Option<Value>,
    pub query_params: Option<Value>,
    pub source_labels: Option<Value>,
    pub gateways: Option<Value>,
    pub source_namespace: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StringMatch {
    pub exact: Option<String>,
    pub prefix: Option<String>,
    pub regex: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteDestination {
    pub destination: Destination,
    pub weight: Option<u32>,
    pub headers: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
pub struct Destination {
    pub host: String,
    pub subset: Option<String>,
    pub port: Option<Port>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mirror {
    pub destination: Destination,
    pub percentage: Option<Percent>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Deserialize, Clone, Copy)]
pub struct Percent {
    pub value: f64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Retries {
    pub attempts: Option<u32>,
    pub per_try_timeout: Option<String>,
    pub retry_on: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fault {
    pub delay: Option<Delay>,
    pub abort: Option<Abort>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delay {
    pub fixed_delay: Option<String>,
    pub percentage: Option<Percent>,
    pub percent: Option<u32>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Abort {
    pub http_status: Option<u32>,
    pub percentage: Option<Percent>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct DestinationRuleSpec {
    pub host: String,
    #[serde(default)]
    pub subsets: Vec<Subset>,
    pub traffic_policy: Option<Value>,
    /// Accepted: one namespace locally.
    #[serde(default, rename = "exportTo")]
    _export_to: Option<IgnoredAny>,
    pub workload_selector: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subset {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub traffic_policy: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct WasmPluginSpec {
    pub selector: Option<Selector>,
    pub target_refs: Option<Value>,
    pub target_ref: Option<Value>,
    pub url: Option<String>,
    /// Accepted: the module comes from the local build.
    #[serde(default, rename = "sha256")]
    _sha256: Option<IgnoredAny>,
    #[serde(default, rename = "imagePullPolicy")]
    _image_pull_policy: Option<IgnoredAny>,
    #[serde(default, rename = "imagePullSecret")]
    _image_pull_secret: Option<IgnoredAny>,
    pub plugin_config: Option<Value>,
    pub plugin_name: Option<String>,
    pub phase: Option<String>,
    pub priority: Option<i64>,
    pub fail_strategy: Option<String>,
    pub vm_config: Option<Value>,
    #[serde(default, rename = "match")]
    pub matches: Vec<PluginMatch>,
    #[serde(rename = "type")]
    pub plugin_type: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(rename_all = "camelCase")]
pub struct Selector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginMatch {
    pub mode: Option<String>,
    pub ports: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct StatsMatcher {
    #[serde(default)]
    pub inclusion_regexps: Vec<String>,
    #[serde(default)]
    pub inclusion_prefixes: Vec<String>,
    #[serde(default)]
    pub inclusion_suffixes: Vec<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// Header edits of a route: `headers.request` and `headers.response`.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(rename_all = "camelCase")]
pub struct Headers {
    pub request: Option<HeaderOperations>,
    pub response: Option<HeaderOperations>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(rename_all = "camelCase")]
pub struct HeaderOperations {
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `proxy.istio.io/config`: the per-pod proxy settings, of which the local
/// mesh uses the stat tags and the stats matcher.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ProxyConfig {
    #[serde(default)]
    pub extra_stat_tags: Vec<String>,
    pub proxy_stats_matcher: Option<StatsMatcher>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_kept_for_reporting() {
        let spec: VirtualServiceSpec = serde_json::from_value(serde_json::json!({
            "hosts": ["a"],
            "http": [{"route": [{"destination": {"host": "svc"}}], "bogus": 1}],
            "extra_top": true
        }))
        .unwrap();
        assert_eq!(unknown_fields("spec", &spec.extra), ["spec.extra_top"]);
        assert_eq!(
            unknown_fields("spec.http[0]", &spec.http[0].extra),
            ["spec.http[0].bogus"]
        );
    }
}
