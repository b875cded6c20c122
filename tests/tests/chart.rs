//! The Helm chart, rendered by the real helm and validated against the real
//! schemas: Kubernetes (kubernetes-validate, strict) and Istio's CRDs.

use std::sync::OnceLock;

use serde_json::{Value, json};
use sms_checker_tests::chart::{
    self, IstioSchemas, KUBERNETES_VERSION, describe, find, of_kind, render,
};

fn istio() -> &'static IstioSchemas {
    static SCHEMAS: OnceLock<IstioSchemas> = OnceLock::new();
    SCHEMAS.get_or_init(|| IstioSchemas::load().unwrap_or_else(|e| panic!("{e}")))
}

/// Renders with `sets`, validates every object, and returns them.
fn render_valid(sets: &[(&str, &str)]) -> Vec<Value> {
    let objects = render(sets).unwrap_or_else(|e| panic!("render {sets:?}: {e}"));
    assert!(!objects.is_empty(), "nothing rendered for {sets:?}");
    chart::validate_all(&objects, istio())
        .unwrap_or_else(|e| panic!("validate render with {sets:?}: {e}"));
    objects
}

/// Renders with `sets` and returns helm's error message, failing the test if
/// the chart accepted the values.
fn render_error(sets: &[(&str, &str)]) -> String {
    match render(sets) {
        Ok(_) => panic!("values {sets:?} were accepted, expected a rejection"),
        Err(err) => match err.helm_message() {
            Some(message) => message.to_string(),
            None => panic!("values {sets:?}: expected a helm error, got {err}"),
        },
    }
}

fn get<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    find(objects, kind, name).unwrap_or_else(|| {
        panic!(
            "{kind}/{name} not rendered; have {:?}",
            objects.iter().map(describe).collect::<Vec<_>>()
        )
    })
}

fn virtual_service(objects: &[Value]) -> &Value {
    get(objects, "VirtualService", "model-service")
}

fn route<'a>(vs: &'a Value, name: &str) -> Option<&'a Value> {
    vs["spec"]["http"]
        .as_array()
        .expect("http routes")
        .iter()
        .find(|r| r["name"] == name)
}

/// (subset, weight) of each destination of a route; weight None when absent.
fn destinations(route: &Value) -> Vec<(String, Option<i64>)> {
    route["route"]
        .as_array()
        .expect("destinations")
        .iter()
        .map(|d| {
            (
                d["destination"]["subset"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                d["weight"].as_i64(),
            )
        })
        .collect()
}

fn subsets(objects: &[Value]) -> Vec<String> {
    get(objects, "DestinationRule", "model-service")["spec"]["subsets"]
        .as_array()
        .expect("subsets")
        .iter()
        .map(|s| {
            assert_eq!(s["labels"]["version"], s["name"], "subset labels");
            s["name"].as_str().unwrap_or("").to_string()
        })
        .collect()
}

fn names_of(objects: &[Value], kind: &str) -> Vec<String> {
    let mut names: Vec<String> = of_kind(objects, kind)
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap_or("").to_string())
        .collect();
    names.sort();
    names
}

fn plugin_config<'a>(objects: &'a [Value], name: &str) -> &'a Value {
    &get(objects, "WasmPlugin", name)["spec"]["pluginConfig"]
}

