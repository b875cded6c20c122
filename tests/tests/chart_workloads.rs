//! The chart's workloads, rendered and validated like every chart test: pods,
//! images, scaling, monitoring, and how a release is reached.

use serde_json::{Value, json};
use sms_checker_tests::chart::{self, describe, of_kind};
use sms_checker_tests::rendered::{get, names_of, render_valid, virtual_service};
use sms_checker_tests::schemas;

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
        schemas::prometheus_operator_validate(&[&bad]).expect_err("bad ServiceMonitor accepted");
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
    // The rollout's own metrics (meshctl rollout --metrics-addr): every
    // series a panel reads is one the rollout exports.
    let exported = meshctl::rollout::metrics::RolloutMetrics::new()
        .expect("the rollout's metrics")
        .names();
    let read: Vec<&String> = exprs
        .iter()
        .filter(|e| e.contains("meshctl_rollout_"))
        .collect();
    assert!(read.len() >= 6, "rollout panels: {read:?}");
    for expr in read {
        let name = expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .find(|w| w.starts_with("meshctl_rollout_"))
            .expect("a rollout series");
        assert!(
            exported.iter().any(|e| e == name),
            "{name} is not a rollout metric: {exported:?}"
        );
    }

    let objects = render_valid(&[("monitoring.grafanaDashboard.namespace", "grafana")]);
    assert_eq!(
        get(&objects, "ConfigMap", "model-service-dashboard")["metadata"]["namespace"],
        "grafana"
    );
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
