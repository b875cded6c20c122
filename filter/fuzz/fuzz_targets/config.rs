//! Any bytes as a pluginConfig: never a panic, and anything accepted is a
//! config the request path can use (weights summing to 100).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sms_checker_filter::config::PluginConfig;
use sms_checker_filter::logic::Filter;

fuzz_target!(|data: &[u8]| {
    if let Ok(config) = PluginConfig::from_json(data) {
        let total: u32 = config.cohorts.iter().map(|c| u32::from(c.weight)).sum();
        assert_eq!(total, 100);
        let filter = Filter::new(config, Some("v1"));
        assert!(!filter.metrics.is_empty());
    }
});
