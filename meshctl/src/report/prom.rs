//! A small client for Prometheus's HTTP query API, and exact counter
//! increases over a window.
//!
//! `increase()` in PromQL extrapolates to the window's edges, so it reports
//! 99.7 requests where 100 were sent. The report instead reads the raw samples
//! (`metric[window]` at the window's end) and the last sample at or before the
//! window's start, and adds up the deltas itself, treating any drop as a
//! counter reset (a restarted pod) exactly as Prometheus does.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::ReportError;

pub type Labels = BTreeMap<String, String>;

/// A Prometheus HTTP API endpoint.
pub struct Prometheus {
    base: String,
    agent: ureq::Agent,
}

/// One series of an instant-vector result.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Labels,
    pub value: f64,
}

/// One series of a range-vector result, oldest sample first.
#[derive(Debug, Clone, PartialEq)]
pub struct Samples {
    pub labels: Labels,
    pub values: Vec<(f64, f64)>,
}

#[derive(Deserialize)]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum Data {
    Vector(Vec<VectorItem>),
    Matrix(Vec<MatrixItem>),
    // Scalar and string results are not used by the report.
    Scalar(serde::de::IgnoredAny),
    String(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
struct VectorItem {
    metric: Labels,
    value: (f64, String),
}

#[derive(Deserialize)]
struct MatrixItem {
    metric: Labels,
    values: Vec<(f64, String)>,
}

fn parse_value(query: &str, text: &str) -> Result<f64, ReportError> {
    text.parse::<f64>().map_err(|_| ReportError::BadResponse {
        query: query.to_string(),
        detail: format!("sample value {text:?} is not a number"),
    })
}

impl Prometheus {
    /// `base` is the server's root URL, e.g. `http://127.0.0.1:9090`.
    pub fn new(base: &str, timeout: Duration) -> Result<Prometheus, ReportError> {
        let base = base.trim_end_matches('/').to_string();
        if !base.starts_with("http://") {
            return Err(ReportError::Usage(format!(
                "--prometheus must be an http:// URL, got {base:?}"
            )));
        }
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build()
            .new_agent();
        Ok(Prometheus { base, agent })
    }

    fn query(&self, query: &str, time: f64) -> Result<Data, ReportError> {
        let url = format!("{}/api/v1/query", self.base);
        let connect = |source: ureq::Error| ReportError::Connect {
            url: url.clone(),
            source: Box::new(source),
        };
        let mut response = self
            .agent
            .get(&url)
            .query("query", query)
            .query("time", format!("{time:.3}"))
            .call()
            .map_err(connect)?;
        let status = response.status();
        let body = response.body_mut().read_to_string().map_err(connect)?;
        let envelope: Envelope =
            serde_json::from_str(&body).map_err(|err| ReportError::BadResponse {
                query: query.to_string(),
                detail: format!("HTTP {status}, not a Prometheus API answer ({err}): {body:.200}"),
            })?;
        if envelope.status != "success" {
            return Err(ReportError::Query {
                query: query.to_string(),
                kind: envelope.error_type.unwrap_or_default(),
                message: envelope.error.unwrap_or_default(),
            });
        }
        envelope.data.ok_or_else(|| ReportError::BadResponse {
            query: query.to_string(),
            detail: "no data in a successful answer".into(),
        })
    }

    /// An instant query whose result is a vector.
    pub fn instant(&self, query: &str, time: f64) -> Result<Vec<Sample>, ReportError> {
        match self.query(query, time)? {
            Data::Vector(items) => items
                .into_iter()
                .map(|item| {
                    Ok(Sample {
                        labels: item.metric,
                        value: parse_value(query, &item.value.1)?,
                    })
                })
                .collect(),
            _ => Err(ReportError::BadResponse {
                query: query.to_string(),
                detail: "expected an instant vector".into(),
            }),
        }
    }

    /// An instant query of a range selector (`selector[window]`): the raw
    /// samples.
    pub fn samples(&self, query: &str, time: f64) -> Result<Vec<Samples>, ReportError> {
        match self.query(query, time)? {
            Data::Matrix(items) => items
                .into_iter()
                .map(|item| {
                    let values = item
                        .values
                        .iter()
                        .map(|(t, v)| Ok((*t, parse_value(query, v)?)))
                        .collect::<Result<Vec<_>, ReportError>>()?;
                    Ok(Samples {
                        labels: item.metric,
                        values,
                    })
                })
                .collect(),
            _ => Err(ReportError::BadResponse {
                query: query.to_string(),
                detail: "expected a range vector".into(),
            }),
        }
    }
}

/// One counter series and how much it grew in the window.
#[derive(Debug, Clone, PartialEq)]
pub struct Increase {
    pub name: String,
    pub labels: Labels,
    pub value: f64,
}

/// Exact increase of one counter: from `before` (the last value at or before
/// the window's start; `None` when the series did not exist yet, so it
/// started from 0 inside the window) through `values` (time, value). A drop
/// means the process restarted and counted again from 0; so does a restart
/// of its target seen in `restarts` (the first sample time of each new
/// process), which catches what a drop cannot: a series that vanished with
/// the old process and came back, already past its old value, before the
/// next scrape.
pub fn counter_increase(before: Option<f64>, values: &[(f64, f64)], restarts: &[f64]) -> f64 {
    let mut previous = before.unwrap_or(0.0);
    let mut previous_time = f64::NEG_INFINITY;
    let mut total = 0.0;
    for &(time, value) in values {
        let restarted = restarts.iter().any(|r| *r > previous_time && *r <= time);
        total += if restarted || value < previous {
            value
        } else {
            value - previous
        };
        previous = value;
        previous_time = time;
    }
    total
}

/// Envoy's uptime gauge, scraped with the filter's counters: it drops when
/// the proxy restarts, even when a lazily created counter cannot show it.
pub const UPTIME: &str = "envoy_server_uptime";

/// The model-service's metrics, which live in the app, not the proxy.
const SERVICE_PREFIX: &str = "model_";

/// The scrape target a series came from.
fn target(labels: &Labels) -> (String, String) {
    let get = |key: &str| labels.get(key).cloned().unwrap_or_default();
    (get("job"), get("instance"))
}

/// How far the start time derived from Envoy's uptime (sample time minus
/// uptime) may drift within one process: the gauge is only refreshed at each
/// stats flush (5 s by default).
const START_DRIFT_SECONDS: f64 = 15.0;

/// Per target, the times of the first sample of each new process: its
/// uptime is lower than the one before, or (when the new process was already
/// past a flush at its first scrape) it started well after the old one.
fn restarts(before: &[Sample], during: &[Samples]) -> BTreeMap<(String, String), Vec<f64>> {
    let mut out: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    for series in during
        .iter()
        .filter(|s| s.labels.get("__name__").map(String::as_str) == Some(UPTIME))
    {
        // The sample before the window has no timestamp here: drops only.
        let mut previous_uptime = before
            .iter()
            .find(|b| b.labels == series.labels)
            .map(|b| b.value);
        let mut previous_start: Option<f64> = None;
        for &(time, uptime) in &series.values {
            let start = time - uptime;
            let dropped = previous_uptime.is_some_and(|p| uptime < p);
            let started_later = previous_start.is_some_and(|p| start > p + START_DRIFT_SECONDS);
            if dropped || started_later {
                out.entry(target(&series.labels)).or_default().push(time);
            }
            previous_uptime = Some(uptime);
            previous_start = Some(start);
        }
    }
    out
}

/// Separator of Istio's tag encoding (`label=.=value;.;name`) once Envoy's
/// Prometheus output has replaced `=`, `.` and `;` with `_`.
const ENCODED_TAG: &str = "___";

/// A regex for `__name__` matching `names` both as they are and with tags
/// still encoded in front (a proxy without `extraStatTags` for them, such as
/// a gateway whose meshConfig lacks them).
pub fn name_regex(names: &[String]) -> String {
    format!("(?:[a-zA-Z0-9_:]*{ENCODED_TAG})?(?:{})", names.join("|"))
}

/// Moves tags encoded in a metric name into labels: the name
/// `cohort___canary___response_class___5xx___sms_cohort_requests_total`
/// becomes `sms_cohort_requests_total{cohort="canary",response_class="5xx"}`.
/// Labels already present win. Names without the encoding pass unchanged.
pub fn decode_istio_name(name: &str, labels: &mut Labels) -> String {
    let parts: Vec<&str> = name.split(ENCODED_TAG).collect();
    if parts.len() < 3 || parts.len().is_multiple_of(2) || parts.iter().any(|p| p.is_empty()) {
        return name.to_string();
    }
    for pair in parts[..parts.len() - 1].chunks(2) {
        labels
            .entry(pair[0].to_string())
            .or_insert_with(|| pair[1].to_string());
    }
    parts[parts.len() - 1].to_string()
}

/// Joins the samples at the window's start with those inside it, series by
/// series (the full label set, `__name__` included, is the key).
pub fn increases(before: Vec<Sample>, during: Vec<Samples>) -> Vec<Increase> {
    let restarts = restarts(&before, &during);
    let mut start: BTreeMap<Labels, f64> = before
        .into_iter()
        .map(|sample| (sample.labels, sample.value))
        .collect();
    during
        .into_iter()
        .filter(|series| series.labels.get("__name__").map(String::as_str) != Some(UPTIME))
        .map(|series| {
            let mut labels = series.labels.clone();
            let name =
                decode_istio_name(&labels.remove("__name__").unwrap_or_default(), &mut labels);
            // Envoy's uptime speaks for Envoy's own counters only: with
            // Istio's metrics merging the app shares the proxy's target, and
            // a proxy restart does not reset the app's counters.
            let restarts = if name.starts_with(SERVICE_PREFIX) {
                &[][..]
            } else {
                restarts
                    .get(&target(&series.labels))
                    .map_or(&[][..], Vec::as_slice)
            };
            let value = counter_increase(start.remove(&series.labels), &series.values, restarts);
            Increase {
                name,
                labels,
                value,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Samples one second apart from t = 1.
    fn timed(values: &[f64]) -> Vec<(f64, f64)> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| (i as f64 + 1.0, *v))
            .collect()
    }

    #[test]
    fn increase_counts_from_the_value_before_the_window() {
        assert_eq!(
            counter_increase(Some(10.0), &timed(&[12.0, 15.0, 15.0]), &[]),
            5.0
        );
        assert_eq!(counter_increase(Some(10.0), &[], &[]), 0.0);
    }

    // The old process counts to 93, restarts at t = 3 (the series missing
    // from that scrape) and shows 93 again at t = 4: no drop is ever seen,
    // but the uptime says the new process counted those 93, then 7 more.
    #[test]
    fn a_restart_without_a_visible_drop_still_counts() {
        let values = [(1.0, 50.0), (2.0, 93.0), (4.0, 93.0), (5.0, 100.0)];
        assert_eq!(counter_increase(None, &values, &[]), 100.0, "blind to it");
        assert_eq!(counter_increase(None, &values, &[3.0]), 93.0 + 100.0);
        assert_eq!(
            counter_increase(Some(40.0), &values, &[0.5]),
            100.0,
            "before t=1: from 0"
        );
    }

    #[test]
    fn restarts_come_from_uptime_drops_per_target() {
        let labels = |name: &str, instance: &str| -> Labels {
            [
                ("__name__", name),
                ("job", "sidecar"),
                ("instance", instance),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
        };
        let before = vec![
            Sample {
                labels: labels(UPTIME, "a"),
                value: 30.0,
            },
            Sample {
                labels: labels("c_total", "a"),
                value: 40.0,
            },
        ];
        let during = vec![
            Samples {
                labels: labels(UPTIME, "a"),
                values: vec![(1.0, 31.0), (2.0, 32.0), (3.0, 0.0), (4.0, 1.0)],
            },
            Samples {
                labels: labels("c_total", "a"),
                values: vec![(1.0, 50.0), (2.0, 93.0), (4.0, 93.0)],
            },
            Samples {
                labels: labels("c_total", "b"),
                values: vec![(1.0, 5.0), (4.0, 5.0)],
            },
            // The app behind the same (merged) target kept running.
            Samples {
                labels: labels("model_predictions_total", "a"),
                values: vec![(1.0, 7.0), (4.0, 9.0)],
            },
        ];
        let got = increases(before.clone(), during.clone());
        assert_eq!(got.len(), 3, "the uptime gauge is not a counter: {got:?}");
        assert_eq!(got[0].value, 53.0 + 93.0);
        assert_eq!(got[1].value, 5.0, "b did not restart");
        assert_eq!(got[2].value, 9.0, "the app's counter kept counting");
    }

    // An old proxy started at t = -100 is last seen at t = 2 (uptime 102);
    // the next sample, at t = 200, shows uptime 180: higher, so no drop, but
    // that process started at t = 20, long after the old one.
    #[test]
    fn restarts_also_come_from_a_later_start_time() {
        let uptime: Labels = [("__name__", UPTIME), ("instance", "a")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let during = vec![Samples {
            labels: uptime.clone(),
            // Start times: 1 - 101 = -100, 2 - 102 = -100, 200 - 180 = 20.
            values: vec![(1.0, 101.0), (2.0, 102.0), (200.0, 180.0), (205.0, 180.0)],
        }];
        let found = restarts(&[], &during);
        assert_eq!(found[&(String::new(), "a".to_string())], vec![200.0]);
        // Within one process the gauge lags by a flush: no restart.
        let steady = vec![Samples {
            labels: uptime,
            values: vec![(1.0, 100.0), (2.0, 100.0), (6.0, 105.0), (7.0, 105.0)],
        }];
        assert!(restarts(&[], &steady).is_empty());
    }

    #[test]
    fn increase_of_a_series_born_in_the_window_starts_at_zero() {
        assert_eq!(counter_increase(None, &timed(&[3.0, 7.0]), &[]), 7.0);
    }

    // Prometheus's reset rule: a drop means a restart, and everything counted
    // since the restart is new (10 -> 14, reset, 0 -> 2 -> 5: 4 + 5).
    #[test]
    fn increase_survives_counter_resets() {
        assert_eq!(
            counter_increase(Some(10.0), &timed(&[14.0, 2.0, 5.0]), &[]),
            9.0
        );
        assert_eq!(
            counter_increase(Some(10.0), &timed(&[0.0, 0.0, 1.0]), &[]),
            1.0
        );
    }

    #[test]
    fn increases_pair_series_by_labels_and_strip_the_name() {
        let labels = |name: &str, version: &str| -> Labels {
            [("__name__", name), ("version", version)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let before = vec![Sample {
            labels: labels("x_total", "v1"),
            value: 4.0,
        }];
        let during = vec![
            Samples {
                labels: labels("x_total", "v1"),
                values: vec![(1.0, 6.0), (2.0, 9.0)],
            },
            Samples {
                labels: labels("x_total", "v2"),
                values: vec![(1.0, 2.0)],
            },
        ];
        let got = increases(before, during);
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].name.as_str(), got[0].value), ("x_total", 5.0));
        assert_eq!(got[0].labels.get("version").map(String::as_str), Some("v1"));
        assert!(!got[0].labels.contains_key("__name__"));
        assert_eq!(got[1].value, 2.0);
    }

    // Envoy's /stats/prometheus of a gateway without stats_tags for the
    // filter's tags prints `wasmcustom.cohort=.=canary;.;response_class=.=5xx;.;
    // sms_cohort_requests_total` as below.
    #[test]
    fn istio_encoded_names_become_labels() {
        let mut labels = Labels::from([("instance".to_string(), "gw".to_string())]);
        let name = decode_istio_name(
            "cohort___canary___response_class___5xx___sms_cohort_requests_total",
            &mut labels,
        );
        assert_eq!(name, "sms_cohort_requests_total");
        assert_eq!(labels["cohort"], "canary");
        assert_eq!(labels["response_class"], "5xx");
        assert_eq!(labels["instance"], "gw");
        let mut labels = Labels::new();
        let plain = decode_istio_name("sms_model_requests_total", &mut labels);
        assert_eq!(
            (plain.as_str(), labels.len()),
            ("sms_model_requests_total", 0)
        );
        let bucket = decode_istio_name(
            "cohort___stable___sms_cohort_request_duration_milliseconds_bucket",
            &mut labels,
        );
        assert_eq!(bucket, "sms_cohort_request_duration_milliseconds_bucket");
        assert_eq!(labels["cohort"], "stable");
        // An even number of parts is not the encoding: left alone.
        let odd = decode_istio_name("a___b", &mut Labels::new());
        assert_eq!(odd, "a___b");
        let regex = name_regex(&["x_total".to_string(), "y_bucket".to_string()]);
        assert_eq!(regex, "(?:[a-zA-Z0-9_:]*___)?(?:x_total|y_bucket)");
    }

    #[test]
    fn api_answers_decode() {
        let vector = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"a","le":"+Inf"},"value":[1700000000.5,"NaN"]}]}}"#;
        let envelope: Envelope = serde_json::from_str(vector).unwrap();
        match envelope.data {
            Some(Data::Vector(items)) => {
                assert_eq!(items[0].metric["le"], "+Inf");
                assert!(parse_value("q", &items[0].value.1).unwrap().is_nan());
                assert_eq!(parse_value("q", "+Inf").unwrap(), f64::INFINITY);
            }
            _ => panic!("expected a vector"),
        }
        let error = r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        let envelope: Envelope = serde_json::from_str(error).unwrap();
        assert_eq!(envelope.error_type.as_deref(), Some("bad_data"));
        assert!(parse_value("q", "abc").is_err());
    }
}
