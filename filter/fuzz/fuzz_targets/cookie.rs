//! Any bytes as Cookie and user-id headers, and through the whole gateway
//! decision: never a panic, and a cohort always in range.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sms_checker_filter::config::PluginConfig;
use sms_checker_filter::cookie::{find_cookie, is_valid_cookie_id, user_id_from_header};
use sms_checker_filter::logic::{CompiledRole, Filter, GatewayRequest};

const CONFIG: &str = r#"{"role":"gateway","userIdHeader":"x-user-id",
  "cohorts":[{"name":"stable","weight":90},{"name":"canary","weight":10}],
  "override":{"tokenSha256":"0000000000000000000000000000000000000000000000000000000000000000"}}"#;

fuzz_target!(|data: &[u8]| {
    if let Some(value) = find_cookie(data, b"sms-checker-uid") {
        assert!(is_valid_cookie_id(value));
    }
    let _ = user_id_from_header(data);

    let Ok(config) = PluginConfig::from_json(CONFIG.as_bytes()) else {
        return;
    };
    let filter = Filter::new(config, None);
    let CompiledRole::Gateway(gateway) = &filter.role else {
        return;
    };
    // Split the input into the four headers the gateway reads.
    let mut parts = data.splitn(4, |&b| b == 0);
    let request = GatewayRequest {
        user_id: parts.next(),
        cookie: parts.next(),
        override_cohort: parts.next(),
        override_token: parts.next(),
    };
    let decision = gateway.decide(&filter.config, request, || [b'a'; 32]);
    assert!(decision.cohort < filter.config.cohorts.len());
});
