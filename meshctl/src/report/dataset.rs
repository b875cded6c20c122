//! Prometheus's counter increases of one window, summed per version, cohort
//! and role on demand: the report's data layer.

use std::collections::{BTreeMap, BTreeSet};

use super::ReportError;
use super::model::Window;
use super::prom::{self, Increase, Labels, Prometheus};
use super::stats::quantile::{Bucket, Histogram};

/// Metric names as exposed, with the optional prefix some Envoy set-ups add.
#[derive(Debug, Clone)]
pub struct MetricNames {
    pub prefix: String,
}

impl MetricNames {
    pub const SIDECAR_REQUESTS: &'static str = "sms_model_requests_total";
    pub const SIDECAR_DURATION: &'static str = "sms_model_request_duration_milliseconds_bucket";
    pub const GATEWAY_REQUESTS: &'static str = "sms_cohort_requests_total";
    pub const GATEWAY_DURATION: &'static str = "sms_cohort_request_duration_milliseconds_bucket";
    /// The model-service's own metrics never carry the Envoy prefix.
    pub const SERVICE_PREDICTIONS: &'static str = "model_predictions_total";
    pub const SERVICE_LATENCY: &'static str = "model_prediction_latency_seconds_bucket";

    pub fn filter(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Every series the report reads (Envoy's uptime reveals restarts).
    pub fn all(&self) -> Vec<String> {
        vec![
            super::prom::UPTIME.to_string(),
            self.filter(Self::SIDECAR_REQUESTS),
            self.filter(Self::SIDECAR_DURATION),
            self.filter(Self::GATEWAY_REQUESTS),
            self.filter(Self::GATEWAY_DURATION),
            Self::SERVICE_PREDICTIONS.to_string(),
            Self::SERVICE_LATENCY.to_string(),
        ]
    }
}

/// The counter increases of one window, summed on demand over the labels a
/// question does not ask about (Prometheus's `job`, `instance`, pods...).
pub struct Dataset {
    names: MetricNames,
    increases: Vec<Increase>,
}

pub fn label<'a>(labels: &'a Labels, key: &str) -> &'a str {
    labels.get(key).map_or("", String::as_str)
}

/// Responses that failed the user: a 5xx, or no response at all (reset,
/// timeout before headers).
pub fn is_error(labels: &Labels) -> bool {
    matches!(label(labels, "response_class"), "5xx" | "none")
}

impl Dataset {
    pub fn new(names: MetricNames, increases: Vec<Increase>) -> Dataset {
        Dataset { names, increases }
    }

    /// The exact increases of every series the report reads over `window`:
    /// the last samples at or before its start and the raw samples inside it.
    pub fn fetch(
        client: &Prometheus,
        names: MetricNames,
        window: &Window,
    ) -> Result<Dataset, ReportError> {
        let selector = format!("{{__name__=~\"{}\"}}", prom::name_regex(&names.all()));
        let before = client.instant(&selector, window.start)?;
        let millis = (window.seconds * 1000.0).round() as u64;
        let during = client.samples(&format!("{selector}[{millis}ms]"), window.end)?;
        Ok(Dataset::new(names, prom::increases(before, during)))
    }

    /// No series at all: nothing scraped, or a wrong metric prefix.
    pub fn is_empty(&self) -> bool {
        self.increases.is_empty()
    }

    pub fn series<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Increase> + 'a {
        self.increases.iter().filter(move |i| i.name == name)
    }

    pub fn sum(&self, name: &str, keep: impl Fn(&Labels) -> bool) -> f64 {
        self.series(name)
            .filter(|i| keep(&i.labels))
            // A fold from +0.0: an empty f64 `sum()` is -0.0, printed "-0.00%".
            .fold(0.0, |total, i| total + i.value)
    }

    pub fn values_of(&self, name: &str, key: &str) -> BTreeSet<String> {
        self.series(name)
            .map(|i| label(&i.labels, key).to_string())
            .filter(|v| !v.is_empty())
            .collect()
    }

    /// Cumulative buckets summed by `le`; `scale` converts the bounds
    /// (seconds to milliseconds).
    pub fn histogram(&self, name: &str, scale: f64, keep: impl Fn(&Labels) -> bool) -> Histogram {
        let mut by_bound: BTreeMap<String, f64> = BTreeMap::new();
        for i in self.series(name).filter(|i| keep(&i.labels)) {
            *by_bound
                .entry(label(&i.labels, "le").to_string())
                .or_default() += i.value;
        }
        Histogram::from_buckets(
            by_bound
                .into_iter()
                .filter_map(|(le, count)| {
                    let bound = le.parse::<f64>().ok()?;
                    Some(Bucket {
                        // Rounded to 12 decimals so 0.000005 s shows as 0.005 ms,
                        // not 0.005000000000000001.
                        upper_bound: if bound.is_infinite() || scale == 1.0 {
                            bound
                        } else {
                            (bound * scale * 1e12).round() / 1e12
                        },
                        count,
                    })
                })
                .collect(),
        )
    }

    pub fn sidecar_requests(&self) -> String {
        self.names.filter(MetricNames::SIDECAR_REQUESTS)
    }
    pub fn gateway_requests(&self) -> String {
        self.names.filter(MetricNames::GATEWAY_REQUESTS)
    }

    /// Sidecar histogram for a set of versions.
    pub fn sidecar_latency(&self, versions: &BTreeSet<String>) -> Histogram {
        let name = self.names.filter(MetricNames::SIDECAR_DURATION);
        self.histogram(&name, 1.0, |l| versions.contains(label(l, "version")))
    }

    pub fn gateway_latency(&self, cohort: &str) -> Histogram {
        let name = self.names.filter(MetricNames::GATEWAY_DURATION);
        self.histogram(&name, 1.0, |l| label(l, "cohort") == cohort)
    }

    pub fn service_latency(&self, version: &str) -> Histogram {
        self.histogram(MetricNames::SERVICE_LATENCY, 1000.0, |l| {
            label(l, "version") == version
        })
    }
}
