//! `meshctl run --check`: the chart rendered with given values, validated
//! and translated by Istio's own control plane (`istiod-local dump`), each
//! proxy's bootstrap and xDS resources written as JSON; nothing is started.
//! The seed's `--set` variants, and the cases where a re-implementation of
//! Istio had parted ways with Istio, each checked against what Istio makes
//! of them.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;
use sms_checker_tests::mesh::{edited_manifest, filter_wasm, meshctl_run};
use sms_checker_tests::printed;

fn check_with(run_dir: &Path, sets: &[&str], manifest: Option<&Path>) -> Output {
    let mut command = meshctl_run(run_dir);
    command.arg("--check");
    for set in sets {
        command.args(["--set", set]);
    }
    if let Some(manifest) = manifest {
        command.arg("--manifest").arg(manifest);
    }
    command.output().expect("run meshctl")
}

fn checked(run_dir: &Path, sets: &[&str]) -> String {
    let output = check_with(run_dir, sets, None);
    assert!(
        output.status.success(),
        "meshctl run --check {sets:?} failed:\n{}",
        printed(&output)
    );
    printed(&output)
}

/// The dump of the proxy whose pod name starts with `pod`.
fn proxy(run_dir: &Path, pod: &str) -> Value {
    let path = proxy_file(run_dir, pod).unwrap_or_else(|| {
        panic!(
            "no proxy {pod} in {}",
            std::fs::read_to_string(run_dir.join("istio/index.json")).unwrap_or_default()
        )
    });
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    serde_json::from_str(&text).expect("the dump is JSON")
}

fn proxy_file(run_dir: &Path, pod: &str) -> Option<PathBuf> {
    std::fs::read_dir(run_dir.join("istio"))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|f| f.to_str())
                .is_some_and(|f| f.starts_with(pod) && f != "index.json" && f != "plan.json")
        })
}

