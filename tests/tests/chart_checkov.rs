//! checkov (its Kubernetes checks) on the chart as helm renders it: the
//! defaults, the seed's `--set` variants and the security values on. No
//! check may fail. The checks the chart does not meet on purpose carry a
//! `checkov.io/skipN` annotation with their reason on the object, only where
//! the values make them apply; the chart README lists each with the same
//! reason. A new finding fails the test.
//!
//! Needs checkov from `make tools` (`.venv`, pinned in
//! scripts/requirements-tools.txt) and helm.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;
use sms_checker_tests::chart::chart_dir;
use sms_checker_tests::{helm_bin, tool};

/// The checks the chart skips on purpose, and the value that decides each.
const KNOWN_SKIPS: [(&str, &str); 3] = [
    ("CKV_K8S_21", "the release namespace (helm --namespace)"),
    ("CKV_K8S_43", "modelService.image.digest"),
    ("CKV2_K8S_6", "security.networkPolicy.enabled"),
];

const SECURITY_ON: [&str; 4] = [
    "security.authorizationPolicy.enabled=true",
    "security.peerAuthentication.enabled=true",
    "security.networkPolicy.enabled=true",
    "security.meshCallers.namespaces[0]=web",
];

/// One checkov run: its summary and every check result.
struct Scan {
    summary: Value,
    passed: Vec<Value>,
    failed: Vec<Value>,
    skipped: Vec<Value>,
}

impl Scan {
    /// `(check id, resource)` of the skipped checks.
    fn skips(&self) -> BTreeSet<(String, String)> {
        self.skipped
            .iter()
            .map(|c| (text(c, "check_id"), text(c, "resource")))
            .collect()
    }

    /// Every resource checkov evaluated.
    fn resources(&self) -> BTreeSet<String> {
        self.passed
            .iter()
            .chain(&self.skipped)
            .chain(&self.failed)
            .map(|c| text(c, "resource"))
            .collect()
    }
}

fn text(check: &Value, field: &str) -> String {
    check[field].as_str().unwrap_or_default().to_string()
}

