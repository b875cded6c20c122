//! `meshctl run --check`: the chart rendered with given values, translated,
//! and validated by the real Envoy, without starting anything.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use sms_checker_tests::mesh::{filter_wasm, meshctl_bin};
use sms_checker_tests::{envoy_bin, helm_bin, workspace_root};

fn check(run_dir: &Path, sets: &[&str]) -> Output {
    let mut command = Command::new(meshctl_bin());
    command
        .current_dir(workspace_root())
        .args(["run", "--check", "--run-dir"])
        .arg(run_dir)
        .arg("--helm")
        .arg(helm_bin())
        .arg("--envoy")
        .arg(envoy_bin())
        .arg("--wasm")
        .arg(filter_wasm());
    for set in sets {
        command.args(["--set", set]);
    }
    command.output().expect("run meshctl")
}

fn checked(run_dir: &Path, sets: &[&str]) -> String {
    let output = check(run_dir, sets);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "meshctl run --check {sets:?} failed:\n{text}"
    );
    text
}

fn json(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    serde_json::from_str(&text).expect("generated configs are JSON")
}

fn routes_of(gateway: &Value) -> Vec<Value> {
    gateway["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]
        ["virtual_hosts"]
        .as_array()
        .expect("virtual hosts")
        .iter()
        .flat_map(|vh| vh["routes"].as_array().cloned().unwrap_or_default())
        .collect()
}

fn route<'a>(routes: &'a [Value], name: &str) -> &'a Value {
    routes
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no route {name} in {routes:#?}"))
}