fn cohorts(config: &Value) -> Vec<(String, i64)> {
    config["cohorts"]
        .as_array()
        .expect("cohorts")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or("").to_string(),
                c["weight"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

fn pair(name: &str, weight: i64) -> (String, i64) {
    (name.to_string(), weight)
}

fn dest(subset: &str, weight: Option<i64>) -> (String, Option<i64>) {
    (subset.to_string(), weight)
}

/// Every WasmPlugin's cohorts, which must agree with each other.
fn all_cohorts(objects: &[Value]) -> Vec<(String, i64)> {
    let plugins = of_kind(objects, "WasmPlugin");
    assert!(!plugins.is_empty(), "no WasmPlugin rendered");
    let first = cohorts(&plugins[0]["spec"]["pluginConfig"]);
    for plugin in &plugins {
        assert_eq!(
            cohorts(&plugin["spec"]["pluginConfig"]),
            first,
            "{} disagrees on cohorts",
            describe(plugin)
        );
    }
    first
}

fn assert_mirror(route: &Value, percentage: f64) {
    assert_eq!(
        route["mirror"]["subset"], "v3",
        "mirror of {}",
        route["name"]
    );
    assert_eq!(route["mirror"]["host"], "model-service");
    assert_eq!(route["mirror"]["port"]["number"], 8081);
    assert_eq!(
        route["mirrorPercentage"]["value"].as_f64(),
        Some(percentage),
        "mirror percentage of {}",
        route["name"]
    );
}

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

#[test]
fn pods_are_locked_down_probed_and_instrumented() {
    let objects = render_valid(&[]);
    for deployment in of_kind(&objects, "Deployment") {
        let name = describe(deployment);
        let version = deployment["metadata"]["labels"]["version"]
            .as_str()
            .expect("version label");
        let pod = &deployment["spec"]["template"];
        assert_eq!(pod["metadata"]["labels"]["app"], "model-service", "{name}");
        assert_eq!(pod["metadata"]["labels"]["version"], version, "{name}");
        assert_eq!(
            pod["spec"]["securityContext"]["runAsNonRoot"], true,
            "{name}"
        );
        let container = &pod["spec"]["containers"][0];
        let security = &container["securityContext"];
        assert_eq!(security["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(security["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(security["capabilities"]["drop"], json!(["ALL"]), "{name}");
        assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/health");
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/ready");
        assert!(container["resources"]["requests"]["cpu"].is_string());
        assert!(container["resources"]["limits"]["memory"].is_string());
        let env = container["env"].as_array().expect("env");
        assert!(
            env.contains(&json!({"name": "MODEL_VERSION", "value": version})),
            "{name}: MODEL_VERSION"
        );
        assert!(
            env.contains(&json!({"name": "SHUTDOWN_DRAIN_SECONDS", "value": "5"})),
            "{name}: readiness drops before the listener closes"
        );
        assert_eq!(container["ports"][0]["containerPort"], 8081);

        let annotations = &pod["metadata"]["annotations"];
        assert_eq!(annotations["prometheus.io/scrape"], "true");
        assert_eq!(annotations["prometheus.io/port"], "8081");
        let proxy: Value = serde_norway::from_str(
            annotations["proxy.istio.io/config"]
                .as_str()
                .expect("proxy.istio.io/config"),
        )
        .expect("proxy config is YAML");
        assert_eq!(
            proxy["extraStatTags"],
            json!(sms_checker_filter::metrics::TAG_NAMES),
            "one stats tag rule per tag the filter emits"
        );
        let regexps: Vec<&str> = proxy["proxyStatsMatcher"]["inclusionRegexps"]
            .as_array()
            .expect("inclusionRegexps")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        // Envoy matches the full stat name: the Wasm namespace and the
        // tag-encoded labels come before the metric name.
        use sms_checker_filter::metrics::{
            GATEWAY_DURATION, GATEWAY_OVERRIDES, GATEWAY_REQUESTS, GATEWAY_USERS, SIDECAR_DURATION,
            SIDECAR_REQUESTS,
        };
        for metric in [
            GATEWAY_REQUESTS,
            GATEWAY_DURATION,
            GATEWAY_USERS,
            GATEWAY_OVERRIDES,
            SIDECAR_REQUESTS,
            SIDECAR_DURATION,
        ] {
            for stat in [
                format!("wasmcustom.version=.=v1;.;cohort=.=canary;.;{metric}"),
                format!("cohort=.=stable;.;{metric}"),
            ] {
                assert!(
                    regexps.iter().any(|r| full_match(r, &stat)),
                    "{stat} not kept by {regexps:?}"
                );
            }
        }
        assert!(
            !regexps
                .iter()
                .any(|r| full_match(r, "cluster.outbound.upstream_rq_total"))
        );
    }
}

/// Envoy's `safe_regex` matches the whole stat name (RE2 syntax, which the
/// regex crate follows).
fn full_match(pattern: &str, text: &str) -> bool {
    regex::Regex::new(&format!("^(?:{pattern})$"))
        .unwrap_or_else(|e| panic!("inclusion regexp {pattern:?}: {e}"))
        .is_match(text)
}

#[test]
fn pod_annotations_can_be_left_to_the_mesh_config() {
    let objects = render_valid(&[
        ("monitoring.proxyConfigAnnotation", "false"),
        ("monitoring.scrapeAnnotations", "false"),
    ]);
    for deployment in of_kind(&objects, "Deployment") {
        let metadata = &deployment["spec"]["template"]["metadata"];
        assert!(
            metadata.get("annotations").is_none(),
            "{}: {metadata}",
            describe(deployment)
        );
    }
    let objects = render_valid(&[
        ("monitoring.proxyConfigAnnotation", "false"),
        ("modelService.podAnnotations.team", "ml"),
    ]);
    for deployment in of_kind(&objects, "Deployment") {
        let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(annotations["team"], "ml");
        assert_eq!(annotations["prometheus.io/scrape"], "true");
        assert!(annotations.get("proxy.istio.io/config").is_none());
    }
}

#[test]
fn images_by_tag_or_digest() {
    let objects = render_valid(&[("modelService.image.tag", "1.2.3")]);
    let image = &get(&objects, "Deployment", "model-deployment-v1")["spec"]["template"]["spec"]["containers"]
        [0]["image"];
    assert_eq!(image, "ghcr.io/sms-checker/model-service:1.2.3");

    // Pinned by digest as `make push` prints it: a registry with a port, the
    // filter's image digest in the url and again as the checksum Istio checks.
    let digest = format!("sha256:{}", "a".repeat(64));
    let wasm_sha = "c".repeat(64);
    let url = format!("oci://127.0.0.1:5000/sms/sms-checker-filter@sha256:{wasm_sha}");
    let objects = render_valid(&[
        (
            "modelService.image.repository",
            "127.0.0.1:5000/sms/model-service",
        ),
        ("modelService.image.tag", "ignored"),
        ("modelService.image.digest", &digest),
        ("filter.url", &url),
        ("filter.sha256", &wasm_sha),
        ("filter.imagePullPolicy", "Always"),
        ("filter.failStrategy", "FAIL_CLOSE"),
    ]);
    for deployment in of_kind(&objects, "Deployment") {
        assert_eq!(
            deployment["spec"]["template"]["spec"]["containers"][0]["image"],
            format!("127.0.0.1:5000/sms/model-service@{digest}")
        );
    }
    for plugin in of_kind(&objects, "WasmPlugin") {
        assert_eq!(plugin["spec"]["url"], url.as_str());
        assert_eq!(plugin["spec"]["sha256"], wasm_sha.as_str());
        assert_eq!(plugin["spec"]["imagePullPolicy"], "Always");
        assert_eq!(plugin["spec"]["failStrategy"], "FAIL_CLOSE");
    }
}

#[test]
fn autoscaling_and_disruption_budgets() {
    let objects = render_valid(&[("versions.v3.autoscaling.enabled", "true")]);
    assert_eq!(
        names_of(&objects, "HorizontalPodAutoscaler"),
        ["model-deployment-v3"]
    );
    let v3 = get(&objects, "Deployment", "model-deployment-v3");
    assert!(
        v3["spec"].get("replicas").is_none(),
        "the HPA owns v3's replicas"
    );
    assert_eq!(
        get(&objects, "Deployment", "model-deployment-v1")["spec"]["replicas"],
        1
    );

    let objects = render_valid(&[
        ("autoscaling.enabled", "true"),
        ("autoscaling.maxReplicas", "7"),
        ("versions.v1.autoscaling.maxReplicas", "10"),
    ]);
    for hpa in of_kind(&objects, "HorizontalPodAutoscaler") {
        let name = hpa["metadata"]["name"].as_str().expect("name");
        assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], name);
        let max = if name.ends_with("v1") { 10 } else { 7 };
        assert_eq!(hpa["spec"]["maxReplicas"], max, "{name}");
    }
    assert_eq!(of_kind(&objects, "HorizontalPodAutoscaler").len(), 3);

    let objects = render_valid(&[]);
    for pdb in of_kind(&objects, "PodDisruptionBudget") {
        let name = pdb["metadata"]["name"].as_str().expect("name");
        let deployment = get(&objects, "Deployment", name);
        assert_eq!(
            pdb["spec"]["selector"], deployment["spec"]["selector"],
            "{name} selects its Deployment's pods"
        );
    }
    let objects = render_valid(&[("podDisruptionBudget.enabled", "false")]);
    assert!(of_kind(&objects, "PodDisruptionBudget").is_empty());
}

#[test]
fn mesh_routing_and_gateway_can_be_turned_off() {
    let objects = render_valid(&[
        ("istio.meshRouting", "false"),
        ("istio.gateway.enabled", "false"),
        ("istio.gateway.name", "istio-system/shared-gateway"),
    ]);
    assert!(of_kind(&objects, "Gateway").is_empty());
    let vs = virtual_service(&objects);
    assert_eq!(
        vs["spec"]["gateways"],
        json!(["istio-system/shared-gateway"])
    );
    assert_eq!(vs["spec"]["hosts"], json!(["sms-checker.local"]));

    let objects = render_valid(&[("filter.enabled", "false")]);
    assert!(of_kind(&objects, "WasmPlugin").is_empty());
}

#[test]
fn monitoring_objects_select_the_right_targets() {
    let defaults = render_valid(&[]);
    assert!(
        of_kind(&defaults, "PodMonitor").is_empty()
            && of_kind(&defaults, "ServiceMonitor").is_empty()
    );
    let objects = render_valid(&[
        ("monitoring.podMonitor.enabled", "true"),
        ("monitoring.podMonitor.interval", "30s"),
        ("monitoring.serviceMonitor.enabled", "true"),
        ("monitoring.serviceMonitor.labels.release", "prom"),
    ]);
    let pod_monitor = get(&objects, "PodMonitor", "model-service-envoy");
    assert_eq!(
        pod_monitor["spec"]["podMetricsEndpoints"][0]["interval"],
        "30s"
    );

    let pod_monitor = get(&objects, "PodMonitor", "model-service-envoy");
    let endpoint = &pod_monitor["spec"]["podMetricsEndpoints"][0];
    // The port name Istio's sidecar injector gives the Envoy stats port.
    assert_eq!(endpoint["port"], "http-envoy-prom");
    assert_eq!(endpoint["path"], "/stats/prometheus");
    for deployment in of_kind(&objects, "Deployment") {
        let labels = &deployment["spec"]["template"]["metadata"]["labels"];
        for (k, v) in pod_monitor["spec"]["selector"]["matchLabels"]
            .as_object()
            .expect("matchLabels")
        {
            assert_eq!(&labels[k], v, "PodMonitor selects {}", describe(deployment));
        }
    }

    let service_monitor = get(&objects, "ServiceMonitor", "model-service");
    assert_eq!(service_monitor["metadata"]["labels"]["release"], "prom");
    let service = get(&objects, "Service", "model-service");
    for (k, v) in service_monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels")
    {
        assert_eq!(
            &service["metadata"]["labels"][k], v,
            "ServiceMonitor selects the Service"
        );
    }
    let port = &service_monitor["spec"]["endpoints"][0]["port"];
    assert!(
        service["spec"]["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .any(|p| &p["name"] == port),
        "ServiceMonitor port {port} is a Service port"
    );

    // The models check types and patterns: a bad one is refused.
    let mut bad = service_monitor.clone();
    bad["spec"]["endpoints"][0]["interval"] = json!("1.5s");
    bad["spec"]["endpoints"][0]["port"] = json!(8081);
    let err =
        chart::prometheus_operator_validate(&[&bad]).expect_err("bad ServiceMonitor accepted");
    let err = err.to_string();
    assert!(err.contains("ERROR ServiceMonitor/model-service"), "{err}");
    assert!(err.contains("interval") || err.contains("port"), "{err}");
}

#[test]
fn grafana_dashboard_compares_versions_and_cohorts() {
    let objects = render_valid(&[]);
    let config_map = get(&objects, "ConfigMap", "model-service-dashboard");
    assert_eq!(config_map["metadata"]["labels"]["grafana_dashboard"], "1");
    let dashboard: Value = serde_json::from_str(
        config_map["data"]["sms-checker.json"]
            .as_str()
            .expect("dashboard JSON"),
    )
    .expect("dashboard is valid JSON");
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_string))
        .collect();
    let has = |needle: &str| exprs.iter().any(|e| e.contains(needle));
    assert!(
        has("sum by (version, cohort) (rate(sms_model_requests_total"),
        "request rate"
    );
    assert!(has("response_class=~\"5.*\""), "error rate");
    assert!(has("histogram_quantile(0.99"), "latency quantiles");
    assert!(
        has("model_predictions_total{namespace=~\"$namespace\", result=\"spam\"}"),
        "spam ratio"
    );
    assert!(has("sms_cohort_requests_total"), "gateway cohorts");

    let objects = render_valid(&[("monitoring.grafanaDashboard.namespace", "grafana")]);
    assert_eq!(
        get(&objects, "ConfigMap", "model-service-dashboard")["metadata"]["namespace"],
        "grafana"
    );
}

#[test]
fn schema_rejects_bad_values_with_clear_messages() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("istio.trafficSplit.stable", "150")],
            "/istio/trafficSplit/stable",
        ),
        (
            &[("istio.trafficSplit.canary", "-5")],
            "/istio/trafficSplit/canary",
        ),
        (&[("istio.trafficSplit.stable", "ninety")], "want integer"),
        (
            &[("istio.trafficSplit.stabel", "90")],
            "'stabel' not allowed",
        ),
        (&[("versions.v4.enabled", "true")], "'v4' not allowed"),
        // v3 only gets mirrored copies: a fault there would do nothing.
        (
            &[("versions.v3.fault.abort.percentage", "5")],
            "'fault' not allowed",
        ),
        (&[("versions.v2.enabled", "maybe")], "/versions/v2/enabled"),
        (&[("istio.host", "Not A Host")], "/istio/host"),
        (
            &[("istio.mirror.percentage", "101")],
            "/istio/mirror/percentage",
        ),
        (
            &[("filter.failStrategy", "FAIL_SOMETIMES")],
            "/filter/failStrategy",
        ),
        (&[("filter.sha256", "abc")], "/filter/sha256"),
        (&[("filter.url", "ghcr.io/no-scheme")], "/filter/url"),
        (
            &[("modelService.image.digest", "sha256:xyz")],
            "/modelService/image/digest",
        ),
        (
            &[("experiment.cookie.maxAgeSeconds", "0")],
            "/experiment/cookie/maxAgeSeconds",
        ),
        (
            &[("experiment.override.tokenSha256", "ABC")],
            "/experiment/override/tokenSha256",
        ),
        (
            &[("experiment.cohortHeader", "X Cohort")],
            "/experiment/cohortHeader",
        ),
        (
            &[("versions.v2.fault.abort.percentage", "150")],
            "/versions/v2/fault/abort/percentage",
        ),
        (
            &[("versions.v2.fault.abort.httpStatus", "99")],
            "/versions/v2/fault/abort/httpStatus",
        ),
        (
            &[("versions.v2.fault.delay.fixedDelay", "soon")],
            "/versions/v2/fault/delay/fixedDelay",
        ),
        (
            // Istio refuses delays under 1ms.
            &[("versions.v2.fault.delay.fixedDelay", "0s")],
            "/versions/v2/fault/delay/fixedDelay",
        ),
        (
            &[("monitoring.podMonitor.interval", "1.5s")],
            "/monitoring/podMonitor/interval",
        ),
    ];
    for (sets, expected) in cases {
        let message = render_error(sets);
        assert!(
            message.contains(expected),
            "{sets:?}: expected {expected:?} in {message}"
        );
    }
}

