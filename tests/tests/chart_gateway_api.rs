//! The chart's Gateway API mode (`istio.routingApi=GatewayAPI`), the
//! TrafficExtension delivery of the filter (`filter.api`) and the ambient
//! profile (`istio.dataplaneMode=ambient`), rendered by the real helm and
//! validated against every pinned set of Istio and Gateway API CRDs. How
//! Istio translates them is checked by istiod-local's Go tests
//! (`gatewayapi_test.go`, `ambient_test.go`).

use std::collections::BTreeMap;

use serde_json::{Value, json};
use sms_checker_tests::chart::{self, describe, find, of_kind};
use sms_checker_tests::rendered::{
    assert_refused, destinations, filter_config, filter_resources, get, names_of, render_valid,
    virtual_service,
};

const GATEWAY_API: (&str, &str) = ("istio.routingApi", "GatewayAPI");
const AMBIENT: (&str, &str) = ("istio.dataplaneMode", "ambient");
const TRAFFIC_EXTENSION: (&str, &str) = ("filter.api", "TrafficExtension");

/// What a route says, whatever API it is written in: the cohort it
/// matches, the versions it sends to with their weights, and the version it
/// mirrors to with the share in percent.
#[derive(Debug, PartialEq)]
struct Rule {
    cohort: Option<String>,
    to: Vec<(String, Option<i64>)>,
    mirror: Option<(String, f64)>,
}

/// The VirtualService's routes by name, versions named by their subsets.
fn virtual_service_rules(objects: &[Value]) -> BTreeMap<String, Rule> {
    let vs = virtual_service(objects);
    vs["spec"]["http"]
        .as_array()
        .expect("http routes")
        .iter()
        .map(|r| {
            let rule = Rule {
                cohort: r["match"][0]["headers"]["x-experiment-cohort"]["exact"]
                    .as_str()
                    .map(str::to_string),
                to: destinations(r),
                mirror: r["mirror"]["subset"].as_str().map(|subset| {
                    (
                        subset.to_string(),
                        r["mirrorPercentage"]["value"].as_f64().expect("percentage"),
                    )
                }),
            };
            (r["name"].as_str().expect("name").to_string(), rule)
        })
        .collect()
}

/// The version a per-version Service stands for.
fn version_of(service: &Value) -> String {
    let name = service.as_str().expect("a backend name");
    name.strip_prefix("model-service-")
        .unwrap_or_else(|| panic!("{name} is not a version's Service"))
        .to_string()
}

/// An HTTPRoute's rules by name, versions named by their Services.
fn http_route_rules(route: &Value) -> BTreeMap<String, Rule> {
    route["spec"]["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| {
            let matches = r["matches"].as_array().expect("matches");
            assert_eq!(matches.len(), 1, "{r}");
            assert_eq!(
                matches[0]["path"],
                json!({"type": "PathPrefix", "value": "/"}),
                "{r}"
            );
            let cohort = matches[0]["headers"].as_array().map(|headers| {
                assert_eq!(headers.len(), 1, "{r}");
                assert_eq!(headers[0]["type"], "Exact");
                assert_eq!(headers[0]["name"], "x-experiment-cohort");
                headers[0]["value"].as_str().expect("value").to_string()
            });
            let to = r["backendRefs"]
                .as_array()
                .expect("backendRefs")
                .iter()
                .map(|b| {
                    assert_eq!(b["port"], 8081, "{b}");
                    (version_of(&b["name"]), b["weight"].as_i64())
                })
                .collect();
            let mirror = r["filters"].as_array().map(|filters| {
                assert_eq!(filters.len(), 1, "{r}");
                assert_eq!(filters[0]["type"], "RequestMirror");
                let mirror = &filters[0]["requestMirror"];
                assert_eq!(mirror["backendRef"]["port"], 8081);
                let share = match mirror["percent"].as_f64() {
                    Some(percent) => percent,
                    None => {
                        let f = &mirror["fraction"];
                        100.0 * f["numerator"].as_f64().expect("numerator")
                            / f["denominator"].as_f64().expect("denominator")
                    }
                };
                (version_of(&mirror["backendRef"]["name"]), share)
            });
            let rule = Rule { cohort, to, mirror };
            (r["name"].as_str().expect("name").to_string(), rule)
        })
        .collect()
}

fn with<'a>(base: &[(&'a str, &'a str)], more: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    base.iter().chain(more).copied().collect()
}

