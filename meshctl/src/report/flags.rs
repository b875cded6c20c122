//! Command-line values of the report (and of the rollout, which takes the
//! same thresholds): each parser names what it expects, so clap's usage
//! error says exactly what was wrong.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use super::ReportError;
use super::dataset::MetricNames;
use super::model::{Gate, Role, Settings};
use super::prom::Prometheus;

/// Where the experiment's metrics are.
#[derive(Debug, Clone, clap::Args)]
pub struct PrometheusArgs {
    /// Prometheus base URL (a cluster's through `kubectl port-forward`)
    #[arg(long, default_value = "http://127.0.0.1:9090", env = "MESHCTL_PROMETHEUS", value_parser = parse_url)]
    pub prometheus: String,
    /// Prefix before the filter's metric names, if the proxy adds one (e.g. `envoy_`)
    #[arg(long, default_value = "", value_parser = parse_prefix)]
    pub metric_prefix: String,
    /// HTTP timeout per Prometheus query, in seconds
    #[arg(long, default_value_t = 10)]
    pub timeout: u64,
}

impl PrometheusArgs {
    pub fn client(&self) -> Result<Prometheus, ReportError> {
        Prometheus::new(&self.prometheus, Duration::from_secs(self.timeout))
    }

    pub fn names(&self) -> MetricNames {
        MetricNames {
            prefix: self.metric_prefix.clone(),
        }
    }
}

/// What decides a check: the confidence sequences' level and tuning, the
/// minimum samples, the tolerances. Shared by `report` and `rollout`.
#[derive(Debug, Clone, clap::Args)]
pub struct DecisionArgs {
    /// Role of a version, VERSION=stable|canary|shadow; repeat to add or override
    /// (chart defaults: v1=stable, v2=canary, v3=shadow)
    #[arg(long = "role", value_parser = parse_role)]
    pub roles: Vec<(String, Role)>,
    /// Confidence of the confidence sequences, over every look together:
    /// false roll-backs plus false promotions stay within 1 - confidence
    #[arg(long, default_value_t = 0.95, value_parser = parse_open_unit)]
    pub confidence: f64,
    /// Effective requests per arm at which the confidence sequences are
    /// narrowest (sets the normal mixture's rho)
    #[arg(long, default_value_t = 1000.0, value_parser = parse_positive)]
    pub sequence_tuning: f64,
    /// Fewer requests than this in either arm of a check means "insufficient
    /// data" (a clear roll-back is taken earlier)
    #[arg(long, default_value_t = 100)]
    pub min_requests: u64,
    /// Fewer new users than this keeps the sample ratio check undecided
    #[arg(long, default_value_t = 100)]
    pub min_users: u64,
    /// Tolerated increase of the error rate over stable (0.02 = 2 percentage
    /// points): promotion needs the error rate shown to be below stable's + this
    #[arg(long, default_value_t = 0.02, value_parser = parse_unit)]
    pub max_error_increase: f64,
    /// Tolerated shift of the spam ratio either way before holding for review
    #[arg(long, default_value_t = 0.05, value_parser = parse_unit)]
    pub max_spam_shift: f64,
    /// A worse latency tail rolls back only when the p95 grows by more than
    /// this many milliseconds
    #[arg(long, default_value_t = 10.0, value_parser = parse_non_negative)]
    pub max_p95_increase_ms: f64,
    /// Assumed correlation between the requests of one user (0 = independent,
    /// 1 = each user counts once); sets the design effect
    #[arg(long, default_value_t = 0.05, value_parser = parse_unit)]
    pub icc: f64,
    /// A sample ratio mismatch with a chi-square p-value below this holds
    #[arg(long, default_value_t = 0.001, value_parser = parse_open_unit)]
    pub srm_p: f64,
    /// Latency thresholds in ms for the "share under" columns, comma separated
    #[arg(long, value_delimiter = ',', default_value = "5,25,100", value_parser = parse_threshold)]
    pub thresholds_ms: Vec<f64>,
}

impl DecisionArgs {
    pub fn settings(&self, gate: Gate, canary_weight: Option<f64>) -> Settings {
        Settings {
            roles: roles(&self.roles),
            confidence: self.confidence,
            sequence_tuning: self.sequence_tuning,
            min_requests: self.min_requests as f64,
            min_users: self.min_users as f64,
            max_error_increase: self.max_error_increase,
            max_spam_shift: self.max_spam_shift,
            max_p95_increase_ms: self.max_p95_increase_ms,
            icc: self.icc,
            canary_weight,
            srm_p: self.srm_p,
            thresholds_ms: self.thresholds_ms.clone(),
            gate,
        }
    }
}

/// The chart's default roles, then the user's overrides.
fn roles(overrides: &[(String, Role)]) -> BTreeMap<String, Role> {
    let mut roles = Role::chart_defaults();
    roles.extend(overrides.iter().cloned());
    roles
}

