//! The chart's opt-in security objects: AuthorizationPolicy,
//! PeerAuthentication and NetworkPolicy, rendered and validated.

use serde_json::{Value, json};
use sms_checker_tests::chart::{describe, of_kind};
use sms_checker_tests::rendered::{assert_refused, get, render_error, render_valid};
use sms_checker_tests::schemas::{self, KUBERNETES_VERSION};

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
    assert_refused(schema_cases);
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
    let err = schemas::crd_validate_all(&[&policy]).expect_err("CEL rule not applied");
    assert!(
        err.to_string()
            .contains("Cannot set serviceAccounts with namespaces or principals"),
        "{err}"
    );
    let mut policy = get(&objects, "AuthorizationPolicy", "model-service").clone();
    policy["spec"]["action"] = json!("PERMIT");
    assert!(
        schemas::crd_validate_all(&[&policy]).is_err(),
        "bad action accepted"
    );
    let mut peer = get(&objects, "PeerAuthentication", "model-service").clone();
    peer["spec"]["selector"] = json!({});
    peer["spec"]["portLevelMtls"] = json!({"8081": {"mode": "DISABLE"}});
    let err = schemas::crd_validate_all(&[&peer]).expect_err("CEL rule not applied");
    assert!(
        err.to_string().contains("portLevelMtls requires selector"),
        "{err}"
    );
    let mut network = get(&objects, "NetworkPolicy", "model-service").clone();
    network["spec"]["ingress"][0]["from"][0]["namespaceSelectors"] = json!({});
    let err = schemas::kubernetes_validate(&[&network], KUBERNETES_VERSION)
        .expect_err("unknown NetworkPolicy field accepted");
    assert!(err.to_string().contains("namespaceSelectors"), "{err}");
}