#[test]
fn templates_reject_what_the_schema_cannot_express() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("istio.trafficSplit.stable", "95")],
            "istio.trafficSplit.stable (95) + istio.trafficSplit.canary (10) must add up to 100, got 105",
        ),
        (
            &[
                ("istio.trafficSplit.stable", "50"),
                ("istio.trafficSplit.canary", "40"),
            ],
            "must add up to 100, got 90",
        ),
        (
            &[("istio.gateway.name", "istio-system/shared")],
            "a namespace/name reference needs istio.gateway.enabled=false",
        ),
        (
            &[
                (
                    "filter.url",
                    &format!("oci://r.example/f@sha256:{}", "a".repeat(64)),
                ),
                ("filter.sha256", &"b".repeat(64)),
            ],
            "does not match the digest in filter.url",
        ),
        (
            &[("modelService.shutdownDrainSeconds", "30")],
            "must be less than modelService.terminationGracePeriodSeconds (30)",
        ),
        (
            &[("versions.v1.enabled", "false")],
            "versions.v1.enabled=false is not supported",
        ),
        (
            &[("experiment.cohortHeader", "cookie")],
            "experiment.cohortHeader=cookie is not allowed",
        ),
        (
            &[
                ("experiment.override.tokenSha256", &"d".repeat(64)),
                ("experiment.override.tokenHeader", "x-experiment-override"),
            ],
            "experiment.override.header and experiment.override.tokenHeader must differ",
        ),
        (
            &[
                ("autoscaling.enabled", "true"),
                ("autoscaling.minReplicas", "4"),
                ("autoscaling.maxReplicas", "2"),
            ],
            "maxReplicas (2) must be at least minReplicas (4)",
        ),
    ];
    for (sets, expected) in cases {
        let message = render_error(sets);
        assert!(
            message.contains(expected),
            "{sets:?}: expected {expected:?} in {message}"
        );
    }
}