/// For the seed's values and the others that shape the routes, the
/// HTTPRoutes say what the VirtualService says: the same rules, cohorts,
/// versions, weights and mirror, on the ingress Gateway and (GAMMA) on the
/// model-service Service.
#[test]
fn http_routes_say_what_the_virtual_service_says() {
    let cases: &[&[(&str, &str)]] = &[
        &[],
        &[
            ("istio.trafficSplit.stable", "95"),
            ("istio.trafficSplit.canary", "5"),
            ("istio.mirror.percentage", "12.5"),
        ],
        &[("versions.v2.enabled", "false")],
        &[
            ("istio.trafficSplit.stable", "100"),
            ("istio.trafficSplit.canary", "0"),
        ],
        &[("versions.v3.enabled", "false")],
    ];
    for sets in cases {
        let reference = chart::render(sets).unwrap_or_else(|e| panic!("{e}"));
        let want = virtual_service_rules(&reference);
        let objects = render_valid(&with(&[GATEWAY_API], sets));
        for kind in ["VirtualService", "DestinationRule"] {
            assert!(of_kind(&objects, kind).is_empty(), "{sets:?}: {kind}");
        }
        let ingress = get(&objects, "HTTPRoute", "model-service");
        assert_eq!(http_route_rules(ingress), want, "{sets:?}: ingress route");
        assert_eq!(ingress["spec"]["hostnames"], json!(["sms-checker.local"]));
        assert_eq!(
            ingress["spec"]["parentRefs"],
            json!([{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "sms-checker-gateway"}])
        );
        let mesh = get(&objects, "HTTPRoute", "model-service-mesh");
        assert_eq!(http_route_rules(mesh), want, "{sets:?}: mesh route");
        assert_eq!(
            mesh["spec"]["parentRefs"],
            json!([{"group": "", "kind": "Service", "name": "model-service", "port": 8081}])
        );
        assert!(mesh["spec"].get("hostnames").is_none());
    }
}

/// One Service per enabled version selects exactly that version's pods,
/// beside the model-service Service; the Gateway serves the host on the
/// port, deployed by Istio (class istio), with the filter's proxy config
/// for the pods Istio deploys.
#[test]
fn gateway_api_objects_select_and_serve_what_they_should() {
    let objects = render_valid(&[GATEWAY_API, ("istio.host", "custom.grader.local")]);
    assert_eq!(
        names_of(&objects, "Service"),
        [
            "model-service",
            "model-service-v1",
            "model-service-v2",
            "model-service-v3"
        ]
    );
    for version in ["v1", "v2", "v3"] {
        let service = get(&objects, "Service", &format!("model-service-{version}"));
        assert!(
            service["metadata"]["labels"].get("app").is_none(),
            "the ServiceMonitor selects model-service by its app label only"
        );
        for deployment in of_kind(&objects, "Deployment") {
            let labels = &deployment["spec"]["template"]["metadata"]["labels"];
            let selected = service["spec"]["selector"]
                .as_object()
                .expect("selector")
                .iter()
                .all(|(k, v)| &labels[k] == v);
            let name = deployment["metadata"]["name"].as_str().unwrap_or_default();
            assert_eq!(
                selected,
                name.ends_with(version),
                "{} selects {name}",
                describe(service)
            );
        }
    }
    let gateway = find(&objects, "Gateway", "sms-checker-gateway").expect("Gateway");
    assert_eq!(gateway["apiVersion"], "gateway.networking.k8s.io/v1");
    assert_eq!(gateway["spec"]["gatewayClassName"], "istio");
    assert_eq!(
        gateway["spec"]["listeners"],
        json!([{"name": "http", "port": 80, "protocol": "HTTP", "hostname": "custom.grader.local",
                "allowedRoutes": {"namespaces": {"from": "Same"}}}])
    );
    let pod_config = &get(&objects, "Deployment", "model-deployment-v1")["spec"]["template"]["metadata"]
        ["annotations"]["proxy.istio.io/config"];
    assert_eq!(
        &gateway["spec"]["infrastructure"]["annotations"]["proxy.istio.io/config"],
        pod_config
    );
    assert_eq!(
        get(&objects, "HTTPRoute", "model-service")["spec"]["hostnames"],
        json!(["custom.grader.local"])
    );

    // Without mesh routing only the ingress route is rendered.
    let objects = render_valid(&[GATEWAY_API, ("istio.meshRouting", "false")]);
    assert_eq!(names_of(&objects, "HTTPRoute"), ["model-service"]);
}

