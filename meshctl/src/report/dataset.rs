//! Prometheus's counter increases of one window, summed per version, cohort
//! and role on demand: the report's data layer.

use std::collections::{BTreeMap, BTreeSet};

use model_service::metrics as service;
use sms_checker_filter::metrics as filter;

use super::ReportError;
use super::model::{Role, Source, Window};
use super::prom::{self, Increase, Labels, Prometheus};
use super::stats::quantile::{Bucket, Histogram};

/// Metric names as exposed, with the optional prefix some Envoy set-ups add.
/// The names are the filter's and the model-service's own constants.
#[derive(Debug, Clone)]
pub struct MetricNames {
    pub prefix: String,
}

impl MetricNames {
    pub const SIDECAR_REQUESTS: &'static str = filter::SIDECAR_REQUESTS;
    /// A histogram: its series are `<name>_bucket` (see [`bucket`]).
    pub const SIDECAR_DURATION: &'static str = filter::SIDECAR_DURATION;
    pub const GATEWAY_REQUESTS: &'static str = filter::GATEWAY_REQUESTS;
    /// A histogram, like [`Self::SIDECAR_DURATION`].
    pub const GATEWAY_DURATION: &'static str = filter::GATEWAY_DURATION;
    /// Per request, `user="new"` when the gateway issued a cookie.
    pub const GATEWAY_USERS: &'static str = filter::GATEWAY_USERS;
    /// The model-service's own metrics never carry the Envoy prefix.
    pub const SERVICE_PREDICTIONS: &'static str = service::PREDICTIONS;
    /// A histogram, in seconds.
    pub const SERVICE_LATENCY: &'static str = service::PREDICTION_LATENCY;

    pub fn filter(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Every series the report reads (Envoy's uptime reveals restarts).
    pub fn all(&self) -> Vec<String> {
        vec![
            super::prom::UPTIME.to_string(),
            self.filter(Self::SIDECAR_REQUESTS),
            bucket(&self.filter(Self::SIDECAR_DURATION)),
            self.filter(Self::GATEWAY_REQUESTS),
            bucket(&self.filter(Self::GATEWAY_DURATION)),
            self.filter(Self::GATEWAY_USERS),
            Self::SERVICE_PREDICTIONS.to_string(),
            bucket(Self::SERVICE_LATENCY),
        ]
    }
}

/// The series of a histogram's cumulative buckets, as Prometheus exposes them.
pub fn bucket(histogram: &str) -> String {
    format!("{histogram}_bucket")
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

    /// The cumulative buckets of histogram `name` summed by `le`; `scale`
    /// converts the bounds (seconds to milliseconds).
    pub fn histogram(&self, name: &str, scale: f64, keep: impl Fn(&Labels) -> bool) -> Histogram {
        let mut by_bound: BTreeMap<String, f64> = BTreeMap::new();
        for i in self.series(&bucket(name)).filter(|i| keep(&i.labels)) {
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

    /// Spam and ham answers of a version: from its sidecar, or from the
    /// model-service's own counter when no sidecar reported predictions.
    pub fn spam_and_ham(&self, version: &str) -> (f64, f64) {
        let sidecar = self.sidecar_requests();
        let count = |name: &str, key: &str, value: &str| {
            self.sum(name, |l| {
                label(l, "version") == version && label(l, key) == value
            })
        };
        let spam = count(&sidecar, "prediction", "spam");
        let ham = count(&sidecar, "prediction", "ham");
        if spam + ham > 0.0 {
            return (spam, ham);
        }
        (
            count(MetricNames::SERVICE_PREDICTIONS, "result", "spam"),
            count(MetricNames::SERVICE_PREDICTIONS, "result", "ham"),
        )
    }

    /// Users the gateway assigned to `cohort` for the first time, or `None`
    /// when it reports no user counts at all.
    pub fn new_users(&self, cohort: &str) -> Option<f64> {
        let name = self.names.filter(MetricNames::GATEWAY_USERS);
        self.series(&name).next()?;
        Some(self.sum(&name, |l| {
            label(l, "cohort") == cohort && label(l, "user") == "new"
        }))
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

/// What one arm of a comparison shows over one interval.
#[derive(Debug, Clone, Default)]
pub struct Arm {
    pub requests: f64,
    pub errors: f64,
    pub spam: f64,
    /// Spam and ham answers.
    pub predictions: f64,
    pub latency: Histogram,
    /// New users the gateway assigned to the arm's cohort; `None` without
    /// gateway user counts (or for an arm judged on its sidecars).
    pub new_users: Option<f64>,
}

/// A candidate and stable over one interval: what the checks judge.
#[derive(Debug, Clone)]
pub struct Evidence {
    pub source: Source,
    pub candidate: Arm,
    pub baseline: Arm,
    /// Configured share of new users for the canary cohort during the
    /// interval (0..1), when known: the sample ratio check needs it.
    pub canary_share: Option<f64>,
}

impl Evidence {
    /// The canary is judged on what users saw at the gateway (faults
    /// injected by the VirtualService never reach the canary's sidecar); the
    /// shadow, whose answers users never see, on its sidecar. `source`
    /// forces one; without it the canary falls back to its sidecar when the
    /// gateway has no requests of both cohorts.
    pub fn of(
        data: &Dataset,
        candidate: Role,
        candidates: &BTreeSet<String>,
        stable: &BTreeSet<String>,
        source: Option<Source>,
    ) -> Evidence {
        let gateway = data.gateway_requests();
        let sidecar = data.sidecar_requests();
        let cohort_requests =
            |role: Role| data.sum(&gateway, |l| label(l, "cohort") == role.as_str());
        let source = source.unwrap_or(
            if candidate != Role::Shadow
                && cohort_requests(candidate) > 0.0
                && cohort_requests(Role::Stable) > 0.0
            {
                Source::Gateway
            } else {
                Source::Sidecar
            },
        );
        let spam = |versions: &BTreeSet<String>| {
            versions.iter().fold((0.0, 0.0), |(s, n), v| {
                let (spam, ham) = data.spam_and_ham(v);
                (s + spam, n + spam + ham)
            })
        };
        let arm = |role: Role, versions: &BTreeSet<String>| {
            let (spam, predictions) = spam(versions);
            let mut arm = Arm {
                spam,
                predictions,
                ..Arm::default()
            };
            if source == Source::Gateway {
                let mine = |l: &Labels| label(l, "cohort") == role.as_str();
                arm.requests = data.sum(&gateway, mine);
                arm.errors = data.sum(&gateway, |l| mine(l) && is_error(l));
                arm.latency = data.gateway_latency(role.as_str());
                arm.new_users = data.new_users(role.as_str());
            } else {
                let mine = |l: &Labels| versions.contains(label(l, "version"));
                arm.requests = data.sum(&sidecar, mine);
                arm.errors = data.sum(&sidecar, |l| mine(l) && is_error(l));
                arm.latency = data.sidecar_latency(versions);
            }
            arm
        };
        Evidence {
            source,
            candidate: arm(candidate, candidates),
            baseline: arm(Role::Stable, stable),
            canary_share: None,
        }
    }
}
