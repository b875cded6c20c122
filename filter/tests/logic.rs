//! The request path without the host: identity precedence, QA overrides and
//! the sidecar's labels.

use sha2::{Digest, Sha256};
use sms_checker_filter::config::PluginConfig;
use sms_checker_filter::cookie::NEW_ID_LEN;
use sms_checker_filter::logic::{
    CompiledRole, Filter, Gateway, GatewayRequest, Identity, OverrideOutcome, Sidecar,
    host_has_suffix,
};
use sms_checker_filter::metrics::CohortLabel;

const TOKEN: &str = "let-me-in";

fn gateway_filter(extra: &str) -> Filter {
    let sha: String = Sha256::digest(TOKEN.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let json = format!(
        r#"{{"role":"gateway","cohorts":[{{"name":"stable","weight":50}},{{"name":"canary","weight":50}}],
            "override":{{"tokenSha256":"{sha}"}}{extra}}}"#
    );
    Filter::new(PluginConfig::from_json(json.as_bytes()).unwrap(), None)
}

fn gateway(filter: &Filter) -> &Gateway {
    match &filter.role {
        CompiledRole::Gateway(g) => g,
        CompiledRole::Sidecar(_) => panic!("gateway expected"),
    }
}

const FRESH: [u8; NEW_ID_LEN] = *b"0123456789abcdef0123456789abcdef";

fn never() -> [u8; NEW_ID_LEN] {
    panic!("a fresh id was drawn although the request had an identity")
}