/// Every HTTP route the proxy was served, from every route configuration.
fn routes(proxy: &Value) -> Vec<Value> {
    proxy["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|rc| rc["virtualHosts"].as_array().cloned().unwrap_or_default())
        .flat_map(|vh| vh["routes"].as_array().cloned().unwrap_or_default())
        .collect()
}

fn domains(proxy: &Value) -> Vec<String> {
    proxy["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|rc| rc["virtualHosts"].as_array().cloned().unwrap_or_default())
        .flat_map(|vh| vh["domains"].as_array().cloned().unwrap_or_default())
        .filter_map(|d| d.as_str().map(str::to_string))
        .collect()
}

fn route<'a>(routes: &'a [Value], name: &str) -> &'a Value {
    routes
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no route {name} in {routes:#?}"))
}

fn weights(route: &Value) -> Vec<(String, u64)> {
    route["route"]["weightedClusters"]["clusters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default().to_string(),
                c["weight"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// The pluginConfig each Wasm filter of the proxy gets over ECDS.
fn plugin_configs(proxy: &Value) -> Vec<(String, Value)> {
    proxy["extensionConfigs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let config = &e["typedConfig"]["config"];
            let json = config["configuration"]["value"].as_str().unwrap_or("{}");
            (
                config["failurePolicy"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                serde_json::from_str(json).expect("pluginConfig JSON"),
            )
        })
        .collect()
}

const V1: &str = "outbound|8081|v1|model-service.default.svc.cluster.local";
const V2: &str = "outbound|8081|v2|model-service.default.svc.cluster.local";
const V3: &str = "outbound|8081|v3|model-service.default.svc.cluster.local";
const GATEWAY: &str = "istio-ingressgateway-0.istio-system";

#[test]
fn default_values_become_what_istio_serves_each_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let output = checked(dir.path(), &[]);
    // What the local mesh does not run is listed, not ignored.
    assert!(
        output.contains("PodDisruptionBudget/model-deployment-v1: no evictions happen locally"),
        "{output}"
    );

    let gateway = proxy(dir.path(), GATEWAY);
    assert!(gateway["id"].as_str().unwrap().starts_with("router~"));
    let routes = routes(&gateway);
    let split = route(&routes, "split");
    assert_eq!(weights(split), [(V1.to_string(), 90), (V2.to_string(), 10)]);
    let canary = route(&routes, "cohort-canary");
    assert_eq!(canary["match"]["headers"][0]["name"], "x-experiment-cohort");
    assert_eq!(
        canary["match"]["headers"][0]["stringMatch"]["exact"],
        "canary"
    );
    assert_eq!(canary["route"]["cluster"], V2);
    for r in [split, canary] {
        let mirror = &r["route"]["requestMirrorPolicies"][0];
        assert_eq!(mirror["cluster"], V3);
        assert_eq!(
            mirror["runtimeFraction"]["defaultValue"]["numerator"],
            1_000_000
        );
        assert_eq!(
            mirror["runtimeFraction"]["defaultValue"]["denominator"],
            "MILLION"
        );
    }
    assert_eq!(domains(&gateway), ["sms-checker.local"]);

    // The cohort filter reaches the gateway over ECDS, pointed at the local
    // module, with the chart's pluginConfig as its configuration.
    let [(policy, config)] = plugin_configs(&gateway)
        .try_into()
        .expect("one Wasm filter");
    assert_eq!(policy, "FAIL_OPEN");
    assert_eq!(config["role"], "gateway");
    assert_eq!(config["cohorts"][0]["weight"], 90);
    let module = &gateway["extensionConfigs"][0]["typedConfig"]["config"]["vmConfig"]["code"]["local"]
        ["filename"];
    assert_eq!(module.as_str(), filter_wasm().to_str());

    // The gateway's bootstrap extracts every label the filter emits (Istio's
    // gateway chart installed with manifests/istio/gateway-values.yaml).
    let tags = gateway["bootstrap"]["stats_config"]["stats_tags"]
        .as_array()
        .expect("stats_tags");
    for tag in sms_checker_filter::metrics::TAG_NAMES {
        assert!(tags.iter().any(|t| t["tag_name"] == tag), "{tag}: {tags:?}");
    }

    for version in ["v1", "v2", "v3"] {
        let sidecar = proxy(dir.path(), &format!("model-deployment-{version}-0"));
        assert!(sidecar["id"].as_str().unwrap().starts_with("sidecar~"));
        let labels = &sidecar["bootstrap"]["node"]["metadata"]["LABELS"];
        assert_eq!(labels["version"], version);
        assert_eq!(labels["app"], "model-service");
        let tags = sidecar["bootstrap"]["stats_config"]["stats_tags"]
            .as_array()
            .unwrap();
        let cohort = tags
            .iter()
            .find(|t| t["tag_name"] == "cohort")
            .expect("cohort stat tag");
        assert_eq!(cohort["regex"], "(cohort=\\.=(.*?);\\.;)");
        let [(_, config)] = plugin_configs(&sidecar)
            .try_into()
            .expect("one Wasm filter");
        assert_eq!(config["role"], "sidecar");
        assert_eq!(config["version"], version);
        assert_eq!(config["mirrored"], version == "v3");
        // Inbound: Istio's listener for redirected traffic carries the filter.
        let inbound = sidecar["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == "virtualInbound")
            .expect("the virtualInbound listener");
        assert!(
            inbound.to_string().contains("sms-checker-cohort-"),
            "{inbound}"
        );
    }
}

#[test]
fn the_seeds_set_variants_go_through_istio() {
    // 95/5.
    let dir = tempfile::tempdir().unwrap();
    checked(
        dir.path(),
        &["istio.trafficSplit.stable=95,istio.trafficSplit.canary=5"],
    );
    let gateway = proxy(dir.path(), GATEWAY);
    assert_eq!(
        weights(route(&routes(&gateway), "split")),
        [(V1.to_string(), 95), (V2.to_string(), 5)]
    );
    let [(_, config)] = plugin_configs(&gateway)
        .try_into()
        .expect("one Wasm filter");
    assert_eq!(config["cohorts"][1]["weight"], 5);

    // A custom host.
    let dir = tempfile::tempdir().unwrap();
    checked(dir.path(), &["istio.host=custom.grader.local"]);
    assert_eq!(
        domains(&proxy(dir.path(), GATEWAY)),
        ["custom.grader.local"]
    );

    // No canary: no v2 pod, no route to v2.
    let dir = tempfile::tempdir().unwrap();
    checked(dir.path(), &["versions.v2.enabled=false"]);
    assert!(proxy_file(dir.path(), "model-deployment-v2").is_none());
    assert!(proxy_file(dir.path(), "model-deployment-v1").is_some());
    let served = routes(&proxy(dir.path(), GATEWAY));
    assert!(
        served.iter().all(|r| !r.to_string().contains("|v2|")),
        "{served:#?}"
    );
    assert_eq!(route(&served, "split")["route"]["cluster"], V1);

    // Another ingress gateway: Istio's gateway chart under the release that
    // gives its pods `istio: custom-gateway`, which the Gateway selects.
    let dir = tempfile::tempdir().unwrap();
    checked(
        dir.path(),
        &["istio.gateway.ingressGatewaySelector=custom-gateway"],
    );
    assert!(proxy_file(dir.path(), GATEWAY).is_none());
    let custom = proxy(dir.path(), "istio-custom-gateway-0.istio-system");
    assert_eq!(
        custom["bootstrap"]["node"]["metadata"]["LABELS"]["istio"],
        "custom-gateway"
    );
    assert_eq!(
        weights(route(&routes(&custom), "split")),
        [(V1.to_string(), 90), (V2.to_string(), 10)]
    );
    assert_eq!(
        plugin_configs(&custom).len(),
        1,
        "the gateway filter follows the selector"
    );
}

/// Istio looks WasmPlugins up in the proxy's namespace (and the root
/// namespace): with the gateway in `ingress`, the chart puts the gateway
/// plugin there, and Istio applies it to the gateway there.
#[test]
fn a_gateway_in_its_own_namespace_gets_its_plugin_there() {
    let dir = tempfile::tempdir().unwrap();
    checked(dir.path(), &["istio.gateway.namespace=ingress"]);
    let gateway = proxy(dir.path(), "istio-ingressgateway-0.ingress");
    let [(_, config)] = plugin_configs(&gateway)
        .try_into()
        .expect("one Wasm filter");
    assert_eq!(config["role"], "gateway");
    assert!(
        gateway["extensionConfigs"][0]["name"]
            .as_str()
            .unwrap()
            .contains("/ingress.sms-checker-cohort-gateway~"),
        "{}",
        gateway["extensionConfigs"][0]["name"]
    );
}

/// A wildcard host is served as Istio serves it: a wildcard domain.
#[test]
fn a_wildcard_host_is_a_wildcard_domain() {
    let dir = tempfile::tempdir().unwrap();
    checked(dir.path(), &["istio.host=*.grader.local"]);
    assert_eq!(domains(&proxy(dir.path(), GATEWAY)), ["*.grader.local"]);
}

/// Istio moves numeric `retryOn` tokens into retriable status codes.
#[test]
fn retry_on_status_codes_become_retriable_status_codes() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = edited_manifest(dir.path(), |yaml| {
        yaml.replacen(
            "    - name: split\n",
            "    - name: split\n      retries:\n        attempts: 3\n        retryOn: gateway-error,503,429\n",
            1,
        )
    });
    let output = check_with(dir.path(), &[], Some(&manifest));
    assert!(output.status.success(), "{}", printed(&output));
    let split = route(&routes(&proxy(dir.path(), GATEWAY)), "split").clone();
    let retry = &split["route"]["retryPolicy"];
    assert_eq!(retry["numRetries"], 3, "{retry}");
    assert_eq!(
        retry["retryOn"], "gateway-error,retriable-status-codes",
        "{retry}"
    );
    assert_eq!(
        retry["retriableStatusCodes"],
        serde_json::json!([503, 429]),
        "{retry}"
    );
}

/// A resource Istio's validation refuses stops meshctl with Istio's message.
#[test]
fn a_resource_istio_rejects_stops_meshctl_with_istios_message() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = edited_manifest(dir.path(), |yaml| {
        yaml.replacen("        value: 100\n", "        value: 150\n", 1)
    });
    let output = check_with(dir.path(), &[], Some(&manifest));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("Istio rejects the configuration")
            && stderr.contains("VirtualService/model-service.default")
            && stderr.contains("mirror_percentage must have a max value of 100"),
        "{stderr}"
    );
}

#[test]
fn routes_attached_to_a_gateway_outside_the_chart_are_served_by_a_stand_in() {
    let dir = tempfile::tempdir().unwrap();
    let output = checked(dir.path(), &["istio.gateway.enabled=false"]);
    assert!(output.contains("not in the chart; a stand-in"), "{output}");
    let gateway = proxy(dir.path(), GATEWAY);
    assert_eq!(
        weights(route(&routes(&gateway), "split")),
        [(V1.to_string(), 90), (V2.to_string(), 10)]
    );
    assert_eq!(domains(&gateway), ["sms-checker.local"]);
}

#[test]
fn values_the_chart_refuses_stop_meshctl_with_helms_message() {
    let dir = tempfile::tempdir().unwrap();
    let output = check_with(dir.path(), &["istio.trafficSplit.stable=95"], None);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("helm template failed") && stderr.contains("must add up to 100"),
        "{stderr}"
    );
}
