//! The model-service against schemathesis, which generates requests from the
//! service's own `/openapi.json` (schema-valid and schema-violating) and
//! checks every response against the document: status codes, content
//! types, headers, bodies, and that bad input gets a 4xx and good input
//! does not. All checks, a fixed seed, a bounded number of examples, the
//! release binary on 127.0.0.1.
//!
//! Needs the model-service release binary and schemathesis from `make tools`
//! (both prerequisites of `make test`).

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;
use sms_checker_tests::process::start_model_service;
use sms_checker_tests::{printed, tool};

/// Fixed, so a failure reproduces with the same command.
const SEED: &str = "20261129";
/// Test cases per operation and phase; the run takes a few seconds.
const MAX_EXAMPLES: &str = "150";

/// Every check `--checks all` selects in schemathesis 4.32 (max_response_time
/// runs as well once a limit is given).
const CHECKS: [&str; 15] = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "positive_data_acceptance",
    "missing_required_header",
    "unsupported_method",
    "allow_header_conformance",
    "use_after_free",
    "ensure_resource_availability",
    "ignored_auth",
    "object_level_authorization",
    "max_response_time",
];

/// The NDJSON event stream of a run, one JSON object per line.
fn events(path: &std::path::Path) -> Vec<(String, Value)> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|err| panic!("schemathesis report {}: {err}", path.display()));
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let event: Value = serde_json::from_str(line)
                .unwrap_or_else(|err| panic!("report line is not JSON ({err}): {line}"));
            let (kind, body) = event
                .as_object()
                .and_then(|o| o.iter().next())
                .unwrap_or_else(|| panic!("empty event: {line}"));
            (kind.clone(), body.clone())
        })
        .collect()
}

#[test]
fn the_api_does_what_its_openapi_document_says() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut service, base) = start_model_service("v2", dir.path());

    // Loaded from a file, not the URL: schemathesis leaves out the operation
    // that serves the schema it loaded, and /openapi.json is a route too.
    let body = ureq::get(format!("{base}/openapi.json"))
        .call()
        .expect("GET /openapi.json")
        .body_mut()
        .read_to_string()
        .expect("read /openapi.json");
    let document: Value = serde_json::from_str(&body).expect("the document is JSON");
    let schema_file = dir.path().join("openapi.json");
    std::fs::write(&schema_file, document.to_string()).expect("write the document");
    let operations: BTreeMap<String, bool> = document["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("path item")
                .iter()
                .map(move |(method, op)| {
                    let has_input = op.get("requestBody").is_some()
                        || op["parameters"].as_array().is_some_and(|p| !p.is_empty());
                    (format!("{} {path}", method.to_uppercase()), has_input)
                })
        })
        .collect();
    assert_eq!(
        operations.len(),
        8,
        "operations in the document: {operations:?}"
    );

    let report = dir.path().join("events.ndjson");
    let output = Command::new(tool("SCHEMATHESIS_BIN", ".venv/bin/schemathesis"))
        .current_dir(dir.path())
        .arg("run")
        .arg(&schema_file)
        .args(["--url", &base])
        .args(["--checks", "all", "--max-response-time", "5"])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--seed", SEED, "--max-examples", MAX_EXAMPLES])
        .args(["--workers", "1", "--generation-database", "none"])
        .args(["--request-timeout", "10", "--no-color"])
        .args(["--report", "ndjson", "--report-ndjson-path"])
        .arg(&report)
        .output()
        .expect("run schemathesis");
    let text = printed(&output);
    assert!(
        output.status.success(),
        "schemathesis found problems (seed {SEED}):\n{text}\nservice log:\n{}",
        service.log()
    );

    let events = events(&report);
    let loaded = events
        .iter()
        .find(|(kind, _)| kind == "LoadingFinished")
        .map(|(_, body)| &body["statistic"]["operations"])
        .expect("LoadingFinished event");
    assert_eq!(loaded["total"], operations.len(), "{text}");
    assert_eq!(loaded["selected"], operations.len(), "{text}");

    let mut tested: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let mut checks_run: BTreeMap<String, usize> = BTreeMap::new();
    let mut cases = 0;
    for (_, scenario) in events.iter().filter(|(kind, _)| kind == "ScenarioFinished") {
        let phase = scenario["phase"].as_str().unwrap_or_default();
        let label = scenario["recorder"]["label"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        match scenario["status"].as_str() {
            Some("success") => {
                tested.entry(phase).or_default().insert(label.clone());
            }
            // Only an operation without inputs may lack examples: there is
            // nothing to give one for. It is still tested by the phases below.
            Some("skip") => assert!(
                phase == "examples"
                    && scenario["skip_reason"] == "No examples in schema"
                    && operations.get(&label) == Some(&false),
                "{label} skipped in {phase}: {scenario}"
            ),
            other => panic!("{label} in {phase}: {other:?}: {scenario}"),
        }
        let recorded = &scenario["recorder"];
        cases += recorded["cases"].as_object().map_or(0, |c| c.len());
        for check in recorded["checks"]
            .as_object()
            .into_iter()
            .flat_map(|c| c.values())
            .flat_map(|list| list.as_array().cloned().unwrap_or_default())
        {
            let name = check["name"].as_str().unwrap_or_default().to_string();
            assert_ne!(check["status"], "failure", "{label} {phase}: {check}");
            assert_ne!(check["status"], "error", "{label} {phase}: {check}");
            *checks_run.entry(name).or_default() += 1;
        }
    }
    let all: BTreeSet<String> = operations.keys().cloned().collect();
    for phase in ["coverage", "fuzzing"] {
        assert_eq!(
            tested.get(phase),
            Some(&all),
            "every operation passes the {phase} phase"
        );
    }
    assert!(
        tested["examples"].contains("POST /predict"),
        "the documented example of /predict was sent"
    );
    for check in CHECKS {
        assert!(
            checks_run.get(check).is_some_and(|n| *n > 0),
            "check {check} never ran: {checks_run:?}"
        );
    }
    assert!(cases >= 150, "only {cases} test cases generated");
    eprintln!("schemathesis (seed {SEED}): {cases} test cases, checks run: {checks_run:?}");

    // The service never failed on what it was sent.
    assert!(
        service.try_wait().is_none(),
        "the service exited during the run"
    );
    let log = service.log();
    assert!(!log.contains("panicked"), "service log:\n{log}");
}