/// The filter by either API: the gateway role attached to the Gateway by
/// reference (the pods Istio deploys for it carry no `istio` label), the
/// sidecar role to each version's pods by selector, each before routing,
/// with the same module source and config as the WasmPlugins.
#[test]
fn the_filter_attaches_to_the_gateway_by_reference() {
    let wasm_plugins = render_valid(&[GATEWAY_API]);
    let extensions = render_valid(&[GATEWAY_API, TRAFFIC_EXTENSION]);
    assert!(of_kind(&extensions, "WasmPlugin").is_empty());
    for objects in [&wasm_plugins, &extensions] {
        let gateway = filter_resources(objects)
            .into_iter()
            .find(|o| o["metadata"]["name"] == "sms-checker-cohort-gateway")
            .expect("gateway filter");
        assert_eq!(gateway["metadata"]["namespace"], "demo");
        assert_eq!(
            gateway["spec"]["targetRefs"],
            json!([{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "sms-checker-gateway"}])
        );
        assert!(gateway["spec"].get("selector").is_none());
    }
    for extension in of_kind(&extensions, "TrafficExtension") {
        let name = extension["metadata"]["name"].as_str().expect("name");
        let plugin = get(&wasm_plugins, "WasmPlugin", name);
        let (spec, wasm) = (&extension["spec"], &extension["spec"]["wasm"]);
        assert_eq!(spec["phase"], "AUTHN", "{name}");
        assert_eq!(spec["priority"], plugin["spec"]["priority"]);
        assert_eq!(spec.get("targetRefs"), plugin["spec"].get("targetRefs"));
        assert_eq!(spec.get("selector"), plugin["spec"].get("selector"));
        assert_eq!(spec.get("match"), plugin["spec"].get("match"));
        for field in ["url", "imagePullPolicy", "failStrategy", "type"] {
            assert_eq!(wasm[field], plugin["spec"][field], "{name} {field}");
        }
        assert_eq!(filter_config(extension), filter_config(plugin), "{name}");
    }
    // A Gateway this chart does not create: attached to it in its namespace.
    let objects = render_valid(&[
        GATEWAY_API,
        TRAFFIC_EXTENSION,
        ("istio.gateway.enabled", "false"),
        ("istio.gateway.name", "ingress/shared"),
    ]);
    assert!(of_kind(&objects, "Gateway").is_empty());
    let gateway = get(&objects, "TrafficExtension", "sms-checker-cohort-gateway");
    assert_eq!(gateway["metadata"]["namespace"], "ingress");
    assert_eq!(gateway["spec"]["targetRefs"][0]["name"], "shared");
    assert_eq!(
        get(&objects, "HTTPRoute", "model-service")["spec"]["parentRefs"],
        json!([{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "shared", "namespace": "ingress"}])
    );
}

/// Ambient: no sidecar, a waypoint every Service sends through (the ingress
/// too), the sidecar role attached to each version's Service, which Istio
/// runs at that Service's waypoint; monitoring follows the waypoint.
#[test]
fn ambient_profile_runs_the_sidecar_role_at_the_waypoint() {
    let objects = render_valid(&[
        GATEWAY_API,
        AMBIENT,
        ("monitoring.podMonitor.enabled", "true"),
    ]);
    for deployment in of_kind(&objects, "Deployment") {
        let template = &deployment["spec"]["template"]["metadata"];
        assert_eq!(
            template["labels"]["istio.io/dataplane-mode"],
            "ambient",
            "{}",
            describe(deployment)
        );
        assert_eq!(template["labels"]["sidecar.istio.io/inject"], "false");
        assert!(
            template["annotations"]
                .get("proxy.istio.io/config")
                .is_none()
        );
    }
    let waypoint = get(&objects, "Gateway", "model-service-waypoint");
    assert_eq!(waypoint["spec"]["gatewayClassName"], "istio-waypoint");
    assert_eq!(
        waypoint["metadata"]["labels"]["istio.io/waypoint-for"],
        "service"
    );
    assert_eq!(
        waypoint["spec"]["listeners"],
        json!([{"name": "mesh", "port": 15008, "protocol": "HBONE"}])
    );
    assert!(
        waypoint["spec"]["infrastructure"]["annotations"]["proxy.istio.io/config"]
            .as_str()
            .is_some_and(|c| c.contains("- version")),
        "the waypoint labels the sidecar role's metrics"
    );
    for service in of_kind(&objects, "Service") {
        let labels = &service["metadata"]["labels"];
        assert_eq!(labels["istio.io/use-waypoint"], "model-service-waypoint");
        assert_eq!(labels["istio.io/ingress-use-waypoint"], "true");
    }
    for version in ["v1", "v2", "v3"] {
        let filter = get(
            &objects,
            "WasmPlugin",
            &format!("sms-checker-cohort-{version}"),
        );
        assert_eq!(
            filter["spec"]["targetRefs"],
            json!([{"group": "", "kind": "Service", "name": format!("model-service-{version}")}])
        );
        assert!(filter["spec"].get("selector").is_none() && filter["spec"].get("match").is_none());
        assert_eq!(filter["spec"]["pluginConfig"]["version"], version);
        assert_eq!(filter["spec"]["pluginConfig"]["mirrored"], version == "v3");
    }
    let pod_monitor = get(&objects, "PodMonitor", "model-service-envoy");
    assert_eq!(
        pod_monitor["spec"]["selector"]["matchLabels"],
        json!({"gateway.networking.k8s.io/gateway-name": "model-service-waypoint"})
    );
}

