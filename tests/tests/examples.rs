//! The example manifests for Flagger and Argo Rollouts
//! (`manifests/examples/`): valid against the controllers' published CRDs
//! (pinned in tests/crd-pins.txt, checked with Kubernetes' own API server
//! code by crd-check), Istio's and Kubernetes' schemas, and the
//! controllers' own Go types; and in step with the chart they run
//! beside: the gate's Service and routes, the cohort header and cohort, the
//! Gateway and host, the labels the sidecar filter selects, the
//! model-service's header names, the verdicts the gate answers with.

use std::path::PathBuf;
use std::process::Command;

use meshctl::gate::hooks::Hook;
use meshctl::report::Verdict;
use serde_json::{Value, json};
use sms_checker_tests::chart::{ChartError, chart_dir, is_crd_kind, parse_objects};
use sms_checker_tests::rendered::get;
use sms_checker_tests::schemas::{
    KUBERNETES_VERSIONS, controller_crd_set, crd_validate, crd_validate_all, kubernetes_validate,
};
use sms_checker_tests::{helm_bin, printed, tool, workspace_root};

fn examples_dir() -> PathBuf {
    workspace_root().join("manifests/examples")
}

/// Every example file, and its objects.
fn examples() -> Vec<(PathBuf, Vec<Value>)> {
    let mut out = Vec::new();
    for controller in ["flagger", "argo-rollouts"] {
        let dir = examples_dir().join(controller);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        files.sort();
        for file in files {
            let text = std::fs::read_to_string(&file).expect("read an example");
            let objects =
                parse_objects(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            out.push((file, objects));
        }
    }
    out
}

fn of_kind(kind: &str) -> Value {
    examples()
        .into_iter()
        .flat_map(|(_, objects)| objects)
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} among the examples"))
}

fn controller_group(object: &Value) -> bool {
    let api = object["apiVersion"].as_str().unwrap_or_default();
    api.starts_with("flagger.app/") || api.starts_with("argoproj.io/")
}

/// Validates objects of the controllers' kinds against their pinned CRDs.
fn controllers_validate(objects: &[&Value]) -> Result<(), ChartError> {
    let set = controller_crd_set().unwrap_or_else(|e| panic!("{e}"));
    crd_validate(objects, std::slice::from_ref(&set))
}

#[test]
fn the_examples_are_valid_against_every_schema() {
    let (mut controllers, mut istio, mut core) = (Vec::new(), Vec::new(), Vec::new());
    let all: Vec<Value> = examples().into_iter().flat_map(|(_, o)| o).collect();
    for object in &all {
        if controller_group(object) {
            controllers.push(object);
        } else if is_crd_kind(object) {
            istio.push(object);
        } else {
            core.push(object);
        }
    }
    let mut kinds: Vec<&str> = controllers
        .iter()
        .filter_map(|o| o["kind"].as_str())
        .collect();
    kinds.sort();
    assert_eq!(kinds, ["AnalysisTemplate", "Canary", "Rollout"]);
    controllers_validate(&controllers).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(istio.len(), 2, "the Argo example's routes");
    crd_validate_all(&istio).unwrap_or_else(|e| panic!("{e}"));
    for version in KUBERNETES_VERSIONS {
        kubernetes_validate(&core, version).unwrap_or_else(|e| panic!("{e}"));
    }
}

// The CRD check is real: an unknown field and a wrong type are refused.
#[test]
fn the_crds_refuse_what_the_controllers_would() {
    let mut canary = of_kind("Canary");
    canary["spec"]["analysis"]["iterationz"] = json!(10);
    let err = controllers_validate(&[&canary]).expect_err("an unknown field");
    assert!(err.to_string().contains("iterationz"), "{err}");
    let mut template = of_kind("AnalysisTemplate");
    template["spec"]["metrics"][0]["provider"]["web"]["timeoutSeconds"] = json!("thirty");
    assert!(matches!(
        controllers_validate(&[&template]),
        Err(ChartError::Invalid { .. })
    ));
}

/// `controller-check decode`: the controllers' Go types, strictly.
#[test]
fn the_controllers_own_types_decode_the_examples() {
    let files: Vec<PathBuf> = examples().into_iter().map(|(file, _)| file).collect();
    let output = Command::new(tool(
        "CONTROLLER_CHECK_BIN",
        ".tools/controller-check/controller-check",
    ))
    .arg("decode")
    .args(&files)
    .output()
    .expect("run controller-check (make controller-check)");
    assert!(output.status.success(), "{}", printed(&output));
    let lines: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    for line in &lines {
        assert_eq!(line["ok"], true, "{line}");
    }
    let checked = lines.iter().filter(|l| l["checked"] == true).count();
    assert_eq!(checked, 3, "{lines:?}");
}