#[test]
fn header_identity_wins_over_the_cookie() {
    let filter = gateway_filter(r#","userIdHeader":"x-user-id""#);
    let g = gateway(&filter);
    let d = g.decide(
        &filter.config,
        GatewayRequest {
            user_id: Some(b"alice"),
            cookie: Some(b"sms-checker-uid=bob"),
            ..Default::default()
        },
        never,
    );
    assert_eq!(d.identity, Identity::Header);
    assert_eq!(d.cohort, g.assigner.cohort(b"alice"));
    assert_eq!(d.override_outcome, None);
}

#[test]
fn an_invalid_header_identity_falls_back_to_the_cookie() {
    let filter = gateway_filter(r#","userIdHeader":"x-user-id""#);
    let g = gateway(&filter);
    let d = g.decide(
        &filter.config,
        GatewayRequest {
            user_id: Some(b"   "),
            cookie: Some(b"sms-checker-uid=bob"),
            ..Default::default()
        },
        never,
    );
    assert_eq!(d.identity, Identity::Cookie);
    assert_eq!(d.cohort, g.assigner.cohort(b"bob"));
}

#[test]
fn the_user_id_header_is_ignored_unless_configured() {
    let filter = gateway_filter("");
    let g = gateway(&filter);
    let d = g.decide(
        &filter.config,
        GatewayRequest {
            user_id: Some(b"alice"),
            cookie: Some(b"sms-checker-uid=bob"),
            ..Default::default()
        },
        never,
    );
    assert_eq!(d.identity, Identity::Cookie);
}

#[test]
fn no_identity_draws_a_fresh_id_and_assigns_by_it() {
    let filter = gateway_filter("");
    let g = gateway(&filter);
    for cookie in [
        None,
        Some(&b"other=1"[..]),
        Some(&b"sms-checker-uid=bad value"[..]),
    ] {
        let d = g.decide(
            &filter.config,
            GatewayRequest {
                cookie,
                ..Default::default()
            },
            || FRESH,
        );
        assert_eq!(d.identity, Identity::New(FRESH));
        assert_eq!(d.cohort, g.assigner.cohort(&FRESH));
    }
}

/// An id whose natural cohort is `cohort`.
fn id_in(g: &Gateway, cohort: usize) -> String {
    (0..)
        .map(|i| format!("u{i}"))
        .find(|id| g.assigner.cohort(id.as_bytes()) == cohort)
        .unwrap()
}

#[test]
fn a_valid_override_picks_the_cohort() {
    let filter = gateway_filter("");
    let g = gateway(&filter);
    let cookie = format!("sms-checker-uid={}", id_in(g, 0));
    let d = g.decide(
        &filter.config,
        GatewayRequest {
            cookie: Some(cookie.as_bytes()),
            override_cohort: Some(b"canary"),
            override_token: Some(TOKEN.as_bytes()),
            ..Default::default()
        },
        never,
    );
    assert_eq!(d.cohort, 1);
    assert_eq!(d.override_outcome, Some(OverrideOutcome::Accepted));
    assert_eq!(d.identity, Identity::Cookie);
}

#[test]
fn invalid_overrides_are_ignored_and_reported() {
    let filter = gateway_filter("");
    let g = gateway(&filter);
    let cookie = format!("sms-checker-uid={}", id_in(g, 0));
    for (cohort, token) in [
        (&b"canary"[..], None),
        (b"canary", Some(&b"wrong"[..])),
        (b"canary", Some(b"")),
        (b"canary", Some(b"let-me-in ")),
        (b"nightly", Some(TOKEN.as_bytes())),
        (b"", Some(TOKEN.as_bytes())),
    ] {
        let d = g.decide(
            &filter.config,
            GatewayRequest {
                cookie: Some(cookie.as_bytes()),
                override_cohort: Some(cohort),
                override_token: token,
                ..Default::default()
            },
            never,
        );
        assert_eq!(d.cohort, 0, "{cohort:?} {token:?}");
        assert_eq!(d.override_outcome, Some(OverrideOutcome::Rejected));
    }
}

#[test]
fn overrides_are_ignored_when_not_configured() {
    let json = r#"{"role":"gateway","cohorts":[{"name":"stable","weight":50},{"name":"canary","weight":50}]}"#;
    let filter = Filter::new(PluginConfig::from_json(json.as_bytes()).unwrap(), None);
    let g = gateway(&filter);
    let cookie = format!("sms-checker-uid={}", id_in(g, 0));
    let d = g.decide(
        &filter.config,
        GatewayRequest {
            cookie: Some(cookie.as_bytes()),
            override_cohort: Some(b"canary"),
            override_token: Some(TOKEN.as_bytes()),
            ..Default::default()
        },
        never,
    );
    assert_eq!((d.cohort, d.override_outcome), (0, None));
}

fn sidecar_filter(extra: &str, node_version: Option<&str>) -> Filter {
    let json = format!(
        r#"{{"role":"sidecar","cohorts":[{{"name":"stable","weight":90}},{{"name":"canary","weight":10}}]{extra}}}"#
    );
    Filter::new(
        PluginConfig::from_json(json.as_bytes()).unwrap(),
        node_version,
    )
}

fn sidecar(filter: &Filter) -> &Sidecar {
    match &filter.role {
        CompiledRole::Sidecar(s) => s,
        CompiledRole::Gateway(_) => panic!("sidecar expected"),
    }
}

#[test]
fn sidecar_cohort_labels_are_bounded() {
    let filter = sidecar_filter("", None);
    let label = |h: Option<&[u8]>| Sidecar::cohort_label(&filter.config, h);
    assert_eq!(label(Some(b"stable")), CohortLabel::Known(0));
    assert_eq!(label(Some(b"canary")), CohortLabel::Known(1));
    assert_eq!(label(Some(b" canary ")), CohortLabel::Known(1));
    assert_eq!(label(Some(b"Canary")), CohortLabel::Unknown);
    assert_eq!(label(Some(b"drop table")), CohortLabel::Unknown);
    assert_eq!(label(Some(b"")), CohortLabel::Unknown);
    assert_eq!(label(None), CohortLabel::None);
}

#[test]
fn version_comes_from_node_metadata_then_config() {
    assert_eq!(
        sidecar_filter(r#","version":"v9""#, Some("v2"))
            .metrics
            .version(),
        "v2"
    );
    assert_eq!(
        sidecar_filter(r#","version":"v9""#, None).metrics.version(),
        "v9"
    );
    assert_eq!(
        sidecar_filter(r#","version":"v9""#, Some(""))
            .metrics
            .version(),
        "v9"
    );
    assert_eq!(sidecar_filter("", None).metrics.version(), "unknown");
    // Node metadata is not validated by the config: it is sanitised instead.
    assert_eq!(
        sidecar_filter("", Some("v1;.;x")).metrics.version(),
        "v1_._x"
    );
}

#[test]
fn mirrored_by_host_suffix_or_flag() {
    let filter = sidecar_filter("", None);
    let s = sidecar(&filter);
    assert!(s.is_mirrored(Some(b"model-service-shadow")));
    assert!(s.is_mirrored(Some(b"model-service-shadow:8080")));
    assert!(s.is_mirrored(Some(b"Model-Service-SHADOW:80")));
    assert!(!s.is_mirrored(Some(b"model-service")));
    assert!(!s.is_mirrored(Some(b"model-service:8080")));
    assert!(!s.is_mirrored(Some(b"-shadow")));
    assert!(!s.is_mirrored(Some(b"shadow-model")));
    assert!(!s.is_mirrored(None));
    let flagged = sidecar_filter(r#","mirrored":true"#, None);
    assert!(sidecar(&flagged).is_mirrored(Some(b"model-service")));
    assert!(sidecar(&flagged).is_mirrored(None));
}

#[test]
fn host_suffix_edge_cases() {
    assert!(host_has_suffix(b"a-shadow:", b"-shadow"));
    assert!(!host_has_suffix(b"a-shadow:x1", b"-shadow"));
    assert!(!host_has_suffix(b"[::1]:80", b"-shadow"));
    assert!(host_has_suffix(b"svc.ns-shadow", b"-shadow"));
    assert!(!host_has_suffix(b"", b"-shadow"));
}