/// Ambient security: the waypoint (it sees HTTP) admits the ingress
/// gateway Istio deploys and the mesh callers to the API; ztunnel admits
/// only the waypoint and Prometheus to the pods; the NetworkPolicy lets in
/// HBONE from the waypoint, the probes and Prometheus.
#[test]
fn ambient_security_targets_the_waypoint() {
    let objects = render_valid(&[
        GATEWAY_API,
        AMBIENT,
        ("security.authorizationPolicy.enabled", "true"),
        ("security.peerAuthentication.enabled", "true"),
        ("security.networkPolicy.enabled", "true"),
        ("security.meshCallers.namespaces[0]", "web"),
    ]);
    let l7 = get(&objects, "AuthorizationPolicy", "model-service");
    assert_eq!(
        l7["spec"]["targetRefs"],
        json!([{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "model-service-waypoint"}])
    );
    let rules = l7["spec"]["rules"].as_array().expect("rules");
    assert_eq!(
        rules.len(),
        1,
        "no /metrics rule: Prometheus scrapes the pods"
    );
    assert_eq!(
        rules[0]["from"],
        json!([
            {"source": {"principals": ["cluster.local/ns/demo/sa/sms-checker-gateway-istio"]}},
            {"source": {"namespaces": ["web"]}}
        ])
    );
    let l4 = get(&objects, "AuthorizationPolicy", "model-service-pods");
    assert_eq!(
        l4["spec"]["rules"][0]["from"],
        json!([{"source": {"principals": ["cluster.local/ns/demo/sa/model-service-waypoint"]}}])
    );
    for rule in l4["spec"]["rules"].as_array().expect("rules") {
        for operation in rule["to"].as_array().expect("to") {
            assert_eq!(
                operation["operation"],
                json!({"ports": ["8081"]}),
                "ztunnel enforces ports, not HTTP fields"
            );
        }
    }
    let network = get(&objects, "NetworkPolicy", "model-service");
    let ingress = network["spec"]["ingress"].as_array().expect("ingress");
    assert_eq!(
        ingress[0],
        json!({"from": [{"podSelector": {"matchLabels": {"gateway.networking.k8s.io/gateway-name": "model-service-waypoint"}}}],
               "ports": [{"port": 15008, "protocol": "TCP"}]})
    );
    assert_eq!(ingress[1]["from"][0]["ipBlock"]["cidr"], "169.254.7.127/32");

    // Gateway API with sidecars: the gateway's identity and pods are the
    // ones Istio deploys for the Gateway.
    let objects = render_valid(&[
        GATEWAY_API,
        ("security.authorizationPolicy.enabled", "true"),
        ("security.networkPolicy.enabled", "true"),
    ]);
    assert_eq!(
        get(&objects, "AuthorizationPolicy", "model-service")["spec"]["rules"][0]["from"],
        json!([{"source": {"principals": ["cluster.local/ns/demo/sa/sms-checker-gateway-istio"]}}])
    );
    assert_eq!(
        get(&objects, "NetworkPolicy", "model-service")["spec"]["ingress"][0]["from"][0],
        json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "demo"}},
               "podSelector": {"matchLabels": {"gateway.networking.k8s.io/gateway-name": "sms-checker-gateway"}}})
    );
}

/// What the modes cannot do is refused naming the values.
#[test]
fn mode_combinations_that_cannot_work_are_refused() {
    assert_refused(&[
        (
            &[AMBIENT],
            "istio.dataplaneMode=ambient needs istio.routingApi=GatewayAPI",
        ),
        (
            &[GATEWAY_API, ("versions.v2.fault.abort.percentage", "20")],
            "versions.v2.fault.abort.percentage=20 needs istio.routingApi=VirtualService: HTTPRoute has no fault injection",
        ),
        (
            &[GATEWAY_API, ("versions.v1.fault.delay.percentage", "5")],
            "versions.v1.fault.delay.percentage=5 needs istio.routingApi=VirtualService",
        ),
        (
            &[
                GATEWAY_API,
                AMBIENT,
                ("istio.waypoint.name", "sms-checker-gateway"),
            ],
            "istio.waypoint.name=sms-checker-gateway is the ingress Gateway's name too",
        ),
        (&[("istio.routingApi", "Ingress")], "/istio/routingApi"),
        (
            &[("istio.dataplaneMode", "proxyless")],
            "/istio/dataplaneMode",
        ),
        (&[("filter.api", "EnvoyFilter")], "/filter/api"),
    ]);
}