/// The chart as the examples expect it: release sms-checker in namespace
/// sms, with the gate.
fn chart() -> Vec<Value> {
    let text = meshctl::chart::render(
        &helm_bin(),
        &meshctl::chart::Render {
            chart: chart_dir(),
            release: "sms-checker".into(),
            namespace: Some("sms".into()),
            sets: vec!["gate.enabled=true".into()],
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    parse_objects(&text).unwrap_or_else(|e| panic!("{e}"))
}

/// `http://<Service>.<namespace>:<port><path>` of the chart's gate.
fn gate_url(chart: &[Value], path: &str) -> String {
    let service = get(chart, "Service", "model-service-gate");
    format!(
        "http://{}.{}:{}{path}",
        service["metadata"]["name"].as_str().unwrap_or_default(),
        service["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default(),
        service["spec"]["ports"][0]["port"]
    )
}

#[test]
fn the_examples_call_the_charts_gate_and_route_on_its_cohorts() {
    let chart = chart();
    let filter = get(&chart, "WasmPlugin", "sms-checker-cohort-gateway");
    let header = filter["spec"]["pluginConfig"]["cohortHeader"]
        .as_str()
        .expect("header");
    let cohorts: Vec<&str> = filter["spec"]["pluginConfig"]["cohorts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert!(cohorts.contains(&"canary"), "{cohorts:?}");
    let gateway = get(&chart, "Gateway", "sms-checker-gateway");
    let host = gateway["spec"]["servers"][0]["hosts"][0]
        .as_str()
        .unwrap_or_default();
    let host = host.split('/').next_back().unwrap_or_default();

    // Flagger: its A/B match, its Gateway and host, a webhook per hook type
    // the gate serves, each at the gate's Service.
    let canary = of_kind("Canary");
    let spec = &canary["spec"];
    assert_eq!(
        spec["analysis"]["match"][0]["headers"][header]["exact"],
        "canary"
    );
    assert_eq!(spec["service"]["gateways"][0], "sms-checker-gateway");
    assert_eq!(spec["service"]["hosts"][0], host);
    let hooks = spec["analysis"]["webhooks"].as_array().expect("webhooks");
    for hook in hooks {
        let kind = hook["type"].as_str().unwrap_or_default();
        assert!(Hook::flagger(kind).is_some(), "the gate serves no {kind}");
        assert_eq!(hook["url"], gate_url(&chart, &format!("/flagger/{kind}")));
    }
    assert_eq!(hooks.len(), 4);

    // Argo Rollouts: the managed header route on the cohort, the web metric
    // at the gate, and conditions on the verdicts the gate answers with.
    let rollout = of_kind("Rollout");
    let steps = rollout["spec"]["strategy"]["canary"]["steps"]
        .as_array()
        .expect("steps");
    let route = steps
        .iter()
        .find_map(|s| s.get("setHeaderRoute"))
        .expect("a setHeaderRoute step");
    assert_eq!(route["match"][0]["headerName"], header);
    assert_eq!(route["match"][0]["headerValue"]["exact"], "canary");
    assert!(
        steps.iter().all(|s| s.get("setWeight").is_none()),
        "no weighted step"
    );
    let template = of_kind("AnalysisTemplate");
    let metric = &template["spec"]["metrics"][0];
    assert_eq!(
        metric["provider"]["web"]["url"],
        gate_url(&chart, "/argo/verdict?session={{args.session}}")
    );
    let name = |v: Verdict| {
        serde_json::to_value(v)
            .expect("a verdict")
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(
        metric["successCondition"],
        format!("result.verdict == \"{}\"", name(Verdict::Promote))
    );
    assert_eq!(
        metric["failureCondition"],
        format!("result.verdict == \"{}\"", name(Verdict::RollBack))
    );
    let service = of_kind("VirtualService");
    assert_eq!(service["spec"]["gateways"][0], "sms-checker-gateway");
    assert_eq!(service["spec"]["hosts"][0], host);
}

// The example pods are the chart's sidecar filter's: their labels satisfy
// its WasmPlugin's selector for v1 (and for v2 once a revision says so), and
// the model-service gets the header names the chart gives it.
#[test]
fn the_examples_pods_get_the_charts_sidecar_filter_and_header_names() {
    let chart = chart();
    let plugin = |version: &str| {
        get(
            &chart,
            "WasmPlugin",
            &format!("sms-checker-cohort-{version}"),
        )
        .clone()
    };
    let env_of = |pod: &Value| -> Vec<(String, String)> {
        pod["spec"]["containers"][0]["env"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    e["name"].as_str().unwrap_or_default().into(),
                    e["value"].as_str().unwrap_or_default().into(),
                )
            })
            .collect()
    };
    let chart_env = env_of(&get(&chart, "Deployment", "model-deployment-v1")["spec"]["template"]);
    for kind in ["Deployment", "Rollout"] {
        let object = of_kind(kind);
        let pod = &object["spec"]["template"];
        for version in ["v1", "v2"] {
            let mut labels = pod["metadata"]["labels"].clone();
            labels["version"] = json!(version);
            let selector = plugin(version)["spec"]["selector"]["matchLabels"].clone();
            for (key, value) in selector.as_object().expect("a selector") {
                assert_eq!(&labels[key], value, "{kind}'s pods for {version}: {key}");
            }
        }
        let env = env_of(pod);
        for name in [
            "PREDICTION_HEADER",
            "COHORT_HEADER",
            "COHORT_RESPONSE_HEADER",
            "SERVER_PORT",
        ] {
            let ours = env.iter().find(|(n, _)| n == name);
            let theirs = chart_env.iter().find(|(n, _)| n == name);
            assert!(ours.is_some(), "{kind} sets {name}");
            assert_eq!(ours, theirs, "{kind}: {name} as the chart sets it");
        }
    }
}
