//! The pluginConfig contract: defaults, and one rejection per invalid field,
//! each naming the field and the value.

use sms_checker_filter::config::{ConfigError, PluginConfig, Role};

fn parse(json: &str) -> Result<PluginConfig, ConfigError> {
    PluginConfig::from_json(json.as_bytes())
}

fn gateway(extra: &str) -> String {
    format!(
        r#"{{"role":"gateway","cohorts":[{{"name":"stable","weight":90}},{{"name":"canary","weight":10}}]{extra}}}"#
    )
}

fn sidecar(extra: &str) -> String {
    format!(
        r#"{{"role":"sidecar","cohorts":[{{"name":"stable","weight":90}},{{"name":"canary","weight":10}}]{extra}}}"#
    )
}

/// Asserts rejection naming `field`, with `needle` somewhere in the message.
fn rejects(json: &str, field: &str, needle: &str) {
    let err = parse(json).expect_err(json);
    assert_eq!(err.field, field, "field of {err} for {json}");
    let text = err.to_string();
    let shown = if field.is_empty() {
        "pluginConfig"
    } else {
        field
    };
    assert!(text.contains(&format!("`{shown}`")), "{text}");
    assert!(text.contains(needle), "{text:?} lacks {needle:?}");
}

#[test]
fn gateway_defaults() {
    let config = parse(&gateway("")).unwrap();
    assert_eq!(config.experiment, "sms-model");
    assert_eq!(config.cohort_header, "x-experiment-cohort");
    assert_eq!(config.cohorts.len(), 2);
    assert_eq!(
        (config.cohorts[1].name.as_str(), config.cohorts[1].weight),
        ("canary", 10)
    );
    let Role::Gateway(g) = config.role else {
        panic!("gateway role expected");
    };
    assert_eq!(g.salt, "sms-checker");
    assert_eq!(g.user_id_header, None);
    assert_eq!(g.cookie.name, "sms-checker-uid");
    assert_eq!(g.cookie.max_age_seconds, 2_592_000);
    assert!(!g.cookie.secure);
    assert_eq!(g.response_header, "x-experiment-cohort");
    assert_eq!(g.override_, None);
    assert!(!g.clear_route_cache);
}

#[test]
fn gateway_full() {
    let sha = "a".repeat(64);
    let config = parse(&gateway(&format!(
        r#","experiment":"exp2","cohortHeader":"X-Cohort","salt":"s1","userIdHeader":"X-User-Id",
        "cookie":{{"name":"uid","maxAgeSeconds":60,"secure":true}},"responseHeader":"x-cohort-echo",
        "clearRouteCache":true,"override":{{"tokenSha256":"{sha}"}}"#
    )))
    .unwrap();
    assert_eq!(config.experiment, "exp2");
    // Header names are stored lower-cased, as Envoy sees them.
    assert_eq!(config.cohort_header, "x-cohort");
    let Role::Gateway(g) = config.role else {
        panic!("gateway role expected");
    };
    assert_eq!(g.user_id_header.as_deref(), Some("x-user-id"));
    assert_eq!(
        (
            g.cookie.name.as_str(),
            g.cookie.max_age_seconds,
            g.cookie.secure
        ),
        ("uid", 60, true)
    );
    assert_eq!(g.response_header, "x-cohort-echo");
    assert!(g.clear_route_cache);
    let o = g.override_.unwrap();
    assert_eq!(o.header, "x-experiment-override");
    assert_eq!(o.token_header, "x-experiment-override-token");
    assert_eq!(o.token_sha256, [0xaa; 32]);
}