/// Header names the chart lets a user change reach every part that reads
/// them: the filter's gateway and sidecar configs, the VirtualService, and the
/// model-service's environment (whose names are ones it reads). The local
/// mesh shows the result end to end (tests/tests/mesh_names.rs).
#[test]
fn header_names_reach_the_filter_the_routes_and_the_model_service() {
    let objects = render_valid(&[
        ("filter.predictionHeader", "x-verdict"),
        ("experiment.cohortHeader", "x-arm"),
        ("experiment.responseHeader", "x-arm-out"),
    ]);
    let gateway = plugin_config(&objects, "sms-checker-cohort-gateway");
    assert_eq!(gateway["cohortHeader"], "x-arm");
    assert_eq!(gateway["responseHeader"], "x-arm-out");
    for version in ["v1", "v2", "v3"] {
        let sidecar = plugin_config(&objects, &format!("sms-checker-cohort-{version}"));
        assert_eq!(sidecar["cohortHeader"], "x-arm", "{version}");
        assert_eq!(sidecar["predictionHeader"], "x-verdict", "{version}");
    }
    let canary = route(virtual_service(&objects), "cohort-canary").expect("canary route");
    assert_eq!(canary["match"][0]["headers"]["x-arm"]["exact"], "canary");

    use model_service::config::{ServeArgs, env};
    let reads = ServeArgs::env_names();
    for deployment in of_kind(&objects, "Deployment") {
        let vars = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .expect("env");
        let value = |name: &str| {
            vars.iter()
                .find(|e| e["name"] == name)
                .and_then(|e| e["value"].as_str())
        };
        assert_eq!(value(env::PREDICTION_HEADER), Some("x-verdict"));
        assert_eq!(value(env::COHORT_HEADER), Some("x-arm"));
        assert_eq!(value(env::COHORT_RESPONSE_HEADER), Some("x-arm-out"));
        for var in vars {
            let name = var["name"].as_str().expect("env name");
            assert!(
                reads.iter().any(|r| r == name),
                "{}: the model-service reads no {name} (it reads {reads:?})",
                describe(deployment)
            );
        }
    }
}

/// Names that cannot work are refused before anything is installed: the
/// model-service's answers carry the verdict, the cohort, its version and the
/// request id, each under its own name.
#[test]
fn response_header_names_that_would_clash_are_refused() {
    use model_service::headers::{REQUEST_ID_HEADER, VERSION_HEADER};
    let message = render_error(&[("filter.predictionHeader", "x-experiment-cohort")]);
    assert!(
        message.contains(
            "filter.predictionHeader and experiment.responseHeader are both x-experiment-cohort"
        ),
        "{message}"
    );
    for field in ["filter.predictionHeader", "experiment.responseHeader"] {
        for taken in [VERSION_HEADER, REQUEST_ID_HEADER] {
            let message = render_error(&[(field, taken)]);
            assert!(
                message.contains(&format!("{field}={taken} is not allowed")),
                "{message}"
            );
        }
    }
    // A request header may share a response header's name (the defaults
    // give the cohort one name both ways).
    render_valid(&[("experiment.cohortHeader", "x-model-prediction")]);
}

