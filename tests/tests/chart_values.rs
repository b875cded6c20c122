//! The chart's values: what the schema and the templates refuse, naming the
//! field, and the names and defaults it shares with the filter and meshctl.

use serde_json::json;
use sms_checker_tests::chart::{describe, of_kind};
use sms_checker_tests::rendered::{
    assert_refused, cohorts, destinations, filter_config, filter_resources, get, plugin_config,
    render_error, render_valid, route, virtual_service,
};
use sms_checker_tests::schemas::{self, KUBERNETES_VERSION};

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
    assert_refused(cases);
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
    assert_refused(cases);
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

/// An Istio or Gateway API object through every pinned set of CRDs.
fn validate(object: &serde_json::Value) -> Result<(), sms_checker_tests::chart::ChartError> {
    schemas::crd_validate_all(&[object])
}

#[test]
fn validators_reject_what_the_api_server_would() {
    let objects = render_valid(&[]);

    // An unknown field deep in an Istio object.
    let mut vs = virtual_service(&objects).clone();
    vs["spec"]["http"][0]["route"][0]["destination"]["subsett"] = json!("v2");
    let err = validate(&vs).expect_err("unknown field accepted");
    assert!(
        err.to_string()
            .contains("unknown field \"spec.http[0].route[0].destination.subsett\""),
        "{err}"
    );

    // A bad enum and a wrong type.
    let mut plugin = get(&objects, "WasmPlugin", "sms-checker-cohort-v1").clone();
    plugin["spec"]["phase"] = json!("ROUTING");
    assert!(validate(&plugin).is_err(), "bad phase accepted");
    let mut gateway = get(&objects, "Gateway", "sms-checker-gateway").clone();
    gateway["spec"]["servers"][0]["port"]["number"] = json!("eighty");
    assert!(validate(&gateway).is_err(), "string port accepted");

    // The pluginConfig stays open: the filter validates it.
    let mut plugin = get(&objects, "WasmPlugin", "sms-checker-cohort-v1").clone();
    plugin["spec"]["pluginConfig"]["anything"] = json!(1);
    validate(&plugin).expect("pluginConfig preserves unknown fields");

    // A version the CRD does not serve.
    let mut dr = get(&objects, "DestinationRule", "model-service").clone();
    dr["apiVersion"] = json!("networking.istio.io/v2");
    assert!(validate(&dr).is_err(), "unserved version accepted");

    // The CRDs' CEL rules, which JSON Schema cannot express.
    let mut plugin = get(&objects, "WasmPlugin", "sms-checker-cohort-v1").clone();
    plugin["spec"]["targetRefs"] = json!([{"kind": "Service", "name": "model-service"}]);
    plugin["spec"]["selector"]["matchLabels"]["version"] = json!("v*");
    plugin["spec"]["url"] = json!("ftp://example.com/plugin.wasm");
    let err = validate(&plugin).expect_err("CEL rules not applied");
    for message in [
        "spec: Invalid value: only one of targetRefs or selector can be set",
        "spec.selector.matchLabels[version]: Invalid value: \"v*\": wildcard not allowed in label value match",
        "spec.url: Invalid value: \"ftp://example.com/plugin.wasm\": url must have schema one of [http, https, file, oci]",
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
        assert_eq!(validate(&vs).is_ok(), ok, "fixedDelay {delay}");
    }
    // Every rule runs, whatever field it sits on: a TLS server with one
    // credential passes, with two kinds of credential it is refused.
    let mut gateway = get(&objects, "Gateway", "sms-checker-gateway").clone();
    gateway["spec"]["servers"][0]["tls"] = json!({"mode": "SIMPLE", "credentialName": "cert"});
    validate(&gateway).expect("a TLS server with one credential");
    gateway["spec"]["servers"][0]["tls"]["credentialNames"] = json!(["a", "b"]);
    let err = validate(&gateway).expect_err("two kinds of credential accepted");
    assert!(
        err.to_string()
            .contains("only one of credentialName or credentialNames can be set"),
        "{err}"
    );

    // kubernetes-validate: unknown field, and a kind it has no schema for.
    let mut deployment = get(&objects, "Deployment", "model-deployment-v1").clone();
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = json!({});
    let err = schemas::kubernetes_validate(&[&deployment], KUBERNETES_VERSION)
        .expect_err("unknown Deployment field accepted");
    assert!(err.to_string().contains("readinessProbes"), "{err}");
    let err = schemas::kubernetes_validate(&[virtual_service(&objects)], KUBERNETES_VERSION)
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
        &[
            ("istio.routingApi", "GatewayAPI"),
            ("filter.api", "TrafficExtension"),
            ("experiment.override.tokenSha256", token_sha),
        ],
        &[
            ("istio.routingApi", "GatewayAPI"),
            ("istio.dataplaneMode", "ambient"),
            ("versions.v2.enabled", "false"),
        ],
    ];
    for sets in cases {
        let objects = render_valid(sets);
        let plugins = filter_resources(&objects);
        assert!(plugins.len() >= 3, "{sets:?}: filter resources rendered");
        for plugin in plugins {
            let json = serde_json::to_vec(filter_config(plugin)).expect("json");
            let config = PluginConfig::from_json(&json)
                .unwrap_or_else(|e| panic!("{sets:?}: filter refused {}: {e}", describe(plugin)));
            let rendered: Vec<(String, i64)> = config
                .cohorts
                .iter()
                .map(|c| (c.name.clone(), i64::from(c.weight)))
                .collect();
            assert_eq!(rendered, cohorts(filter_config(plugin)));
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
