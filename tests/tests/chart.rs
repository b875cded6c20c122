//! The Helm chart, rendered by the real helm and validated against the real
//! schemas (Kubernetes with kubernetes-validate, strict; Istio's CRDs): the
//! experiment it routes, and the seed's `--set` variants.

use serde_json::json;
use sms_checker_tests::chart::{self, describe, find, of_kind};
use sms_checker_tests::rendered::{
    all_cohorts, assert_mirror, dest, destinations, get, names_of, pair, plugin_config,
    render_valid, route, subsets, virtual_service,
};

#[test]
fn lint_strict_passes_for_defaults_and_seed_values() {
    let chart = chart::chart_dir();
    let chart = chart.to_string_lossy();
    for sets in [
        vec![],
        vec![
            "istio.trafficSplit.stable=95",
            "istio.trafficSplit.canary=5",
        ],
        vec!["versions.v2.enabled=false"],
        vec!["istio.host=custom.grader.local"],
        vec!["istio.gateway.ingressGatewaySelector=custom-gateway"],
        vec![
            "security.authorizationPolicy.enabled=true",
            "security.peerAuthentication.enabled=true",
            "security.networkPolicy.enabled=true",
        ],
    ] {
        let mut args = vec!["lint", "--strict", chart.as_ref()];
        for set in &sets {
            args.extend(["--set", set]);
        }
        let out = chart::helm(&args).unwrap_or_else(|e| panic!("{e}"));
        assert!(out.contains("0 chart(s) failed"), "helm lint: {out}");
    }
}