#[test]
fn response_header_defaults_to_the_cohort_header() {
    let config = parse(&gateway(r#","cohortHeader":"x-c""#)).unwrap();
    let Role::Gateway(g) = config.role else {
        panic!("gateway role expected");
    };
    assert_eq!(g.response_header, "x-c");
}

#[test]
fn sidecar_defaults_and_full() {
    let config = parse(&sidecar("")).unwrap();
    let Role::Sidecar(s) = config.role else {
        panic!("sidecar role expected");
    };
    assert_eq!(s.version, None);
    assert_eq!(s.prediction_header, "x-model-prediction");
    assert!(!s.mirrored);
    assert_eq!(s.shadow_host_suffix, "-shadow");

    let config = parse(&sidecar(
        r#","version":"v3","predictionHeader":"x-p","mirrored":true,"shadowHostSuffix":"-mirror""#,
    ))
    .unwrap();
    let Role::Sidecar(s) = config.role else {
        panic!("sidecar role expected");
    };
    assert_eq!(s.version.as_deref(), Some("v3"));
    assert_eq!(s.prediction_header, "x-p");
    assert!(s.mirrored);
    assert_eq!(s.shadow_host_suffix, "-mirror");
}

#[test]
fn null_counts_as_absent() {
    let config = parse(&gateway(r#","userIdHeader":null,"override":null"#)).unwrap();
    assert_eq!(config.role_kind().as_str(), "gateway");
}

#[test]
fn a_single_cohort_of_100_and_zero_weights_are_valid() {
    parse(r#"{"role":"gateway","cohorts":[{"name":"all","weight":100}]}"#).unwrap();
    parse(r#"{"role":"gateway","cohorts":[{"name":"a","weight":100},{"name":"b","weight":0}]}"#)
        .unwrap();
}

#[test]
fn rejects_documents_that_are_not_objects() {
    rejects("not json", "", "not valid JSON");
    rejects("[1,2]", "", "must be a JSON object");
    rejects("", "", "not valid JSON");
    rejects(&format!("{} trailing", gateway("")), "", "not valid JSON");
}

#[test]
fn rejects_role() {
    rejects(
        r#"{"cohorts":[{"name":"a","weight":100}]}"#,
        "role",
        "is required",
    );
    rejects(
        r#"{"role":"ingress","cohorts":[{"name":"a","weight":100}]}"#,
        "role",
        "\"ingress\"",
    );
    rejects(
        r#"{"role":7,"cohorts":[]}"#,
        "role",
        "must be a string (got 7)",
    );
}

#[test]
fn rejects_unknown_keys_at_every_level() {
    rejects(
        &gateway(r#","experimnt":"x""#),
        "experimnt",
        "not a known field",
    );
    rejects(
        &gateway(r#","cookie":{"nmae":"x"}"#),
        "cookie.nmae",
        "not a known field",
    );
    rejects(
        &gateway(&format!(
            r#","override":{{"tokenSha256":"{}","hdr":"x"}}"#,
            "0".repeat(64)
        )),
        "override.hdr",
        "not a known field",
    );
    rejects(
        r#"{"role":"gateway","cohorts":[{"name":"a","weight":100,"wieght":1}]}"#,
        "cohorts[0].wieght",
        "not a known field",
    );
}

#[test]
fn rejects_fields_of_the_other_role() {
    rejects(
        &gateway(r#","version":"v1""#),
        "version",
        "only to role \"sidecar\"",
    );
    rejects(
        &gateway(r#","mirrored":false"#),
        "mirrored",
        "only to role \"sidecar\"",
    );
    rejects(
        &gateway(r#","predictionHeader":"x""#),
        "predictionHeader",
        "sidecar",
    );
    rejects(
        &gateway(r#","shadowHostSuffix":"-s""#),
        "shadowHostSuffix",
        "sidecar",
    );
    rejects(
        &sidecar(r#","salt":"x""#),
        "salt",
        "only to role \"gateway\"",
    );
    rejects(&sidecar(r#","cookie":{}"#), "cookie", "gateway");
    rejects(
        &sidecar(r#","userIdHeader":"x-u""#),
        "userIdHeader",
        "gateway",
    );
    rejects(
        &sidecar(r#","responseHeader":"x-r""#),
        "responseHeader",
        "gateway",
    );
    rejects(&sidecar(r#","override":{}"#), "override", "gateway");
    rejects(
        &sidecar(r#","clearRouteCache":true"#),
        "clearRouteCache",
        "gateway",
    );
}

#[test]
fn rejects_cohorts() {
    rejects(r#"{"role":"gateway"}"#, "cohorts", "is required");
    rejects(
        r#"{"role":"gateway","cohorts":[]}"#,
        "cohorts",
        "at least one",
    );
    rejects(
        r#"{"role":"gateway","cohorts":{"a":1}}"#,
        "cohorts",
        "must be a list",
    );
    rejects(
        r#"{"role":"gateway","cohorts":[5]}"#,
        "cohorts[0]",
        "must be a JSON object",
    );
    rejects(
        r#"{"role":"gateway","cohorts":[{"weight":100}]}"#,
        "cohorts[0].name",
        "is required",
    );
    rejects(
        r#"{"role":"gateway","cohorts":[{"name":"","weight":100}]}"#,
        "cohorts[0].name",
        "[a-z0-9-] (got \"\")",
    );
    rejects(
        r#"{"role":"gateway","cohorts":[{"name":"a","weight":50},{"name":"Canary","weight":50}]}"#,
        "cohorts[1].name",
        "\"Canary\"",
    );
    rejects(
        r#"{"role":"gateway","cohorts":[{"name":"a","weight":50},{"name":"a","weight":50}]}"#,
        "cohorts[1].name",
        "duplicates",
    );
    rejects(
        r#"{"role":"sidecar","cohorts":[{"name":"unknown","weight":100}]}"#,
        "cohorts[0].name",
        "reserved",
    );
    rejects(
        r#"{"role":"gateway","cohorts":[{"name":"none","weight":100}]}"#,
        "cohorts[0].name",
        "reserved",
    );
    rejects(
        &format!(
            r#"{{"role":"gateway","cohorts":[{{"name":"{}","weight":100}}]}}"#,
            "a".repeat(64)
        ),
        "cohorts[0].name",
        "1-63",
    );
}

#[test]
fn rejects_weights() {
    let two = |w0: &str, w1: &str| {
        format!(
            r#"{{"role":"gateway","cohorts":[{{"name":"stable","weight":{w0}}},{{"name":"canary","weight":{w1}}}]}}"#
        )
    };
    rejects(&two("90", "101"), "cohorts[1].weight", "(got 101)");
    rejects(&two("90", "-10"), "cohorts[1].weight", "(got -10)");
    rejects(&two("89.5", "10.5"), "cohorts[0].weight", "(got 89.5)");
    rejects(
        &two("90", "\"10\""),
        "cohorts[1].weight",
        "must be a number (got \"10\")",
    );
    rejects(&two("90", "5"), "cohorts", "sum to 100 (got 90 + 5 = 95)");
    rejects(&two("90", "20"), "cohorts", "90 + 20 = 110");
    rejects(
        r#"{"role":"gateway","cohorts":[{"name":"a"}]}"#,
        "cohorts[0].weight",
        "is required",
    );
}

#[test]
fn rejects_header_names() {
    for (field, json) in [
        ("cohortHeader", gateway(r#","cohortHeader":"x cohort""#)),
        ("cohortHeader", gateway(r#","cohortHeader":"""#)),
        ("cohortHeader", gateway(r#","cohortHeader":":authority""#)),
        ("cohortHeader", gateway(r#","cohortHeader":"cookie""#)),
        ("cohortHeader", gateway(r#","cohortHeader":"x-é""#)),
        ("userIdHeader", gateway(r#","userIdHeader":"x-user:id""#)),
        (
            "responseHeader",
            gateway(r#","responseHeader":"Set-Cookie""#),
        ),
        ("predictionHeader", sidecar(r#","predictionHeader":"x/p""#)),
        (
            "override.header",
            gateway(r#","override":{"header":"x y"}"#),
        ),
    ] {
        let err = parse(&json).expect_err(&json);
        assert_eq!(err.field, field, "{err}");
        assert!(err.value.is_some(), "{err} should show the value");
    }
    let long = format!("x-{}", "a".repeat(200));
    rejects(
        &gateway(&format!(r#","cohortHeader":"{long}""#)),
        "cohortHeader",
        &long[..40],
    );
}

#[test]
fn rejects_text_fields() {
    rejects(&gateway(r#","salt":"""#), "salt", "(got \"\")");
    rejects(&gateway(r#","experiment":"""#), "experiment", "(got \"\")");
    rejects(&gateway(r#","experiment":"a\nb""#), "experiment", "control");
    rejects(
        &gateway(r#","salt":17"#),
        "salt",
        "must be a string (got 17)",
    );
}

#[test]
fn rejects_cookie_fields() {
    rejects(
        &gateway(r#","cookie":{"name":"a b"}"#),
        "cookie.name",
        "\"a b\"",
    );
    rejects(
        &gateway(r#","cookie":{"name":"a;b"}"#),
        "cookie.name",
        "\"a;b\"",
    );
    rejects(
        &gateway(r#","cookie":{"name":""}"#),
        "cookie.name",
        "(got \"\")",
    );
    rejects(
        &gateway(r#","cookie":{"maxAgeSeconds":0}"#),
        "cookie.maxAgeSeconds",
        "(got 0)",
    );
    rejects(
        &gateway(r#","cookie":{"maxAgeSeconds":99999999999}"#),
        "cookie.maxAgeSeconds",
        "400 days",
    );
    rejects(
        &gateway(r#","cookie":{"maxAgeSeconds":1.5}"#),
        "cookie.maxAgeSeconds",
        "1.5",
    );
    rejects(
        &gateway(r#","cookie":{"secure":"yes"}"#),
        "cookie.secure",
        "true or false",
    );
    rejects(
        &gateway(r#","cookie":"sms""#),
        "cookie",
        "must be a JSON object",
    );
}

#[test]
fn rejects_override_fields() {
    rejects(
        &gateway(r#","override":{}"#),
        "override.tokenSha256",
        "is required",
    );
    let upper = "A".repeat(64);
    rejects(
        &gateway(&format!(r#","override":{{"tokenSha256":"{upper}"}}"#)),
        "override.tokenSha256",
        &upper,
    );
    rejects(
        &gateway(r#","override":{"tokenSha256":"abc"}"#),
        "override.tokenSha256",
        "64 lowercase hex",
    );
    let sha = "0".repeat(64);
    rejects(
        &gateway(&format!(
            r#","override":{{"tokenSha256":"{sha}","header":"x-a","tokenHeader":"X-A"}}"#
        )),
        "override.tokenHeader",
        "differ",
    );
}

#[test]
fn rejects_a_clear_route_cache_that_is_not_a_boolean() {
    rejects(
        &gateway(r#","clearRouteCache":1"#),
        "clearRouteCache",
        "true or false",
    );
}

#[test]
fn rejects_sidecar_fields() {
    rejects(&sidecar(r#","version":"v 1""#), "version", "\"v 1\"");
    rejects(&sidecar(r#","version":"""#), "version", "(got \"\")");
    rejects(
        &sidecar(r#","mirrored":"true""#),
        "mirrored",
        "true or false",
    );
    rejects(
        &sidecar(r#","shadowHostSuffix":"""#),
        "shadowHostSuffix",
        "(got \"\")",
    );
    rejects(
        &sidecar(r#","shadowHostSuffix":"-s:80""#),
        "shadowHostSuffix",
        "-s:80",
    );
}

#[test]
fn long_values_are_shortened_in_messages() {
    let err = parse(&gateway(&format!(r#","salt":"{}""#, "s".repeat(500)))).unwrap_err();
    assert_eq!(err.field, "salt");
    assert!(err.to_string().len() < 200, "{err}");
}