#[test]
fn validators_reject_what_the_api_server_would() {
    let objects = render_valid(&[]);

    // An unknown field deep in an Istio object.
    let mut vs = virtual_service(&objects).clone();
    vs["spec"]["http"][0]["route"][0]["destination"]["subsett"] = json!("v2");
    let err = istio().validate(&vs).expect_err("unknown field accepted");
    assert!(err.to_string().contains("subsett"), "{err}");

    // A bad enum and a wrong type.
    let mut plugin = get(&objects, "WasmPlugin", "sms-checker-cohort-v1").clone();
    plugin["spec"]["phase"] = json!("ROUTING");
    assert!(istio().validate(&plugin).is_err(), "bad phase accepted");
    let mut gateway = get(&objects, "Gateway", "sms-checker-gateway").clone();
    gateway["spec"]["servers"][0]["port"]["number"] = json!("eighty");
    assert!(istio().validate(&gateway).is_err(), "string port accepted");

    // The pluginConfig stays open: the filter validates it.
    let mut plugin = get(&objects, "WasmPlugin", "sms-checker-cohort-v1").clone();
    plugin["spec"]["pluginConfig"]["anything"] = json!(1);
    istio()
        .validate(&plugin)
        .expect("pluginConfig preserves unknown fields");

    // A version the CRD does not serve.
    let mut dr = get(&objects, "DestinationRule", "model-service").clone();
    dr["apiVersion"] = json!("networking.istio.io/v2");
    assert!(istio().validate(&dr).is_err(), "unserved version accepted");

    // The CRDs' CEL rules, which JSON Schema cannot express.
    let mut plugin = get(&objects, "WasmPlugin", "sms-checker-cohort-v1").clone();
    plugin["spec"]["targetRefs"] = json!([{"kind": "Service", "name": "model-service"}]);
    plugin["spec"]["selector"]["matchLabels"]["version"] = json!("v*");
    plugin["spec"]["url"] = json!("ftp://example.com/plugin.wasm");
    let err = istio()
        .validate(&plugin)
        .expect_err("CEL rules not applied");
    for message in [
        "/spec: only one of targetRefs or selector can be set",
        "/spec/selector/matchLabels/version: wildcard not allowed in label value match",
        "/spec/url: url must have schema one of [http, https, file, oci]",
    ] {
        assert!(err.to_string().contains(message), "{message} not in {err}");
    }
    for (delay, ok) in [
        ("500us", false),
        ("0.5ms", false),
        ("1ms", true),
        ("1m30s", true),
    ] {
        let mut vs = virtual_service(&objects).clone();
        vs["spec"]["http"][0]["fault"] =
            json!({"delay": {"percentage": {"value": 10}, "fixedDelay": delay}});
        assert_eq!(istio().validate(&vs).is_ok(), ok, "fixedDelay {delay}");
    }
    // A rule this check cannot evaluate fails instead of passing silently.
    let mut gateway = get(&objects, "Gateway", "sms-checker-gateway").clone();
    gateway["spec"]["servers"][0]["tls"] = json!({"mode": "SIMPLE", "credentialName": "cert"});
    let err = istio()
        .validate(&gateway)
        .expect_err("unevaluated CEL rule passed");
    assert!(err.to_string().contains("CEL rule not evaluated"), "{err}");

    // kubernetes-validate: unknown field, and a kind it has no schema for.
    let mut deployment = get(&objects, "Deployment", "model-deployment-v1").clone();
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = json!({});
    let err = chart::kubernetes_validate(&[&deployment], KUBERNETES_VERSION)
        .expect_err("unknown Deployment field accepted");
    assert!(err.to_string().contains("readinessProbes"), "{err}");
    let err = chart::kubernetes_validate(&[virtual_service(&objects)], KUBERNETES_VERSION)
        .expect_err("a kind without schema passed");
    assert!(err.to_string().contains("find schema"), "{err}");
}

/// The filter's own validation (the code that runs in `on_configure`)
/// accepts every pluginConfig the chart renders, and reads it as intended.
#[test]
fn filter_accepts_every_rendered_plugin_config() {
    use sms_checker_filter::config::{PluginConfig, Role};

    let token_sha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    let cases: &[&[(&str, &str)]] = &[
        &[],
        &[
            ("istio.trafficSplit.stable", "95"),
            ("istio.trafficSplit.canary", "5"),
        ],
        &[("versions.v2.enabled", "false")],
        &[("versions.v3.enabled", "false")],
        &[
            ("istio.trafficSplit.stable", "100"),
            ("istio.trafficSplit.canary", "0"),
        ],
        &[
            ("experiment.userIdHeader", "x-user-id"),
            ("experiment.override.tokenSha256", token_sha),
            ("experiment.cookie.secure", "true"),
            ("experiment.salt", "a salt with spaces"),
            ("experiment.clearRouteCache", "true"),
        ],
    ];
    for sets in cases {
        let objects = render_valid(sets);
        let plugins = of_kind(&objects, "WasmPlugin");
        assert!(plugins.len() >= 3, "{sets:?}: WasmPlugins rendered");
        for plugin in plugins {
            let json = serde_json::to_vec(&plugin["spec"]["pluginConfig"]).expect("json");
            let config = PluginConfig::from_json(&json)
                .unwrap_or_else(|e| panic!("{sets:?}: filter refused {}: {e}", describe(plugin)));
            let rendered: Vec<(String, i64)> = config
                .cohorts
                .iter()
                .map(|c| (c.name.clone(), i64::from(c.weight)))
                .collect();
            assert_eq!(rendered, cohorts(&plugin["spec"]["pluginConfig"]));
            let name = plugin["metadata"]["name"].as_str().expect("name");
            match (&config.role, name.strip_prefix("sms-checker-cohort-")) {
                (Role::Gateway(gateway), Some("gateway")) => {
                    assert_eq!(
                        gateway.override_.is_some(),
                        sets.iter().any(|(k, _)| k.contains("tokenSha256")),
                        "{sets:?}: override"
                    );
                }
                (Role::Sidecar(sidecar), Some(version)) => {
                    assert_eq!(sidecar.version.as_deref(), Some(version));
                    assert_eq!(sidecar.mirrored, version == "v3");
                }
                (role, _) => panic!("{name} has role {role:?}"),
            }
        }
    }

    // The check is real: a typo'd key in the rendered config is refused.
    let objects = render_valid(&[]);
    let mut config = plugin_config(&objects, "sms-checker-cohort-gateway").clone();
    config["cookies"] = config["cookie"].clone();
    let json = serde_json::to_vec(&config).expect("json");
    let err = PluginConfig::from_json(&json).expect_err("unknown key accepted");
    assert!(err.to_string().contains("cookies"), "{err}");
}

