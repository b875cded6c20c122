//! No input panics: config documents, cookie headers, identities, hosts.

use proptest::prelude::*;
use sms_checker_filter::config::PluginConfig;
use sms_checker_filter::cookie::{find_cookie, is_valid_cookie_id, user_id_from_header};
use sms_checker_filter::logic::{CompiledRole, Filter, GatewayRequest, host_has_suffix};
use sms_checker_filter::metrics::{Prediction, ResponseClass};

/// JSON-ish documents: mostly valid shapes with random values, so the
/// validator (not only the JSON parser) gets exercised.
fn config_doc() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        Just("null".to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| n.to_string()),
        "[a-zA-Z0-9 ;:=.\\-]{0,12}".prop_map(|s| format!("{s:?}")),
    ];
    let key = prop_oneof![
        Just("role"),
        Just("experiment"),
        Just("cohortHeader"),
        Just("salt"),
        Just("userIdHeader"),
        Just("responseHeader"),
        Just("clearRouteCache"),
        Just("version"),
        Just("predictionHeader"),
        Just("mirrored"),
        Just("shadowHostSuffix"),
        Just("bogus"),
    ];
    let cohort =
        ("[a-z\\-]{0,5}", 0u32..120).prop_map(|(n, w)| format!(r#"{{"name":"{n}","weight":{w}}}"#));
    (
        prop::sample::select(vec!["gateway", "sidecar", "other"]),
        prop::collection::vec(cohort, 0..4),
        prop::collection::vec((key, value), 0..5),
    )
        .prop_map(|(role, cohorts, fields)| {
            let mut doc = format!(r#"{{"role":"{role}","cohorts":[{}]"#, cohorts.join(","));
            for (k, v) in fields {
                doc.push_str(&format!(r#","{k}":{v}"#));
            }
            doc.push('}');
            doc
        })
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_the_config_parser(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = PluginConfig::from_json(&bytes);
    }

    #[test]
    fn config_documents_parse_or_name_a_field(doc in config_doc()) {
        match PluginConfig::from_json(doc.as_bytes()) {
            Ok(config) => {
                let total: u32 = config.cohorts.iter().map(|c| u32::from(c.weight)).sum();
                prop_assert_eq!(total, 100);
            }
            Err(err) => prop_assert!(!err.to_string().is_empty()),
        }
    }

    #[test]
    fn cookie_parsing_never_panics(header in prop::collection::vec(any::<u8>(), 0..2048), name in "[a-z\\-]{1,16}") {
        if let Some(value) = find_cookie(&header, name.as_bytes()) {
            prop_assert!(is_valid_cookie_id(value));
        }
        let _ = user_id_from_header(&header);
    }

    #[test]
    fn structured_cookie_headers(pairs in prop::collection::vec(("[a-z\\-]{0,16}", "[ -~]{0,40}"), 0..8)) {
        let header = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
        let found = find_cookie(header.as_bytes(), b"sms-checker-uid");
        if let Some(value) = found {
            prop_assert!(is_valid_cookie_id(value));
        }
    }

    #[test]
    fn gateway_decisions_never_panic_and_stay_in_range(
        user_id in prop::option::of(prop::collection::vec(any::<u8>(), 0..300)),
        cookie in prop::option::of(prop::collection::vec(any::<u8>(), 0..300)),
        wanted in prop::option::of(prop::collection::vec(any::<u8>(), 0..20)),
        token in prop::option::of(prop::collection::vec(any::<u8>(), 0..40)),
    ) {
        let json = format!(
            r#"{{"role":"gateway","userIdHeader":"x-u","cohorts":[{{"name":"a","weight":30}},{{"name":"b","weight":70}}],"override":{{"tokenSha256":"{}"}}}}"#,
            "0".repeat(64)
        );
        let filter = Filter::new(PluginConfig::from_json(json.as_bytes()).unwrap(), None);
        let CompiledRole::Gateway(g) = &filter.role else { panic!("gateway expected") };
        let d = g.decide(
            &filter.config,
            GatewayRequest {
                user_id: user_id.as_deref(),
                cookie: cookie.as_deref(),
                override_cohort: wanted.as_deref(),
                override_token: token.as_deref(),
            },
            || *b"00000000000000000000000000000000",
        );
        prop_assert!(d.cohort < 2);
    }

    #[test]
    fn header_values_never_panic(value in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = host_has_suffix(&value, b"-shadow");
        let _ = ResponseClass::from_status(Some(&value));
        let _ = Prediction::from_header(Some(&value));
    }
}
