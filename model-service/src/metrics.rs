//! Prometheus metrics, in a registry of the service's own.
//!
//! The per-version children are resolved once at start-up, so the request
//! path increments an atomic instead of looking labels up.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::model::{Label, Model};

/// Sub-millisecond buckets: a prediction takes microseconds, and the original
/// service's smallest bucket (5 ms) would have held every observation.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
    0.01, 0.025, 0.05, 0.1,
];

/// Metric names, as Prometheus shows them; `meshctl report` reads the first two.
pub const PREDICTIONS: &str = "model_predictions_total";
pub const PREDICTION_LATENCY: &str = "model_prediction_latency_seconds";
pub const HTTP_REQUESTS: &str = "model_http_requests_total";
pub const INFO: &str = "model_info";

/// The service's Prometheus metrics (a model's test-split scores are
/// [`crate::model::Scores`]).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    ham: IntCounter,
    spam: IntCounter,
    latency: Histogram,
    http_requests: IntCounterVec,
}

impl Metrics {
    pub fn new(model: &Model) -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let version = model.version.as_str();
        let predictions = IntCounterVec::new(
            Opts::new(PREDICTIONS, "Predictions made, by verdict"),
            &["result", "version"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(PREDICTION_LATENCY, "Time spent classifying one message")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["version"],
        )?;
        let http_requests = IntCounterVec::new(
            Opts::new(
                HTTP_REQUESTS,
                "HTTP requests, by matched route, method and status",
            ),
            &["route", "method", "status"],
        )?;
        let info = IntGaugeVec::new(
            Opts::new(INFO, "The model and build serving, always 1"),
            &["version", "classifier", "service_version", "dataset_sha256"],
        )?;
        registry.register(Box::new(predictions.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(info.clone()))?;
        info.with_label_values(&[
            version,
            model.classifier.as_str(),
            env!("CARGO_PKG_VERSION"),
            model.dataset_sha256.as_str(),
        ])
        .set(1);
        Ok(Metrics {
            registry,
            ham: predictions.with_label_values(&[Label::Ham.as_str(), version]),
            spam: predictions.with_label_values(&[Label::Spam.as_str(), version]),
            latency: latency.with_label_values(&[version]),
            http_requests,
        })
    }

    pub fn observe_prediction(&self, label: Label, seconds: f64) {
        match label {
            Label::Ham => self.ham.inc(),
            Label::Spam => self.spam.inc(),
        }
        self.latency.observe(seconds);
    }

    pub fn observe_request(&self, route: &str, method: &str, status: axum::http::StatusCode) {
        self.http_requests
            .with_label_values(&[route, method, status.as_str()])
            .inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        String::from_utf8(out).map_err(|err| prometheus::Error::Msg(err.to_string()))
    }
}
