//! Evidence for the report's unit tests: a window like the seed's, built
//! from counter increases as Prometheus would give them.
use super::dataset::{Dataset, MetricNames, bucket};
use super::model::{Gate, Role, Settings, Window};
use super::prom::Increase;

pub fn settings() -> Settings {
    Settings {
        roles: Role::chart_defaults(),
        confidence: 0.95,
        sequence_tuning: 1000.0,
        min_requests: 100.0,
        min_users: 100.0,
        max_error_increase: 0.02,
        max_spam_shift: 0.05,
        max_p95_increase_ms: 10.0,
        icc: 0.05,
        canary_weight: None,
        srm_p: 0.001,
        thresholds_ms: vec![5.0, 25.0],
        gate: Gate::Canary,
    }
}

pub fn inc(name: &str, labels: &[(&str, &str)], value: f64) -> Increase {
    Increase {
        name: name.to_string(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        value,
    }
}

pub fn buckets(name: &str, key: &str, value: &str, per_bin: &[(&str, f64)]) -> Vec<Increase> {
    let mut cumulative = 0.0;
    per_bin
        .iter()
        .map(|(le, n)| {
            cumulative += n;
            inc(
                name,
                &[(key, value), ("le", le), ("instance", "a")],
                cumulative,
            )
        })
        .collect()
}

/// A window like the seed's: 900 stable and 100 canary users at the
/// gateway, all mirrored to v3; `canary_errors` of the canary's answers
/// are 503s; the canary's gateway latency sits in `canary_bin`.
pub fn dataset(canary_errors: f64, canary_bin: &str) -> Dataset {
    let s = MetricNames::SIDECAR_REQUESTS;
    let g = MetricNames::GATEWAY_REQUESTS;
    let mut all = vec![
        inc(
            s,
            &[
                ("version", "v1"),
                ("cohort", "stable"),
                ("response_class", "2xx"),
                ("prediction", "spam"),
                ("mirrored", "false"),
                ("instance", "a"),
            ],
            117.0,
        ),
        inc(
            s,
            &[
                ("version", "v1"),
                ("cohort", "stable"),
                ("response_class", "2xx"),
                ("prediction", "ham"),
                ("mirrored", "false"),
                ("instance", "a"),
            ],
            700.0,
        ),
        inc(
            s,
            &[
                ("version", "v1"),
                ("cohort", "stable"),
                ("response_class", "2xx"),
                ("prediction", "ham"),
                ("mirrored", "false"),
                ("instance", "b"),
            ],
            83.0,
        ),
        inc(
            s,
            &[
                ("version", "v2"),
                ("cohort", "canary"),
                ("response_class", "2xx"),
                ("prediction", "spam"),
                ("mirrored", "false"),
            ],
            13.0,
        ),
        inc(
            s,
            &[
                ("version", "v2"),
                ("cohort", "canary"),
                ("response_class", "2xx"),
                ("prediction", "ham"),
                ("mirrored", "false"),
            ],
            87.0 - canary_errors,
        ),
        inc(
            s,
            &[
                ("version", "v3"),
                ("cohort", "stable"),
                ("response_class", "2xx"),
                ("prediction", "ham"),
                ("mirrored", "true"),
            ],
            870.0,
        ),
        inc(
            s,
            &[
                ("version", "v3"),
                ("cohort", "canary"),
                ("response_class", "2xx"),
                ("prediction", "spam"),
                ("mirrored", "true"),
            ],
            130.0,
        ),
        inc(g, &[("cohort", "stable"), ("response_class", "2xx")], 900.0),
        inc(
            g,
            &[("cohort", "canary"), ("response_class", "2xx")],
            100.0 - canary_errors,
        ),
        inc(
            g,
            &[("cohort", "canary"), ("response_class", "5xx")],
            canary_errors,
        ),
        inc(
            MetricNames::SERVICE_PREDICTIONS,
            &[("version", "v1"), ("result", "ham")],
            783.0,
        ),
        inc(
            MetricNames::SERVICE_PREDICTIONS,
            &[("version", "v1"), ("result", "spam")],
            117.0,
        ),
    ];
    let gd = &bucket(MetricNames::GATEWAY_DURATION);
    all.extend(buckets(
        gd,
        "cohort",
        "stable",
        &[
            ("1", 0.0),
            ("5", 900.0),
            ("25", 0.0),
            ("100", 0.0),
            ("+Inf", 0.0),
        ],
    ));
    let canary: Vec<(&str, f64)> = ["1", "5", "25", "100", "+Inf"]
        .into_iter()
        .map(|le| (le, if le == canary_bin { 100.0 } else { 0.0 }))
        .collect();
    all.extend(buckets(gd, "cohort", "canary", &canary));
    let sd = &bucket(MetricNames::SIDECAR_DURATION);
    all.extend(buckets(
        sd,
        "version",
        "v1",
        &[("1", 450.0), ("5", 450.0), ("+Inf", 0.0)],
    ));
    Dataset::new(
        MetricNames {
            prefix: String::new(),
        },
        all,
    )
}

pub fn window() -> Window {
    Window {
        start: 0.0,
        end: 3600.0,
        seconds: 3600.0,
    }
}
