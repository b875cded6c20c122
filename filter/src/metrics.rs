//! Metric names and label values.
//!
//! Labels travel inside the stat name with Istio's tag encoding,
//! `label=.=value;.;metric_name`, which Envoy's `stats_tags` rule
//! `(label=\.=(.*?);\.;)` (Istio: `extraStatTags`) turns back into a
//! Prometheus label. Every value comes from the config or a small enum, so
//! the number of series is bounded and known up front: [`MetricSet::len`].

use crate::config::is_label_value;

pub const GATEWAY_REQUESTS: &str = "sms_cohort_requests_total";
pub const GATEWAY_DURATION: &str = "sms_cohort_request_duration_milliseconds";
pub const GATEWAY_USERS: &str = "sms_cohort_users_total";
pub const GATEWAY_OVERRIDES: &str = "sms_cohort_overrides_total";
pub const SIDECAR_REQUESTS: &str = "sms_model_requests_total";
pub const SIDECAR_DURATION: &str = "sms_model_request_duration_milliseconds";

/// Every tag name the filter emits: each needs one `stats_tags` rule.
pub const TAG_NAMES: [&str; 7] = [
    "cohort",
    "response_class",
    "user",
    "outcome",
    "version",
    "prediction",
    "mirrored",
];

/// Label value for a version that is neither in node metadata nor config.
pub const UNKNOWN_VERSION: &str = "unknown";

/// The HTTP status class of a response; `None` when the stream ended without
/// response headers or with a status outside 100-599.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseClass {
    Informational,
    Success,
    Redirect,
    ClientError,
    ServerError,
    None,
}

impl ResponseClass {
    pub const ALL: [ResponseClass; 6] = [
        ResponseClass::Informational,
        ResponseClass::Success,
        ResponseClass::Redirect,
        ResponseClass::ClientError,
        ResponseClass::ServerError,
        ResponseClass::None,
    ];

    /// From the `:status` pseudo-header value.
    pub fn from_status(status: Option<&[u8]>) -> ResponseClass {
        match status {
            Some([first, b'0'..=b'9', b'0'..=b'9']) => match first {
                b'1' => ResponseClass::Informational,
                b'2' => ResponseClass::Success,
                b'3' => ResponseClass::Redirect,
                b'4' => ResponseClass::ClientError,
                b'5' => ResponseClass::ServerError,
                _ => ResponseClass::None,
            },
            _ => ResponseClass::None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ResponseClass::Informational => "1xx",
            ResponseClass::Success => "2xx",
            ResponseClass::Redirect => "3xx",
            ResponseClass::ClientError => "4xx",
            ResponseClass::ServerError => "5xx",
            ResponseClass::None => "none",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The model's answer from its response header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prediction {
    Spam,
    Ham,
    /// No prediction header (e.g. a health check or an error).
    None,
    /// A value other than `spam`/`ham`: counted, never echoed as a label.
    Other,
}

impl Prediction {
    pub const ALL: [Prediction; 4] = [
        Prediction::Spam,
        Prediction::Ham,
        Prediction::None,
        Prediction::Other,
    ];

    pub fn from_header(value: Option<&[u8]>) -> Prediction {
        match value.map(<[u8]>::trim_ascii) {
            None => Prediction::None,
            Some(v) if v.eq_ignore_ascii_case(b"spam") => Prediction::Spam,
            Some(v) if v.eq_ignore_ascii_case(b"ham") => Prediction::Ham,
            Some(_) => Prediction::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Prediction::Spam => "spam",
            Prediction::Ham => "ham",
            Prediction::None => "none",
            Prediction::Other => "other",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The cohort label a sidecar gives a request: a configured cohort, or
/// `unknown` / `none` for a header with another value / no header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CohortLabel {
    Known(usize),
    Unknown,
    None,
}

impl CohortLabel {
    fn index(self, cohorts: usize) -> usize {
        match self {
            CohortLabel::Known(i) => i.min(cohorts),
            CohortLabel::Unknown => cohorts,
            CohortLabel::None => cohorts + 1,
        }
    }
}

/// One series of the filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    GatewayRequests {
        cohort: usize,
        class: ResponseClass,
    },
    GatewayDuration {
        cohort: usize,
    },
    GatewayUsers {
        cohort: usize,
        returning: bool,
    },
    GatewayOverrides {
        accepted: bool,
    },
    SidecarRequests {
        cohort: CohortLabel,
        class: ResponseClass,
        prediction: Prediction,
        mirrored: bool,
    },
    SidecarDuration {
        mirrored: bool,
    },
}

/// Whether a metric is a counter or a histogram (the proxy-wasm types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Histogram,
}

/// The series one configured filter can emit: names them and numbers them
/// densely so the host side can cache one metric id per slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricSet {
    cohorts: Vec<String>,
    version: String,
}

const CLASSES: usize = ResponseClass::ALL.len();
const PREDICTIONS: usize = Prediction::ALL.len();