#[test]
fn defaults_render_the_experiment() {
    let objects = render_valid(&[]);

    assert_eq!(
        names_of(&objects, "Deployment"),
        [
            "model-deployment-v1",
            "model-deployment-v2",
            "model-deployment-v3"
        ]
    );
    let service = get(&objects, "Service", "model-service");
    assert_eq!(service["spec"]["ports"][0]["port"], 8081);
    assert_eq!(service["spec"]["ports"][0]["name"], "http");
    assert_eq!(service["spec"]["selector"]["app"], "model-service");
    assert_eq!(subsets(&objects), ["v1", "v2", "v3"]);

    let gateway = get(&objects, "Gateway", "sms-checker-gateway");
    assert_eq!(
        gateway["spec"]["selector"],
        json!({"istio": "ingressgateway"})
    );
    assert_eq!(
        gateway["spec"]["servers"][0]["hosts"],
        json!(["sms-checker.local"])
    );

    let vs = virtual_service(&objects);
    assert_eq!(vs["spec"]["hosts"][0], "sms-checker.local");
    assert_eq!(
        vs["spec"]["gateways"],
        json!(["sms-checker-gateway", "mesh"])
    );
    let canary = route(vs, "cohort-canary").expect("canary route");
    assert_eq!(
        canary["match"][0]["headers"]["x-experiment-cohort"],
        json!({"exact": "canary"})
    );
    assert_eq!(destinations(canary), [dest("v2", None)]);
    let stable = route(vs, "cohort-stable").expect("stable route");
    assert_eq!(
        stable["match"][0]["headers"]["x-experiment-cohort"],
        json!({"exact": "stable"})
    );
    assert_eq!(destinations(stable), [dest("v1", None)]);
    let split = route(vs, "split").expect("weighted route");
    assert!(
        split.get("match").is_none(),
        "the split is the default route"
    );
    assert_eq!(
        destinations(split),
        [dest("v1", Some(90)), dest("v2", Some(10))]
    );
    // Header routes come first: Istio takes the first match.
    let order: Vec<&str> = vs["spec"]["http"]
        .as_array()
        .expect("routes")
        .iter()
        .map(|r| r["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(order, ["cohort-canary", "cohort-stable", "split"]);
    for r in [canary, stable, split] {
        assert_mirror(r, 100.0);
        assert!(r.get("fault").is_none(), "no fault by default");
    }

    assert_eq!(
        all_cohorts(&objects),
        [pair("stable", 90), pair("canary", 10)]
    );
}

#[test]
fn wasm_plugins_run_before_routing_with_the_contract_config() {
    let objects = render_valid(&[]);
    assert_eq!(
        names_of(&objects, "WasmPlugin"),
        [
            "sms-checker-cohort-gateway",
            "sms-checker-cohort-v1",
            "sms-checker-cohort-v2",
            "sms-checker-cohort-v3"
        ]
    );
    for plugin in of_kind(&objects, "WasmPlugin") {
        let spec = &plugin["spec"];
        assert_eq!(spec["phase"], "AUTHN", "{}", describe(plugin));
        assert_eq!(spec["failStrategy"], "FAIL_OPEN");
        assert_eq!(spec["type"], "HTTP");
        assert!(
            spec["url"].as_str().unwrap_or("").starts_with("oci://"),
            "default url is an OCI image"
        );
        assert!(spec.get("sha256").is_none(), "no sha256 unless set");
    }

    let gateway = get(&objects, "WasmPlugin", "sms-checker-cohort-gateway");
    assert_eq!(gateway["metadata"]["namespace"], "istio-system");
    assert_eq!(
        gateway["spec"]["selector"]["matchLabels"],
        json!({"istio": "ingressgateway"})
    );
    assert_eq!(
        gateway["spec"]["pluginConfig"],
        json!({
            "role": "gateway",
            "experiment": "sms-model",
            "cohortHeader": "x-experiment-cohort",
            "cohorts": [{"name": "stable", "weight": 90}, {"name": "canary", "weight": 10}],
            "salt": "sms-checker",
            "responseHeader": "x-experiment-cohort",
            "cookie": {"name": "sms-checker-uid", "maxAgeSeconds": 2592000, "secure": false}
        })
    );

    for (version, mirrored) in [("v1", false), ("v2", false), ("v3", true)] {
        let plugin = get(
            &objects,
            "WasmPlugin",
            &format!("sms-checker-cohort-{version}"),
        );
        assert_eq!(plugin["metadata"]["namespace"], "demo");
        assert_eq!(plugin["spec"]["match"], json!([{"mode": "SERVER"}]));
        let labels = &plugin["spec"]["selector"]["matchLabels"];
        assert_eq!(labels["app"], "model-service");
        assert_eq!(labels["version"], version);
        // The selector must pick exactly this version's pods.
        let deployment = get(
            &objects,
            "Deployment",
            &format!("model-deployment-{version}"),
        );
        let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
        for (key, value) in labels.as_object().expect("matchLabels") {
            assert_eq!(&pod_labels[key], value, "pod label {key} of {version}");
        }
        assert_eq!(
            plugin["spec"]["pluginConfig"],
            json!({
                "role": "sidecar",
                "experiment": "sms-model",
                "cohortHeader": "x-experiment-cohort",
                "cohorts": [{"name": "stable", "weight": 90}, {"name": "canary", "weight": 10}],
                "version": version,
                "predictionHeader": "x-model-prediction",
                "mirrored": mirrored,
                "shadowHostSuffix": "-shadow"
            })
        );
    }
}

#[test]
fn experiment_values_flow_into_the_filter_config() {
    let token_sha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    let objects = render_valid(&[
        ("experiment.name", "spam-v2-trial"),
        ("experiment.cohortHeader", "x-cohort"),
        ("experiment.responseHeader", "x-my-cohort"),
        ("experiment.clearRouteCache", "true"),
        ("experiment.salt", "pepper"),
        ("experiment.userIdHeader", "x-user-id"),
        ("experiment.cookie.name", "uid"),
        ("experiment.cookie.maxAgeSeconds", "3600"),
        ("experiment.cookie.secure", "true"),
        ("experiment.override.tokenSha256", token_sha),
        ("filter.predictionHeader", "x-prediction"),
        ("filter.shadowHostSuffix", "-mirror"),
    ]);
    assert_eq!(
        plugin_config(&objects, "sms-checker-cohort-gateway"),
        &json!({
            "role": "gateway",
            "experiment": "spam-v2-trial",
            "cohortHeader": "x-cohort",
            "cohorts": [{"name": "stable", "weight": 90}, {"name": "canary", "weight": 10}],
            "salt": "pepper",
            "userIdHeader": "x-user-id",
            "responseHeader": "x-my-cohort",
            "clearRouteCache": true,
            "cookie": {"name": "uid", "maxAgeSeconds": 3600, "secure": true},
            "override": {
                "header": "x-experiment-override",
                "tokenHeader": "x-experiment-override-token",
                "tokenSha256": token_sha
            }
        })
    );
    let sidecar = plugin_config(&objects, "sms-checker-cohort-v2");
    assert_eq!(sidecar["predictionHeader"], "x-prediction");
    assert_eq!(sidecar["shadowHostSuffix"], "-mirror");
    assert_eq!(sidecar["cohortHeader"], "x-cohort");
    // The VirtualService routes on the header the filter sets.
    let vs = virtual_service(&objects);
    let canary = route(vs, "cohort-canary").expect("canary route");
    assert_eq!(
        canary["match"][0]["headers"]["x-cohort"],
        json!({"exact": "canary"})
    );
}

#[test]
fn seed_split_95_5() {
    let objects = render_valid(&[
        ("istio.trafficSplit.stable", "95"),
        ("istio.trafficSplit.canary", "5"),
    ]);
    let split = route(virtual_service(&objects), "split").expect("weighted route");
    assert_eq!(
        destinations(split),
        [dest("v1", Some(95)), dest("v2", Some(5))]
    );
    assert_eq!(
        all_cohorts(&objects),
        [pair("stable", 95), pair("canary", 5)]
    );
}

#[test]
fn seed_custom_host() {
    let objects = render_valid(&[("istio.host", "custom.grader.local")]);
    let gateway = get(&objects, "Gateway", "sms-checker-gateway");
    assert_eq!(
        gateway["spec"]["servers"][0]["hosts"],
        json!(["custom.grader.local"])
    );
    let vs = virtual_service(&objects);
    assert_eq!(
        vs["spec"]["hosts"],
        json!(["custom.grader.local", "model-service"])
    );
}

#[test]
fn seed_canary_disabled_puts_everyone_in_stable() {
    let objects = render_valid(&[("versions.v2.enabled", "false")]);
    assert_eq!(
        names_of(&objects, "Deployment"),
        ["model-deployment-v1", "model-deployment-v3"]
    );
    assert_eq!(
        names_of(&objects, "PodDisruptionBudget"),
        ["model-deployment-v1", "model-deployment-v3"]
    );
    assert_eq!(subsets(&objects), ["v1", "v3"]);
    let vs = virtual_service(&objects);
    assert!(route(vs, "cohort-canary").is_none(), "no canary route");
    assert_eq!(
        destinations(route(vs, "cohort-stable").expect("stable route")),
        [dest("v1", None)]
    );
    let split = route(vs, "split").expect("default route");
    assert_eq!(destinations(split), [dest("v1", Some(100))]);
    assert_mirror(split, 100.0);
    let text = serde_json::to_string(vs).expect("json");
    assert!(
        !text.contains("\"v2\""),
        "v2 left in the VirtualService: {text}"
    );
    assert!(find(&objects, "WasmPlugin", "sms-checker-cohort-v2").is_none());
    assert_eq!(all_cohorts(&objects), [pair("stable", 100)]);
}

#[test]
fn seed_custom_ingress_gateway_selector() {
    let objects = render_valid(&[("istio.gateway.ingressGatewaySelector", "custom-gateway")]);
    let gateway = get(&objects, "Gateway", "sms-checker-gateway");
    assert_eq!(
        gateway["spec"]["selector"],
        json!({"istio": "custom-gateway"})
    );
    let plugin = get(&objects, "WasmPlugin", "sms-checker-cohort-gateway");
    assert_eq!(
        plugin["spec"]["selector"]["matchLabels"],
        json!({"istio": "custom-gateway"})
    );
}

#[test]
fn shadow_disabled_removes_the_mirror() {
    let objects = render_valid(&[("versions.v3.enabled", "false")]);
    assert_eq!(
        names_of(&objects, "Deployment"),
        ["model-deployment-v1", "model-deployment-v2"]
    );
    assert_eq!(subsets(&objects), ["v1", "v2"]);
    for r in virtual_service(&objects)["spec"]["http"]
        .as_array()
        .expect("routes")
    {
        assert!(r.get("mirror").is_none(), "mirror left on {}", r["name"]);
        assert!(r.get("mirrorPercentage").is_none());
    }
    assert!(find(&objects, "WasmPlugin", "sms-checker-cohort-v3").is_none());
}

#[test]
fn mirror_percentage_applies_to_every_live_route() {
    let objects = render_valid(&[("istio.mirror.percentage", "12.5")]);
    let vs = virtual_service(&objects);
    let routes = vs["spec"]["http"].as_array().expect("routes");
    assert_eq!(routes.len(), 3);
    for r in routes {
        assert_mirror(r, 12.5);
    }
}

#[test]
fn zero_percent_canary_keeps_the_override_route() {
    let objects = render_valid(&[
        ("istio.trafficSplit.stable", "100"),
        ("istio.trafficSplit.canary", "0"),
    ]);
    let vs = virtual_service(&objects);
    assert_eq!(
        destinations(route(vs, "split").expect("default route")),
        [dest("v1", Some(100))]
    );
    assert!(route(vs, "cohort-canary").is_some());
    assert_eq!(
        all_cohorts(&objects),
        [pair("stable", 100), pair("canary", 0)]
    );
}

#[test]
fn faults_apply_only_to_routes_of_their_version() {
    let objects = render_valid(&[
        ("versions.v2.fault.abort.percentage", "10"),
        ("versions.v2.fault.abort.httpStatus", "500"),
        ("versions.v2.fault.delay.percentage", "50"),
        ("versions.v2.fault.delay.fixedDelay", "250ms"),
    ]);
    let vs = virtual_service(&objects);
    let canary = route(vs, "cohort-canary").expect("canary route");
    assert_eq!(
        canary["fault"],
        json!({
            "abort": {"percentage": {"value": 10}, "httpStatus": 500},
            "delay": {"percentage": {"value": 50}, "fixedDelay": "250ms"}
        })
    );
    assert!(
        route(vs, "cohort-stable")
            .expect("stable")
            .get("fault")
            .is_none()
    );
    // The weighted route also reaches v1: a route-level fault would hit it.
    assert!(route(vs, "split").expect("split").get("fault").is_none());

    let objects = render_valid(&[("versions.v1.fault.delay.percentage", "100")]);
    let stable = route(virtual_service(&objects), "cohort-stable").expect("stable route");
    assert_eq!(
        stable["fault"],
        json!({"delay": {"percentage": {"value": 100}, "fixedDelay": "1s"}})
    );

    // With v2 off the default route is v1 alone, so v1's fault applies there too.
    let objects = render_valid(&[
        ("versions.v2.enabled", "false"),
        ("versions.v1.fault.abort.percentage", "5"),
    ]);
    let split = route(virtual_service(&objects), "split").expect("split");
    assert_eq!(
        split["fault"],
        json!({"abort": {"percentage": {"value": 5}, "httpStatus": 503}})
    );
}
