//! The chart's alerting rules (`alerts.*`): rendered once as a
//! PrometheusRule and as a plain rule file, validated against the
//! Prometheus Operator's API models, and each alert run by `promtool test
//! rules` on series that must fire it and series that must not.

use serde_json::{Value, json};
use sms_checker_tests::alerts::{annotations, promtool_test, rule_file};
use sms_checker_tests::chart::{find, of_kind};
use sms_checker_tests::printed;
use sms_checker_tests::rendered::{render_error, render_valid};

/// `promtool` input series: (series, values in its expanding notation).
fn series(list: &[(&str, &str)]) -> Value {
    Value::Array(
        list.iter()
            .map(|(s, v)| json!({"series": s, "values": v}))
            .collect(),
    )
}

/// At `eval`, `alert` fires once with its value printed as `value`, or
/// (`None`) not at all.
fn expect(rules: &Value, alert: &str, severity: &str, eval: &str, value: Option<&str>) -> Value {
    let alerts = match value {
        Some(value) => json!([{
            "exp_labels": {"severity": severity, "release": "sms-checker", "experiment": "sms-model"},
            "exp_annotations": annotations(rules, alert, value),
        }]),
        None => json!([]),
    };
    json!({"eval_time": eval, "alertname": alert, "exp_alerts": alerts})
}

fn case(input: Value, checks: Vec<Value>) -> Value {
    json!({"interval": "1m", "input_series": input, "alert_rule_test": checks})
}

const CANARY_OK: &str = r#"sms_cohort_requests_total{cohort="canary",response_class="2xx"}"#;
const CANARY_5XX: &str = r#"sms_cohort_requests_total{cohort="canary",response_class="5xx"}"#;
const CANARY_NONE: &str = r#"sms_cohort_requests_total{cohort="canary",response_class="none"}"#;
const STABLE_OK: &str = r#"sms_cohort_requests_total{cohort="stable",response_class="2xx"}"#;
const STABLE_5XX: &str = r#"sms_cohort_requests_total{cohort="stable",response_class="5xx"}"#;
const CANARY_USERS: &str = r#"sms_cohort_users_total{cohort="canary",user="new"}"#;
const STABLE_USERS: &str = r#"sms_cohort_users_total{cohort="stable",user="new"}"#;
const LIVE: &str = r#"sms_model_requests_total{version="v1",cohort="stable",response_class="2xx",prediction="ham",mirrored="false"}"#;
const LIVE_NO_COHORT: &str = r#"sms_model_requests_total{version="v1",cohort="none",response_class="2xx",prediction="ham",mirrored="false"}"#;
const SHADOW: &str = r#"sms_model_requests_total{version="v3",cohort="stable",response_class="2xx",prediction="ham",mirrored="true"}"#;