/// Unix seconds, or an RFC 3339 timestamp (what a pipeline logs when a
/// rollout stage started or ended).
pub fn parse_time(text: &str) -> Result<f64, String> {
    if let Ok(seconds) = text.trim().parse::<f64>() {
        return if seconds.is_finite() && seconds >= 0.0 {
            Ok(seconds)
        } else {
            Err(format!("{text:?} is not a time"))
        };
    }
    humantime::parse_rfc3339_weak(text.trim())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs_f64())
        .ok_or_else(|| {
            format!(
                "{text:?} is neither Unix seconds nor an RFC 3339 time like 2026-11-26T07:00:00Z"
            )
        })
}

/// Plain HTTP only: a cluster's Prometheus is reached through `kubectl
/// port-forward`, which speaks HTTP, or in the cluster (the gate).
pub fn parse_url(text: &str) -> Result<String, String> {
    if text.starts_with("http://") {
        Ok(text.to_string())
    } else if text.starts_with("https://") {
        Err(format!(
            "{text:?}: https is not supported; reach Prometheus over http, e.g. through kubectl port-forward"
        ))
    } else {
        Err(format!("{text:?} is not an http:// URL"))
    }
}

pub fn parse_role(text: &str) -> Result<(String, Role), String> {
    let (version, role) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not VERSION=ROLE (e.g. v2=canary)"))?;
    let role = <Role as clap::ValueEnum>::from_str(role, true)
        .map_err(|_| format!("role {role:?} is not one of stable, canary, shadow"))?;
    if version.is_empty() {
        return Err(format!("{text:?} has no version before '='"));
    }
    Ok((version.to_string(), role))
}

pub fn parse_prefix(text: &str) -> Result<String, String> {
    let valid = text.chars().enumerate().all(|(i, c)| {
        c == '_' || c == ':' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())
    });
    if valid {
        Ok(text.to_string())
    } else {
        Err(format!("{text:?} is not a Prometheus metric name prefix"))
    }
}

pub fn parse_number(text: &str) -> Result<f64, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| format!("{text:?} is not a number"))
}

pub fn parse_open_unit(text: &str) -> Result<f64, String> {
    let v = parse_number(text)?;
    if v > 0.0 && v < 1.0 {
        Ok(v)
    } else {
        Err(format!("{v} must lie strictly between 0 and 1"))
    }
}

pub fn parse_unit(text: &str) -> Result<f64, String> {
    let v = parse_number(text)?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} must lie between 0 and 1"))
    }
}

pub fn parse_positive(text: &str) -> Result<f64, String> {
    let v = parse_number(text)?;
    if v > 0.0 {
        Ok(v)
    } else {
        Err(format!("{v} must be positive"))
    }
}

/// A weight in percent, as the chart's `istio.trafficSplit` takes it.
pub fn parse_percent(text: &str) -> Result<f64, String> {
    let v = parse_number(text)?;
    if (0.0..=100.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not a percentage between 0 and 100"))
    }
}

pub fn parse_non_negative(text: &str) -> Result<f64, String> {
    let v = parse_number(text)?;
    if v >= 0.0 {
        Ok(v)
    } else {
        Err(format!("{v} must not be negative"))
    }
}

pub fn parse_threshold(text: &str) -> Result<f64, String> {
    let v = parse_number(text)?;
    if v > 0.0 {
        Ok(v)
    } else {
        Err(format!("threshold {v} ms must be positive"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_options_are_range_checked() {
        assert!(parse_open_unit("1").is_err());
        assert!(parse_open_unit("0.99").is_ok());
        assert!(parse_unit("1.5").is_err());
        assert!(parse_positive("0").is_err());
        assert!(parse_positive("1000").is_ok());
        assert!(parse_percent("100.5").is_err());
        assert!(parse_percent("12.5").is_ok());
        assert!(parse_threshold("0").is_err());
        assert!(parse_non_negative("-1").is_err());
        assert!(parse_non_negative("0").is_ok());
        assert!(parse_number("NaN").is_err());
        assert!(parse_url("https://prom").is_err());
        // date -u -d 2026-11-26T07:00:00Z +%s
        assert_eq!(parse_time("2026-11-26T07:00:00Z"), Ok(1_795_676_400.0));
        assert_eq!(parse_time("1795676400.5"), Ok(1_795_676_400.5));
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("-5").is_err());
        assert!(parse_url("http://127.0.0.1:9090").is_ok());
        assert!(parse_prefix("envoy_").is_ok());
        assert!(parse_prefix("9x").is_err());
        assert!(parse_prefix("a|b").is_err());
    }

    #[test]
    fn roles_default_to_the_chart_and_can_be_overridden() {
        assert_eq!(
            parse_role("v4=Canary"),
            Ok(("v4".to_string(), Role::Canary))
        );
        assert!(parse_role("v4").is_err());
        assert!(parse_role("=canary").is_err());
        assert!(parse_role("v4=primary").is_err());
        let r = roles(&[
            ("v2".to_string(), Role::Shadow),
            ("v4".to_string(), Role::Canary),
        ]);
        assert_eq!(r["v1"], Role::Stable);
        assert_eq!(r["v2"], Role::Shadow);
        assert_eq!(r["v4"], Role::Canary);
    }
}