/// `helm template sms-checker <chart>` (the release namespace is `default`
/// unless `namespace` is given), scanned by checkov.
fn scan(namespace: Option<&str>, sets: &[&str]) -> Scan {
    let rendered = meshctl::chart::render(
        &helm_bin(),
        &meshctl::chart::Render {
            chart: chart_dir(),
            release: "sms-checker".into(),
            namespace: namespace.map(str::to_string),
            sets: sets.iter().map(|set| set.to_string()).collect(),
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().expect("temp dir");
    let manifest = dir.path().join("sms-checker.yaml");
    std::fs::write(&manifest, rendered).expect("write the render");
    let output = Command::new(tool("CHECKOV_BIN", ".venv/bin/checkov"))
        .current_dir(dir.path())
        .args([
            "--framework",
            "kubernetes",
            "--output",
            "json",
            "--skip-download",
        ])
        .arg("--file")
        .arg(&manifest)
        // Offline: no guideline mapping from the vendor's platform.
        .env("BC_SKIP_MAPPING", "TRUE")
        .output()
        .expect("run checkov");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|err| {
        panic!(
            "checkov printed no JSON report ({err}):\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let list = |kind: &str| {
        report["results"][kind]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let scan = Scan {
        summary: report["summary"].clone(),
        passed: list("passed_checks"),
        failed: list("failed_checks"),
        skipped: list("skipped_checks"),
    };
    assert_eq!(
        scan.summary["parsing_errors"], 0,
        "checkov could not parse the render: {}",
        scan.summary
    );
    scan
}

/// No failure, a real scan of the chart's objects, and each skip one of the
/// known ones, with the reason the README gives for it.
fn assert_clean(what: &str, scan: &Scan, deployments: &[&str]) {
    let failures: Vec<String> = scan
        .failed
        .iter()
        .map(|c| {
            format!(
                "{} {} on {}",
                text(c, "check_id"),
                text(c, "check_name"),
                text(c, "resource")
            )
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{what}: checkov failed {} check(s):\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
    assert_eq!(scan.summary["failed"], 0, "{what}: {}", scan.summary);
    let resources = scan.resources();
    for deployment in deployments {
        assert!(
            resources
                .iter()
                .any(|r| r.starts_with("Deployment.") && r.ends_with(deployment)),
            "{what}: {deployment} not scanned; scanned {resources:?}"
        );
    }
    assert!(
        scan.passed.len() > 80 * deployments.len(),
        "{what}: only {} checks passed",
        scan.passed.len()
    );
    let readme = std::fs::read_to_string(chart_dir().join("README.md")).expect("chart README");
    for skip in &scan.skipped {
        let id = text(skip, "check_id");
        let reason = skip["check_result"]["suppress_comment"]
            .as_str()
            .unwrap_or_default();
        assert!(
            KNOWN_SKIPS.iter().any(|(known, _)| *known == id),
            "{what}: {id} skipped on {} is not a known skip",
            text(skip, "resource")
        );
        assert!(
            !reason.trim().is_empty(),
            "{what}: {id} skipped without a reason"
        );
        assert!(
            readme.contains(&format!("| `{id}` |")) && readme.contains(reason),
            "{what}: the chart README's Security section does not list {id} with {reason:?}"
        );
    }
}

fn ids(scan: &Scan) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (id, _) in scan.skips() {
        *out.entry(id).or_default() += 1;
    }
    out
}

const ALL_VERSIONS: [&str; 3] = [
    "model-deployment-v1",
    "model-deployment-v2",
    "model-deployment-v3",
];

#[test]
fn default_render_passes() {
    let scan = scan(None, &[]);
    assert_clean("defaults", &scan, &ALL_VERSIONS);
    // What `default` and the defaults decide, and nothing else: the
    // namespace on every object checked for it, the tag and the missing
    // NetworkPolicy on each version.
    assert_eq!(
        ids(&scan),
        BTreeMap::from([
            ("CKV2_K8S_6".to_string(), 3),
            ("CKV_K8S_21".to_string(), 5),
            ("CKV_K8S_43".to_string(), 3),
        ])
    );
    eprintln!("defaults: {}", scan.summary);
}

#[test]
fn seed_variants_pass() {
    for sets in [
        &[
            "istio.trafficSplit.stable=95",
            "istio.trafficSplit.canary=5",
        ][..],
        &["istio.host=custom.grader.local"],
        &["istio.gateway.ingressGatewaySelector=custom-gateway"],
    ] {
        let scan = scan(None, sets);
        assert_clean(&format!("{sets:?}"), &scan, &ALL_VERSIONS);
        eprintln!("{sets:?}: {}", scan.summary);
    }
    let scan = scan(None, &["versions.v2.enabled=false"]);
    assert_clean(
        "versions.v2.enabled=false",
        &scan,
        &["model-deployment-v1", "model-deployment-v3"],
    );
    assert!(
        !scan
            .resources()
            .iter()
            .any(|r| r.contains("model-deployment-v2")),
        "v2 is off"
    );
    eprintln!("versions.v2.enabled=false: {}", scan.summary);
}

#[test]
fn security_values_on_pass_and_need_no_network_policy_skip() {
    let scan = scan(None, &SECURITY_ON);
    assert_clean("security on", &scan, &ALL_VERSIONS);
    assert!(
        !ids(&scan).contains_key("CKV2_K8S_6"),
        "the NetworkPolicy selects every pod: {:?}",
        scan.skips()
    );
    let covered = scan
        .passed
        .iter()
        .filter(|c| text(c, "check_id") == "CKV2_K8S_6")
        .count();
    assert_eq!(
        covered,
        ALL_VERSIONS.len(),
        "each version's pods are covered"
    );
    eprintln!("security on: {}", scan.summary);
}

/// The other routing API, filter API and data plane: the same checks pass,
/// with the same reasons for the same skips (the per-version Services of
/// the Gateway API mode carry the namespace skip as the model-service one
/// does), and none left once the values are chosen.
#[test]
fn every_routing_api_and_data_plane_passes() {
    let gateway_api = ["istio.routingApi=GatewayAPI", "filter.api=TrafficExtension"];
    let gateway = scan(None, &gateway_api);
    assert_clean("Gateway API", &gateway, &ALL_VERSIONS);
    assert_eq!(
        ids(&gateway),
        BTreeMap::from([
            ("CKV2_K8S_6".to_string(), 3),
            ("CKV_K8S_21".to_string(), 8),
            ("CKV_K8S_43".to_string(), 3),
        ])
    );
    eprintln!("Gateway API: {}", gateway.summary);
    let digest = format!("modelService.image.digest=sha256:{}", "a".repeat(64));
    let mut ambient = vec![
        "istio.routingApi=GatewayAPI",
        "istio.dataplaneMode=ambient",
        digest.as_str(),
    ];
    ambient.extend(SECURITY_ON);
    let ambient = scan(Some("sms"), &ambient);
    assert_clean("ambient, security on", &ambient, &ALL_VERSIONS);
    assert_eq!(ambient.skips(), BTreeSet::new(), "{}", ambient.summary);
    eprintln!("ambient, security on: {}", ambient.summary);
}

/// Each skip goes away when its value is set: the chart meets every check
/// once a namespace, a digest and the NetworkPolicy are chosen.
#[test]
fn every_skip_lifts_with_its_value() {
    let digest = format!("modelService.image.digest=sha256:{}", "a".repeat(64));
    let mut sets = SECURITY_ON.to_vec();
    sets.push(&digest);
    let scan = scan(Some("sms"), &sets);
    assert_clean("namespace sms, digest, security on", &scan, &ALL_VERSIONS);
    assert_eq!(scan.skips(), BTreeSet::new(), "{}", scan.summary);
    assert_eq!(scan.summary["skipped"], 0);
    eprintln!("namespace sms, digest, security on: {}", scan.summary);
    let known: BTreeSet<&str> = KNOWN_SKIPS.iter().map(|(id, _)| *id).collect();
    assert_eq!(known.len(), KNOWN_SKIPS.len());
}

/// The opt-in alerts and the gate: the PrometheusRule, the rule ConfigMap
/// and the gate's Deployment and Service pass too; in their own namespace,
/// with digests and the NetworkPolicy on, they skip nothing either.
#[test]
fn alerts_and_the_gate_pass() {
    let on = [
        "alerts.enabled=true",
        "alerts.configMap.enabled=true",
        "gate.enabled=true",
    ];
    let mut deployments = ALL_VERSIONS.to_vec();
    deployments.push("model-service-gate");
    let first = scan(None, &on);
    assert_clean("alerts and gate", &first, &deployments);
    assert_eq!(ids(&first)["CKV_K8S_43"], 4, "{:?}", first.skips());
    let digests = [
        format!("modelService.image.digest=sha256:{}", "a".repeat(64)),
        format!("gate.image.digest=sha256:{}", "b".repeat(64)),
    ];
    let mut sets: Vec<&str> = on.to_vec();
    sets.extend(SECURITY_ON);
    sets.extend(digests.iter().map(String::as_str));
    let all_set = scan(Some("sms"), &sets);
    assert_clean("alerts and gate, all values set", &all_set, &deployments);
    assert_eq!(all_set.skips(), BTreeSet::new(), "{}", all_set.summary);
}

/// The scan is real: a value that weakens the pods is reported.
#[test]
fn a_new_finding_is_reported() {
    let scan = scan(Some("sms"), &["modelService.image.pullPolicy=IfNotPresent"]);
    let failed: BTreeSet<String> = scan.failed.iter().map(|c| text(c, "check_id")).collect();
    assert_eq!(
        failed,
        BTreeSet::from(["CKV_K8S_15".to_string()]),
        "{}",
        scan.summary
    );
    assert_eq!(scan.summary["failed"], 3, "one per version");
}