/// A latency histogram's series (`_bucket` per bound, `_count`) of the
/// sidecars, mirrored or not: `per_minute` requests a minute, all in the
/// bucket ending at `bound`.
fn latency(mirrored: &str, bound: &str, per_minute: u32) -> Vec<(String, String)> {
    let name = "sms_model_request_duration_milliseconds";
    let bounds = ["5", "100", "+Inf"];
    let first = bounds
        .iter()
        .position(|b| *b == bound)
        .expect("a bucket bound");
    // Cumulative: every bucket from `bound` up holds them all.
    let mut out: Vec<(String, String)> = bounds
        .iter()
        .enumerate()
        .map(|(i, le)| {
            let step = if i >= first { per_minute } else { 0 };
            (
                format!(r#"{name}_bucket{{version="v",mirrored="{mirrored}",le="{le}"}}"#),
                format!("0+{step}x30"),
            )
        })
        .collect();
    out.push((
        format!(r#"{name}_count{{version="v",mirrored="{mirrored}"}}"#),
        format!("0+{per_minute}x30"),
    ));
    out
}

fn pairs(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect()
}

/// Every alert, firing and quiet, at the chart's default thresholds
/// (10-minute window; a 10 % canary; mirror 100 %).
fn cases(rules: &Value) -> Vec<Value> {
    let srm = "SmsCheckerSampleRatioMismatch";
    let errors = "SmsCheckerCanaryErrorRateAboveStable";
    let mirror = "SmsCheckerMirrorCoverageLow";
    let cohortless = "SmsCheckerRequestsWithoutCohort";
    let slow = "SmsCheckerShadowSlowerThanLive";
    let mut shadow_slow = latency("true", "100", 100);
    shadow_slow.extend(latency("false", "5", 100));
    let mut shadow_as_fast = latency("true", "5", 100);
    shadow_as_fast.extend(latency("false", "5", 100));
    vec![
        // 20 of 1,000 new users in the canary at 10 %: chi-square
        // (20 - 100)^2 / (0.1 x 0.9 x 1,000) = 71.1.
        case(
            series(&[(CANARY_USERS, "0+2x30"), (STABLE_USERS, "0+98x30")]),
            vec![expect(rules, srm, "warning", "15m", Some("71.1"))],
        ),
        // 100 of 1,000: as configured.
        case(
            series(&[(CANARY_USERS, "0+10x30"), (STABLE_USERS, "0+90x30")]),
            vec![expect(rules, srm, "warning", "15m", None)],
        ),
        // No canary user at all, but only 50 new users: not judged yet.
        case(
            series(&[(CANARY_USERS, "0+0x30"), (STABLE_USERS, "0+5x30")]),
            vec![expect(rules, srm, "warning", "15m", None)],
        ),
        // 10 % of the canary's requests fail (5xx or no response), 1 % of
        // stable's: 9 points above, pending after 1 minute, firing after
        // its 2 minutes.
        case(
            series(&[
                (CANARY_OK, "0+90x30"),
                (CANARY_5XX, "0+5x30"),
                (CANARY_NONE, "0+5x30"),
                (STABLE_OK, "0+891x30"),
                (STABLE_5XX, "0+9x30"),
            ]),
            vec![
                expect(rules, errors, "critical", "1m", None),
                expect(rules, errors, "critical", "15m", Some("9%")),
            ],
        ),
        // 2 % against 1 %: within the 2-point margin.
        case(
            series(&[
                (CANARY_OK, "0+98x30"),
                (CANARY_5XX, "0+2x30"),
                (STABLE_OK, "0+891x30"),
                (STABLE_5XX, "0+9x30"),
            ]),
            vec![expect(rules, errors, "critical", "15m", None)],
        ),
        // Half the canary's requests fail, but only 80 in the window.
        case(
            series(&[
                (CANARY_OK, "0+4x30"),
                (CANARY_5XX, "0+4x30"),
                (STABLE_OK, "0+891x30"),
            ]),
            vec![expect(rules, errors, "critical", "15m", None)],
        ),
        // v3 gets half the live requests; then none at all (no series).
        case(
            series(&[(LIVE, "0+100x30"), (SHADOW, "0+50x30")]),
            vec![expect(rules, mirror, "warning", "15m", Some("50%"))],
        ),
        case(
            series(&[(LIVE, "0+100x30")]),
            vec![expect(rules, mirror, "warning", "15m", Some("0%"))],
        ),
        case(
            series(&[(LIVE, "0+100x30"), (SHADOW, "0+98x30")]),
            vec![expect(rules, mirror, "warning", "15m", None)],
        ),
        // 10 % of live requests carry no cohort; then none does.
        case(
            series(&[(LIVE, "0+90x30"), (LIVE_NO_COHORT, "0+10x30")]),
            vec![expect(rules, cohortless, "warning", "15m", Some("10%"))],
        ),
        case(
            series(&[(LIVE, "0+100x30"), (LIVE_NO_COHORT, "0+0x30")]),
            vec![expect(rules, cohortless, "warning", "15m", None)],
        ),
        // The shadow's p95 interpolates to 95.25 ms in (5, 100], the live
        // versions' to 4.75 ms in (0, 5]: 90.5 ms above, past 50 ms, for
        // the 10 minutes the rule wants.
        case(
            series(&pairs(&shadow_slow)),
            vec![
                expect(rules, slow, "warning", "5m", None),
                expect(rules, slow, "warning", "25m", Some("90.5")),
            ],
        ),
        case(
            series(&pairs(&shadow_as_fast)),
            vec![expect(rules, slow, "warning", "25m", None)],
        ),
    ]
}

#[test]
fn every_alert_fires_on_its_failure_and_stays_quiet_otherwise() {
    let rules = rule_file(&[]);
    let output = promtool_test(&rules, Value::Array(cases(&rules)));
    assert!(output.status.success(), "{}", printed(&output));
}

// The tester itself can fail: a quiet series claimed to fire is reported.
#[test]
fn promtool_reports_an_alert_that_does_not_fire() {
    let rules = rule_file(&[]);
    let wrong = case(
        series(&[(CANARY_USERS, "0+10x30"), (STABLE_USERS, "0+90x30")]),
        vec![expect(
            &rules,
            "SmsCheckerSampleRatioMismatch",
            "warning",
            "15m",
            Some("0.0"),
        )],
    );
    let output = promtool_test(&rules, json!([wrong]));
    assert!(!output.status.success(), "{}", printed(&output));
    assert!(
        printed(&output).contains("SmsCheckerSampleRatioMismatch"),
        "{}",
        printed(&output)
    );
}

// A weight change (5 % to 10 % at minute 8, as a rollout's step records it)
// keeps the sample ratio alert quiet while the window holds it, then the
// mismatch fires. The recorded weight is an input here, so the recording
// rule is left out of the file.
#[test]
fn the_sample_ratio_alert_leaves_out_a_window_with_a_weight_change() {
    let mut rules = rule_file(&[]);
    let group = &mut rules["groups"][0]["rules"];
    let all = group.as_array().cloned().unwrap_or_default();
    let recorded = all
        .iter()
        .find(|r| r["record"] == "sms_checker:canary_weight:ratio")
        .expect("the weight is recorded");
    assert_eq!(recorded["expr"], "vector(0.1)");
    *group = Value::Array(
        all.into_iter()
            .filter(|r| r.get("record").is_none())
            .collect(),
    );
    let weight = r#"sms_checker:canary_weight:ratio{release="sms-checker",namespace="demo"}"#;
    let srm = "SmsCheckerSampleRatioMismatch";
    let test = case(
        series(&[
            (weight, "0.05x7 0.1x23"),
            (CANARY_USERS, "0+2x30"),
            (STABLE_USERS, "0+98x30"),
        ]),
        vec![
            expect(&rules, srm, "warning", "15m", None),
            expect(&rules, srm, "warning", "25m", Some("71.1")),
        ],
    );
    let output = promtool_test(&rules, json!([test]));
    assert!(output.status.success(), "{}", printed(&output));
}

// One source: the PrometheusRule's groups are the ConfigMap's rule file;
// both validate (the Prometheus Operator's models, kubernetes-validate);
// promtool accepts the file. The defaults render neither.
#[test]
fn the_prometheus_rule_and_the_plain_rule_file_are_the_same_rules() {
    let defaults = render_valid(&[]);
    assert!(of_kind(&defaults, "PrometheusRule").is_empty());
    let objects = render_valid(&[
        ("alerts.enabled", "true"),
        ("alerts.configMap.enabled", "true"),
        (
            "alerts.prometheusRule.labels.release",
            "kube-prometheus-stack",
        ),
        ("alerts.runbookUrl", "https://runbooks.example.org/sms"),
        ("alerts.labels.team", "ml"),
    ]);
    let rule = find(&objects, "PrometheusRule", "model-service-alerts").expect("a PrometheusRule");
    assert_eq!(
        rule["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    let map = find(&objects, "ConfigMap", "model-service-alert-rules").expect("a rule ConfigMap");
    let text = map["data"]["sms-checker-rules.yaml"]
        .as_str()
        .expect("the rule file");
    let file: Value = serde_norway::from_str(text).expect("YAML");
    assert_eq!(file["groups"], rule["spec"]["groups"]);
    let rules = file["groups"][0]["rules"].as_array().expect("rules");
    let alerts: Vec<&str> = rules.iter().filter_map(|r| r["alert"].as_str()).collect();
    assert_eq!(
        alerts,
        [
            "SmsCheckerSampleRatioMismatch",
            "SmsCheckerCanaryErrorRateAboveStable",
            "SmsCheckerMirrorCoverageLow",
            "SmsCheckerRequestsWithoutCohort",
            "SmsCheckerShadowSlowerThanLive",
        ]
    );
    for rule in rules.iter().filter(|r| r.get("alert").is_some()) {
        let name = rule["alert"].as_str().unwrap_or_default();
        let notes = &rule["annotations"];
        for key in ["summary", "description", "runbook"] {
            assert!(
                notes[key].as_str().is_some_and(|t| t.len() > 20),
                "{name}: {key}"
            );
        }
        assert_eq!(
            notes["runbook_url"],
            format!("https://runbooks.example.org/sms#{}", name.to_lowercase())
        );
        assert_eq!(rule["labels"]["team"], "ml");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("rules.yaml");
    std::fs::write(&path, text).expect("write the rules");
    let check = std::process::Command::new(sms_checker_tests::alerts::promtool_bin())
        .args(["check", "rules"])
        .arg(&path)
        .output()
        .expect("run promtool");
    assert!(check.status.success(), "{}", printed(&check));
    assert!(
        printed(&check).contains("SUCCESS: 6 rules found"),
        "{}",
        printed(&check)
    );
}

// Thresholds are values: the rendered expressions carry them, and alerts
// for a version that is off are not rendered.
#[test]
fn thresholds_and_versions_shape_the_rules() {
    let rules = rule_file(&[
        ("alerts.window", "30m"),
        ("alerts.canaryErrorRate.margin", "0.05"),
        ("alerts.mirrorCoverage.floor", "0.5"),
        ("istio.mirror.percentage", "50"),
        ("alerts.selector", r#"cluster="prod""#),
    ]);
    let expr = |alert: &str| {
        sms_checker_tests::alerts::rule(&rules, alert)["expr"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let errors = expr("SmsCheckerCanaryErrorRateAboveStable");
    assert!(errors.contains(") > 0.05\n"), "{errors}");
    assert!(
        errors.contains(r#"{cohort="canary",cluster="prod"}[30m]"#),
        "{errors}"
    );
    assert!(expr("SmsCheckerMirrorCoverageLow").contains("< 0.25\n"));
    let without_v3 = rule_file(&[("versions.v3.enabled", "false")]);
    let names: Vec<&str> = without_v3["groups"][0]["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["alert"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "SmsCheckerSampleRatioMismatch",
            "SmsCheckerCanaryErrorRateAboveStable",
            "SmsCheckerRequestsWithoutCohort"
        ]
    );
}

#[test]
fn bad_alert_values_are_refused_naming_the_field() {
    for (sets, says) in [
        (
            &[("alerts.enabled", "true"), ("filter.enabled", "false")][..],
            "alerts.enabled=true needs filter.enabled=true",
        ),
        (
            &[("alerts.selector", "cluster=prod")][..],
            "/alerts/selector",
        ),
        (&[("alerts.window", "ten minutes")][..], "/alerts/window"),
        (
            &[("alerts.labels.severity", "page")][..],
            "alerts.labels.severity is set by the chart",
        ),
        (
            &[("alerts.canaryErrorRate.margin", "1.5")][..],
            "/alerts/canaryErrorRate/margin",
        ),
        (
            &[("alerts.shadowLatency.quantile", "1")][..],
            "/alerts/shadowLatency/quantile",
        ),
    ] {
        let message = render_error(sets);
        assert!(message.contains(says), "{sets:?}: {message}");
    }
}