fn weights(route: &Value) -> Vec<(String, u64)> {
    route["route"]["weighted_clusters"]["clusters"]
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

const V1: &str = "outbound|8081|v1|model-service.default.svc.cluster.local";
const V2: &str = "outbound|8081|v2|model-service.default.svc.cluster.local";
const V3: &str = "outbound|8081|v3|model-service.default.svc.cluster.local";

#[test]
fn default_values_become_istio_shaped_envoy_configs() {
    let dir = tempfile::tempdir().unwrap();
    let output = checked(dir.path(), &[]);
    // What the local mesh cannot reproduce is listed, not ignored.
    for (object, what) in [
        (
            "PodDisruptionBudget/model-deployment-v1",
            ": not reproduced",
        ),
        (
            "Deployment/model-deployment-v1",
            "containers[0].resources not reproduced",
        ),
        (
            "VirtualService/model-service",
            "spec.gateways not reproduced",
        ),
    ] {
        assert!(
            output
                .lines()
                .any(|line| line.contains(object) && line.contains(what)),
            "missing {object} {what:?} in:\n{output}"
        );
    }

    let gateway = json(&dir.path().join("gateway.json"));
    let routes = routes_of(&gateway);
    let split = route(&routes, "split");
    assert_eq!(weights(split), [(V1.to_string(), 90), (V2.to_string(), 10)]);
    let canary = route(&routes, "cohort-canary");
    assert_eq!(canary["match"]["headers"][0]["name"], "x-experiment-cohort");
    assert_eq!(
        canary["match"]["headers"][0]["string_match"]["exact"],
        "canary"
    );
    assert_eq!(canary["route"]["cluster"], V2);
    for r in [split, canary] {
        let mirror = &r["route"]["request_mirror_policies"][0];
        assert_eq!(mirror["cluster"], V3);
        assert_eq!(
            mirror["runtime_fraction"]["default_value"]["numerator"],
            1_000_000
        );
    }
    let filters = &gateway["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["http_filters"];
    let wasm = &filters[0]["typed_config"]["config"];
    assert_eq!(wasm["failure_policy"], "FAIL_OPEN");
    let plugin_config: Value =
        serde_json::from_str(wasm["configuration"]["value"].as_str().unwrap())
            .expect("pluginConfig JSON");
    assert_eq!(plugin_config["role"], "gateway");
    assert_eq!(plugin_config["cohorts"][0]["weight"], 90);
    let domains = &gateway["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["route_config"]["virtual_hosts"][0]["domains"];
    for domain in ["sms-checker.local", "localhost", "127.0.0.1:*"] {
        assert!(
            domains.as_array().unwrap().iter().any(|d| d == domain),
            "{domain} not in {domains}"
        );
    }

    // The gateway extracts the same labels as the sidecars.
    let gateway_tags = gateway["stats_config"]["stats_tags"]
        .as_array()
        .expect("gateway stats_tags");
    assert!(
        gateway_tags.iter().any(|t| t["tag_name"] == "cohort"),
        "{gateway_tags:?}"
    );

    for version in ["v1", "v2", "v3"] {
        let sidecar = json(&dir.path().join(format!("sidecar-{version}.json")));
        assert_eq!(sidecar["node"]["metadata"]["LABELS"]["version"], version);
        assert_eq!(
            sidecar["node"]["metadata"]["LABELS"]["app"],
            "model-service"
        );
        let tags = sidecar["stats_config"]["stats_tags"].as_array().unwrap();
        let cohort = tags
            .iter()
            .find(|t| t["tag_name"] == "cohort")
            .expect("cohort stat tag");
        assert_eq!(cohort["regex"], "(cohort=\\.=(.*?);\\.;)");
        let filters = &sidecar["static_resources"]["listeners"][0]["filter_chains"][0]["filters"]
            [0]["typed_config"]["http_filters"];
        let config: Value = serde_json::from_str(
            filters[0]["typed_config"]["config"]["configuration"]["value"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(config["role"], "sidecar");
        assert_eq!(config["version"], version);
    }
}

#[test]
fn set_values_change_the_configs_like_helm_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    checked(
        dir.path(),
        &["istio.trafficSplit.stable=95,istio.trafficSplit.canary=5"],
    );
    let routes = routes_of(&json(&dir.path().join("gateway.json")));
    assert_eq!(
        weights(route(&routes, "split")),
        [(V1.to_string(), 95), (V2.to_string(), 5)]
    );

    let dir = tempfile::tempdir().unwrap();
    checked(dir.path(), &["versions.v2.enabled=false"]);
    assert!(
        !dir.path().join("sidecar-v2.json").exists(),
        "no sidecar for a disabled version"
    );
    assert!(dir.path().join("sidecar-v1.json").exists());
    let routes = routes_of(&json(&dir.path().join("gateway.json")));
    assert!(
        routes.iter().all(|r| !r.to_string().contains("|v2|")),
        "{routes:#?}"
    );

    let dir = tempfile::tempdir().unwrap();
    checked(
        dir.path(),
        &[
            "versions.v2.fault.abort.percentage=10",
            "istio.host=custom.grader.local",
        ],
    );
    let gateway = json(&dir.path().join("gateway.json"));
    let routes = routes_of(&gateway);
    let abort = &route(&routes, "cohort-canary")["typed_per_filter_config"]["envoy.filters.http.fault"]
        ["abort"];
    assert_eq!(abort["http_status"], 503);
    assert_eq!(abort["percentage"]["numerator"], 100_000);
    assert!(gateway.to_string().contains("\"custom.grader.local\""));
}

#[test]
fn routes_attached_to_a_gateway_outside_the_chart_are_served_by_a_stand_in() {
    let dir = tempfile::tempdir().unwrap();
    let output = checked(dir.path(), &["istio.gateway.enabled=false"]);
    assert!(
        output.contains("the local gateway stands in for it"),
        "{output}"
    );
    let routes = routes_of(&json(&dir.path().join("gateway.json")));
    assert_eq!(
        weights(route(&routes, "split")),
        [(V1.to_string(), 90), (V2.to_string(), 10)]
    );
}

#[test]
fn values_the_chart_refuses_stop_meshctl_with_helms_message() {
    let dir = tempfile::tempdir().unwrap();
    let output = check(dir.path(), &["istio.trafficSplit.stable=95"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("helm template failed") && stderr.contains("must add up to 100"),
        "{stderr}"
    );
}