#[test]
fn subsets_and_service_select_the_versions_pods() {
    let objects = render_valid(&[]);
    let service = get(&objects, "Service", "model-service");
    let rule = get(&objects, "DestinationRule", "model-service");
    assert_eq!(rule["spec"]["host"], "model-service");
    let matches = |selector: &Value, labels: &Value| {
        selector
            .as_object()
            .expect("selector")
            .iter()
            .all(|(k, v)| &labels[k] == v)
    };
    for deployment in of_kind(&objects, "Deployment") {
        let labels = &deployment["spec"]["template"]["metadata"]["labels"];
        assert!(
            matches(&deployment["spec"]["selector"]["matchLabels"], labels),
            "{} selects its own pods",
            describe(deployment)
        );
        assert!(
            matches(&service["spec"]["selector"], labels),
            "Service selects {}",
            describe(deployment)
        );
        // Exactly one subset picks each version's pods.
        let picked: Vec<&Value> = rule["spec"]["subsets"]
            .as_array()
            .expect("subsets")
            .iter()
            .filter(|s| matches(&s["labels"], labels))
            .collect();
        assert_eq!(picked.len(), 1, "{}", describe(deployment));
        assert_eq!(picked[0]["name"], labels["version"]);
    }
}

#[test]
fn install_dry_run_prints_how_to_reach_the_app() {
    let chart = chart::chart_dir();
    let out = chart::helm(&[
        "install",
        "sms-checker",
        &chart.to_string_lossy(),
        "--dry-run=client",
        "--namespace",
        "demo",
        "--set",
        "istio.host=custom.grader.local",
        "--set",
        "istio.trafficSplit.stable=95",
        "--set",
        "istio.trafficSplit.canary=5",
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    let notes = out.split_once("NOTES:").expect("NOTES printed").1;
    for needle in [
        "http://custom.grader.local:8080/sms",
        "stable 95%, canary 5%",
        "get svc -l istio=ingressgateway",
        "deployment/model-deployment-v1",
        "sms_model_",
        "any workload in the cluster can call them directly",
    ] {
        assert!(notes.contains(needle), "NOTES lack {needle:?}:\n{notes}");
    }
    let out = chart::helm(&[
        "install",
        "sms-checker",
        &chart.to_string_lossy(),
        "--dry-run=client",
        "--set",
        "security.peerAuthentication.enabled=true",
        "--set",
        "security.authorizationPolicy.enabled=true",
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    let notes = out.split_once("NOTES:").expect("NOTES printed").1;
    assert!(
        notes.contains(
            "STRICT mTLS, AuthorizationPolicy on: the ingress gateway and Prometheus only"
        ),
        "{notes}"
    );

    // Chart.yaml's kubeVersion keeps it off clusters older than 1.33.
    let err = chart::helm(&[
        "template",
        "sms-checker",
        &chart.to_string_lossy(),
        "--kube-version",
        "1.32.0",
    ])
    .expect_err("Kubernetes 1.32 accepted");
    assert!(err.to_string().contains("requires kubeVersion"), "{err}");
}

/// The part each version plays is written in the chart (`sms-checker.role`
/// in `_helpers.tpl`, the Deployments' `app.kubernetes.io/component`) and
/// in meshctl's report (`Role::CHART_DEFAULTS`, what it compares when no
/// `--role` is given): the two agree, each cohort's route goes to the version
/// of the same name's role, and the shadow is the mirror.
#[test]
fn version_roles_agree_with_meshctls_report() {
    use meshctl::report::Role;
    let objects = render_valid(&[]);
    let roles = Role::chart_defaults();
    let deployments = of_kind(&objects, "Deployment");
    assert_eq!(deployments.len(), roles.len(), "a role for every version");
    for deployment in deployments {
        let labels = &deployment["metadata"]["labels"];
        let version = labels["version"].as_str().expect("version label");
        let role = roles
            .get(version)
            .unwrap_or_else(|| panic!("meshctl knows no role for {version}"));
        assert_eq!(
            labels["app.kubernetes.io/component"],
            role.as_str(),
            "{}",
            describe(deployment)
        );
    }
    let vs = virtual_service(&objects);
    for (version, role) in &roles {
        if *role == Role::Shadow {
            let split = route(vs, "split").expect("split route");
            assert_eq!(split["mirror"]["subset"], version.as_str());
        } else {
            let cohort = route(vs, &format!("cohort-{role}"))
                .unwrap_or_else(|| panic!("no route for cohort {role}"));
            assert_eq!(destinations(cohort), [(version.clone(), None)]);
        }
    }
}

/// The chart's values are the source of truth, and the filter's defaults
/// (used when a key is left out) say the same thing.
#[test]
fn chart_defaults_agree_with_the_filter_defaults() {
    use sms_checker_filter::config as filter;

    let token_sha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    let objects = render_valid(&[("experiment.override.tokenSha256", token_sha)]);
    let gateway = plugin_config(&objects, "sms-checker-cohort-gateway");
    assert_eq!(gateway["experiment"], filter::DEFAULT_EXPERIMENT);
    assert_eq!(gateway["cohortHeader"], filter::DEFAULT_COHORT_HEADER);
    assert_eq!(gateway["salt"], filter::DEFAULT_SALT);
    assert_eq!(gateway["cookie"]["name"], filter::DEFAULT_COOKIE_NAME);
    assert_eq!(
        gateway["cookie"]["maxAgeSeconds"],
        filter::DEFAULT_COOKIE_MAX_AGE
    );
    assert_eq!(
        gateway["override"]["header"],
        filter::DEFAULT_OVERRIDE_HEADER
    );
    assert_eq!(
        gateway["override"]["tokenHeader"],
        filter::DEFAULT_OVERRIDE_TOKEN_HEADER
    );
    let sidecar = plugin_config(&objects, "sms-checker-cohort-v1");
    assert_eq!(
        sidecar["predictionHeader"],
        filter::DEFAULT_PREDICTION_HEADER
    );
    assert_eq!(
        sidecar["shadowHostSuffix"],
        filter::DEFAULT_SHADOW_HOST_SUFFIX
    );
    // The schema's cookie lifetime cap is the filter's.
    let too_long = (filter::MAX_COOKIE_MAX_AGE + 1).to_string();
    render_error(&[("experiment.cookie.maxAgeSeconds", &too_long)]);
    render_valid(&[(
        "experiment.cookie.maxAgeSeconds",
        &filter::MAX_COOKIE_MAX_AGE.to_string(),
    )]);
}

/// Every value that turns the security objects on, with callers in the mesh.
const SECURITY_ON: &[(&str, &str)] = &[
    ("security.authorizationPolicy.enabled", "true"),
    ("security.peerAuthentication.enabled", "true"),
    ("security.networkPolicy.enabled", "true"),
];

fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .expect("matchLabels")
        .iter()
        .all(|(k, v)| &labels[k] == v)
}

/// The pods of every rendered Deployment are the ones `selector` picks.
fn assert_selects_every_version(objects: &[Value], selector: &Value, what: &str) {
    let deployments = of_kind(objects, "Deployment");
    assert!(!deployments.is_empty());
    for deployment in deployments {
        assert!(
            selects(
                selector,
                &deployment["spec"]["template"]["metadata"]["labels"]
            ),
            "{what} does not select {}",
            describe(deployment)
        );
    }
}

/// The operations an AuthorizationPolicy rule allows, as (method, path, port).
fn operations(rule: &Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for to in rule["to"].as_array().expect("to") {
        let op = &to["operation"];
        let strings = |field: &str| -> Vec<String> {
            op[field]
                .as_array()
                .unwrap_or_else(|| panic!("operation without {field}: {op}"))
                .iter()
                .map(|v| v.as_str().expect("string").to_string())
                .collect()
        };
        for method in strings("methods") {
            for path in strings("paths") {
                for port in strings("ports") {
                    out.push((method.clone(), path.clone(), port.clone()));
                }
            }
        }
    }
    out.sort();
    out
}

fn op(method: &str, path: &str) -> (String, String, String) {
    (method.to_string(), path.to_string(), "8081".to_string())
}

/// The sources of a rule: (field, values) per `from` entry.
fn sources(rule: &Value) -> Vec<(String, Vec<String>)> {
    rule["from"]
        .as_array()
        .expect("from")
        .iter()
        .flat_map(|from| {
            from["source"]
                .as_object()
                .expect("source")
                .iter()
                .map(|(field, values)| {
                    (
                        field.clone(),
                        values
                            .as_array()
                            .expect("list")
                            .iter()
                            .map(|v| v.as_str().expect("string").to_string())
                            .collect(),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn security_objects_are_opt_in() {
    // Nothing that needs mTLS identities by default: the local mesh and any
    // mesh without workload certificates keep working.
    let defaults = render_valid(&[]);
    for kind in ["AuthorizationPolicy", "PeerAuthentication", "NetworkPolicy"] {
        assert!(
            of_kind(&defaults, kind).is_empty(),
            "{kind} rendered by default"
        );
    }
    // Each switch renders its own object and only that one.
    for (i, (key, _)) in SECURITY_ON.iter().enumerate() {
        let objects = render_valid(&[(key, "true")]);
        for (j, kind) in ["AuthorizationPolicy", "PeerAuthentication", "NetworkPolicy"]
            .iter()
            .enumerate()
        {
            assert_eq!(
                of_kind(&objects, kind).len(),
                usize::from(i == j),
                "{key}: {kind}"
            );
        }
    }
}

#[test]
fn authorization_policy_admits_the_gateway_mesh_callers_and_prometheus() {
    let objects = render_valid(SECURITY_ON);
    let policy = get(&objects, "AuthorizationPolicy", "model-service");
    assert_eq!(policy["metadata"]["namespace"], "demo");
    assert_eq!(policy["spec"]["action"], "ALLOW");
    assert_selects_every_version(
        &objects,
        &policy["spec"]["selector"]["matchLabels"],
        "policy",
    );
    let rules = policy["spec"]["rules"].as_array().expect("rules");
    assert_eq!(rules.len(), 2, "{rules:#?}");
    // The gateway's identity as Istio's gateway chart names it.
    assert_eq!(
        sources(&rules[0]),
        [(
            "principals".to_string(),
            strings(&["cluster.local/ns/istio-system/sa/istio-ingressgateway"])
        )]
    );
    assert_eq!(
        operations(&rules[0]),
        [
            op("GET", "/sms"),
            op("HEAD", "/sms"),
            op("POST", "/predict")
        ]
    );
    // Prometheus: /metrics only, from its namespace unless named.
    assert_eq!(
        sources(&rules[1]),
        [("namespaces".to_string(), strings(&["istio-system"]))]
    );
    assert_eq!(operations(&rules[1]), [op("GET", "/metrics")]);

    // What the page fetches is allowed too: its relative URLs resolve
    // against /sms.
    let page = std::fs::read_to_string(
        sms_checker_tests::workspace_root().join("model-service/src/sms.html"),
    )
    .expect("read sms.html");
    let fetched: Vec<&str> = page
        .split("fetch(\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert!(!fetched.is_empty(), "the page fetches nothing?");
    for url in fetched {
        let path = format!("/{}", url.trim_start_matches('/'));
        assert!(
            operations(&rules[0]).iter().any(|(_, p, _)| *p == path),
            "the page fetches {path}, which the policy refuses"
        );
    }

    // Gateway namespace, service account, trust domain and port flow in;
    // in-mesh callers join the first rule; Prometheus by its identity.
    let objects = render_valid(&[
        ("security.authorizationPolicy.enabled", "true"),
        ("istio.gateway.namespace", "gateways"),
        ("security.gatewayServiceAccount", "public-gateway"),
        ("security.trustDomain", "prod.example.com"),
        ("modelService.port", "9000"),
        ("security.meshCallers.namespaces[0]", "web"),
        (
            "security.meshCallers.principals[0]",
            "prod.example.com/ns/batch/sa/scorer",
        ),
        ("security.prometheus.namespace", "monitoring"),
        ("security.prometheus.serviceAccount", "prometheus-k8s"),
    ]);
    let rules = &get(&objects, "AuthorizationPolicy", "model-service")["spec"]["rules"];
    assert_eq!(
        sources(&rules[0]),
        [
            (
                "principals".to_string(),
                strings(&["prod.example.com/ns/gateways/sa/public-gateway"])
            ),
            (
                "principals".to_string(),
                strings(&["prod.example.com/ns/batch/sa/scorer"])
            ),
            ("namespaces".to_string(), strings(&["web"])),
        ]
    );
    assert!(
        operations(&rules[0])
            .iter()
            .all(|(_, _, port)| port == "9000"),
        "{}",
        rules[0]
    );
    assert_eq!(
        sources(&rules[1]),
        [(
            "principals".to_string(),
            strings(&["prod.example.com/ns/monitoring/sa/prometheus-k8s"])
        )]
    );
}

#[test]
fn peer_authentication_is_strict_on_the_model_service_pods() {
    let objects = render_valid(SECURITY_ON);
    let peer = get(&objects, "PeerAuthentication", "model-service");
    assert_eq!(peer["spec"]["mtls"], json!({"mode": "STRICT"}));
    assert!(peer["spec"].get("portLevelMtls").is_none());
    assert_eq!(
        peer["spec"]["selector"]["matchLabels"],
        get(&objects, "Service", "model-service")["spec"]["selector"],
        "the pods behind the Service, every version"
    );
    assert_selects_every_version(&objects, &peer["spec"]["selector"]["matchLabels"], "peer");
}

#[test]
fn network_policy_admits_the_gateway_mesh_callers_and_prometheus() {
    let objects = render_valid(&[
        ("security.networkPolicy.enabled", "true"),
        ("istio.gateway.ingressGatewaySelector", "custom-gateway"),
        ("security.meshCallers.namespaces[0]", "web"),
        (
            "security.meshCallers.principals[0]",
            "cluster.local/ns/batch/sa/scorer",
        ),
        (
            "security.meshCallers.principals[1]",
            "cluster.local/ns/web/sa/frontend",
        ),
        (
            "security.prometheus.podLabels.app\\.kubernetes\\.io/name",
            "prometheus",
        ),
    ]);
    let policy = get(&objects, "NetworkPolicy", "model-service");
    let spec = &policy["spec"];
    assert_eq!(spec["policyTypes"], json!(["Ingress"]));
    assert_selects_every_version(&objects, &spec["podSelector"]["matchLabels"], "policy");
    let ingress = spec["ingress"].as_array().expect("ingress");
    assert_eq!(ingress.len(), 2);
    let namespace = |name: &str| json!({"matchLabels": {"kubernetes.io/metadata.name": name}});
    // The gateway pods, then each caller namespace once (principals give
    // theirs: a NetworkPolicy cannot select service accounts).
    assert_eq!(
        ingress[0]["from"],
        json!([
            {"namespaceSelector": namespace("istio-system"),
             "podSelector": {"matchLabels": {"istio": "custom-gateway"}}},
            {"namespaceSelector": namespace("web")},
            {"namespaceSelector": namespace("batch")},
        ])
    );
    assert_eq!(
        ingress[0]["ports"],
        json!([{"port": 8081, "protocol": "TCP"}])
    );
    assert_eq!(
        ingress[1]["from"],
        json!([{"namespaceSelector": namespace("istio-system"),
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}])
    );
    let ports: Vec<i64> = ingress[1]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| p["port"].as_i64().expect("numeric port"))
        .collect();
    assert_eq!(
        ports,
        [15020, 15090, 8081],
        "merged metrics, Envoy stats, /metrics"
    );

    // The gateway rule selects the pods the chart's Gateway selects.
    let gateway = get(&objects, "Gateway", "sms-checker-gateway");
    assert_eq!(
        ingress[0]["from"][0]["podSelector"]["matchLabels"],
        gateway["spec"]["selector"]
    );

    // Mesh routing off: only the gateway and Prometheus.
    let objects = render_valid(&[
        ("security.networkPolicy.enabled", "true"),
        ("security.authorizationPolicy.enabled", "true"),
        ("istio.meshRouting", "false"),
    ]);
    let ingress = &get(&objects, "NetworkPolicy", "model-service")["spec"]["ingress"];
    assert_eq!(ingress[0]["from"].as_array().expect("from").len(), 1);
    let rules = &get(&objects, "AuthorizationPolicy", "model-service")["spec"]["rules"];
    assert_eq!(sources(&rules[0]).len(), 1, "{}", rules[0]);
}

#[test]
fn security_values_are_checked() {
    let schema_cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("security.authorizationPolicy.enabled", "maybe")],
            "/security/authorizationPolicy/enabled",
        ),
        (
            &[("security.peerAuthentication.mode", "PERMISSIVE")],
            "'mode' not allowed",
        ),
        (
            &[("security.trustDomain", "Not A Domain")],
            "/security/trustDomain",
        ),
        (
            &[("security.gatewayServiceAccount", "Gateway_SA")],
            "/security/gatewayServiceAccount",
        ),
        (
            &[("security.meshCallers.namespaces[0]", "Web")],
            "/security/meshCallers/namespaces/0",
        ),
        (
            &[("security.meshCallers.principals[0]", "web/frontend")],
            "/security/meshCallers/principals/0",
        ),
        (
            &[("security.meshCallers.principals[0]", "*")],
            "/security/meshCallers/principals/0",
        ),
        (
            &[("security.prometheus.namespace", "")],
            "/security/prometheus/namespace",
        ),
        (
            &[("security.prometheus.podLabels.app", "not a label")],
            "/security/prometheus/podLabels",
        ),
        (
            &[("security.networkPolicy.egress", "true")],
            "'egress' not allowed",
        ),
    ];
    for (sets, expected) in schema_cases {
        let message = render_error(sets);
        assert!(
            message.contains(expected),
            "{sets:?}: expected {expected:?} in {message}"
        );
    }
    let message = render_error(&[
        ("istio.meshRouting", "false"),
        ("security.meshCallers.namespaces[0]", "web"),
    ]);
    assert!(
        message.contains("security.meshCallers lists in-mesh callers but istio.meshRouting=false"),
        "{message}"
    );

    // The validators refuse what the API server would.
    let objects = render_valid(SECURITY_ON);
    let mut policy = get(&objects, "AuthorizationPolicy", "model-service").clone();
    policy["spec"]["rules"][0]["from"][0]["source"]["serviceAccounts"] =
        json!(["istio-system/istio-ingressgateway"]);
    let err = istio().validate(&policy).expect_err("CEL rule not applied");
    assert!(
        err.to_string()
            .contains("Cannot set serviceAccounts with namespaces or principals"),
        "{err}"
    );
    let mut policy = get(&objects, "AuthorizationPolicy", "model-service").clone();
    policy["spec"]["action"] = json!("PERMIT");
    assert!(istio().validate(&policy).is_err(), "bad action accepted");
    let mut peer = get(&objects, "PeerAuthentication", "model-service").clone();
    peer["spec"]["selector"] = json!({});
    peer["spec"]["portLevelMtls"] = json!({"8081": {"mode": "DISABLE"}});
    let err = istio().validate(&peer).expect_err("CEL rule not applied");
    assert!(
        err.to_string().contains("portLevelMtls requires selector"),
        "{err}"
    );
    let mut network = get(&objects, "NetworkPolicy", "model-service").clone();
    network["spec"]["ingress"][0]["from"][0]["namespaceSelectors"] = json!({});
    let err = chart::kubernetes_validate(&[&network], KUBERNETES_VERSION)
        .expect_err("unknown NetworkPolicy field accepted");
    assert!(err.to_string().contains("namespaceSelectors"), "{err}");
}