impl MetricSet {
    /// `version` is only used by the sidecar series.
    pub fn new(cohorts: Vec<String>, version: &str) -> MetricSet {
        MetricSet {
            cohorts,
            version: sanitize_label(version),
        }
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    fn n(&self) -> usize {
        self.cohorts.len()
    }

    // Slot layout: gateway requests, durations, users, overrides, then the
    // sidecar requests and durations. Each region is a dense row-major array.
    fn regions(&self) -> [usize; 6] {
        let n = self.n();
        [
            n * CLASSES,
            n,
            n * 2,
            2,
            (n + 2) * CLASSES * PREDICTIONS * 2,
            2,
        ]
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.regions().iter().sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The dense index of `metric`, in `0..len()`.
    pub fn slot(&self, metric: Metric) -> usize {
        let n = self.n();
        let r = self.regions();
        let base = |k: usize| r[..k].iter().sum::<usize>();
        match metric {
            Metric::GatewayRequests { cohort, class } => {
                base(0) + cohort.min(n.saturating_sub(1)) * CLASSES + class.index()
            }
            Metric::GatewayDuration { cohort } => base(1) + cohort.min(n.saturating_sub(1)),
            Metric::GatewayUsers { cohort, returning } => {
                base(2) + cohort.min(n.saturating_sub(1)) * 2 + usize::from(returning)
            }
            Metric::GatewayOverrides { accepted } => base(3) + usize::from(accepted),
            Metric::SidecarRequests {
                cohort,
                class,
                prediction,
                mirrored,
            } => {
                base(4)
                    + ((cohort.index(n) * CLASSES + class.index()) * PREDICTIONS
                        + prediction.index())
                        * 2
                    + usize::from(mirrored)
            }
            Metric::SidecarDuration { mirrored } => base(5) + usize::from(mirrored),
        }
    }

    /// The metric at `slot`: the inverse of [`MetricSet::slot`].
    pub fn metric_at(&self, slot: usize) -> Option<Metric> {
        let n = self.n();
        let mut rest = slot;
        let regions = self.regions();
        let mut region = 0;
        while region < regions.len() && rest >= regions[region] {
            rest -= regions[region];
            region += 1;
        }
        let class = |i: usize| ResponseClass::ALL.get(i).copied();
        let cohort_label = |i: usize| match i {
            i if i < n => CohortLabel::Known(i),
            i if i == n => CohortLabel::Unknown,
            _ => CohortLabel::None,
        };
        Some(match region {
            0 => Metric::GatewayRequests {
                cohort: rest / CLASSES,
                class: class(rest % CLASSES)?,
            },
            1 => Metric::GatewayDuration { cohort: rest },
            2 => Metric::GatewayUsers {
                cohort: rest / 2,
                returning: rest % 2 == 1,
            },
            3 => Metric::GatewayOverrides {
                accepted: rest == 1,
            },
            4 => {
                let mirrored = rest % 2 == 1;
                let rest = rest / 2;
                let prediction = Prediction::ALL.get(rest % PREDICTIONS).copied()?;
                let rest = rest / PREDICTIONS;
                Metric::SidecarRequests {
                    cohort: cohort_label(rest / CLASSES),
                    class: class(rest % CLASSES)?,
                    prediction,
                    mirrored,
                }
            }
            5 => Metric::SidecarDuration {
                mirrored: rest == 1,
            },
            _ => return None,
        })
    }

    pub fn kind(metric: Metric) -> Kind {
        match metric {
            Metric::GatewayDuration { .. } | Metric::SidecarDuration { .. } => Kind::Histogram,
            _ => Kind::Counter,
        }
    }

    fn cohort_name(&self, i: usize) -> &str {
        self.cohorts.get(i).map_or("unknown", String::as_str)
    }

    /// The tag-encoded stat name of `metric`.
    pub fn name(&self, metric: Metric) -> String {
        let bool_str = |b: bool| if b { "true" } else { "false" };
        match metric {
            Metric::GatewayRequests { cohort, class } => tagged(
                &[
                    ("cohort", self.cohort_name(cohort)),
                    ("response_class", class.as_str()),
                ],
                GATEWAY_REQUESTS,
            ),
            Metric::GatewayDuration { cohort } => {
                tagged(&[("cohort", self.cohort_name(cohort))], GATEWAY_DURATION)
            }
            Metric::GatewayUsers { cohort, returning } => tagged(
                &[
                    ("cohort", self.cohort_name(cohort)),
                    ("user", if returning { "returning" } else { "new" }),
                ],
                GATEWAY_USERS,
            ),
            Metric::GatewayOverrides { accepted } => tagged(
                &[("outcome", if accepted { "accepted" } else { "rejected" })],
                GATEWAY_OVERRIDES,
            ),
            Metric::SidecarRequests {
                cohort,
                class,
                prediction,
                mirrored,
            } => {
                let cohort = match cohort {
                    CohortLabel::Known(i) => self.cohort_name(i),
                    CohortLabel::Unknown => "unknown",
                    CohortLabel::None => "none",
                };
                tagged(
                    &[
                        ("version", &self.version),
                        ("cohort", cohort),
                        ("response_class", class.as_str()),
                        ("prediction", prediction.as_str()),
                        ("mirrored", bool_str(mirrored)),
                    ],
                    SIDECAR_REQUESTS,
                )
            }
            Metric::SidecarDuration { mirrored } => tagged(
                &[("version", &self.version), ("mirrored", bool_str(mirrored))],
                SIDECAR_DURATION,
            ),
        }
    }
}

/// `a=.=1;.;b=.=2;.;name`: Istio's stat tag encoding.
pub fn tagged(tags: &[(&str, &str)], name: &str) -> String {
    let mut out = String::with_capacity(64);
    for (key, value) in tags {
        out.push_str(key);
        out.push_str("=.=");
        out.push_str(value);
        out.push_str(";.;");
    }
    out.push_str(name);
    out
}

/// A label value safe inside a tag-encoded stat name: `[A-Za-z0-9._-]`, at most
/// 63 bytes (a Kubernetes label value), anything else replaced by `_`.
pub fn sanitize_label(value: &str) -> String {
    if is_label_value(value) {
        return value.to_string();
    }
    if value.is_empty() {
        return UNKNOWN_VERSION.to_string();
    }
    value
        .chars()
        .take(63)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
