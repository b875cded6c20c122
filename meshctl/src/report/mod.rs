//! `meshctl report`: experiment evidence from Prometheus. Traffic, latency
//! and quality per version and cohort over a window, the canary (and shadow)
//! compared with stable, and a verdict whose exit code a pipeline can act on.
//! See `README.md` beside this file for the statistics and exit codes.

mod analysis;
mod html;
mod prom;
mod quantile;
mod render;
mod stats;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use analysis::{Dataset, Gate, MetricNames, Role, Settings, Window};

/// Failures of the report itself (never a verdict).
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach Prometheus at {url}")]
    Connect {
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },
    #[error("Prometheus rejected {query:?}: {kind}: {message}")]
    Query {
        query: String,
        kind: String,
        message: String,
    },
    #[error("unexpected answer to {query:?}: {detail}")]
    BadResponse { query: String, detail: String },
    #[error("cannot encode the report as JSON")]
    Encode(#[source] serde_json::Error),
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Markdown,
}

/// Compare the versions of an experiment on Prometheus data and recommend
/// promote / hold / roll back (exit 0 / 3 / 4; 5 = insufficient data).
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit codes: 0 promote, 3 hold, 4 roll back, 5 insufficient data; \
                  1 the report failed (e.g. Prometheus unreachable), 2 usage error."
)]
pub struct ReportArgs {
    /// Prometheus base URL (a cluster's through `kubectl port-forward`)
    #[arg(long, default_value = "http://127.0.0.1:9090", env = "MESHCTL_PROMETHEUS", value_parser = parse_url)]
    pub prometheus: String,
    /// How far back from --end to look (Prometheus duration: 30s, 15m, 1h30m, 2d)
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub window: Duration,
    /// End of the window: RFC 3339 (2026-11-26T07:00:00Z) or Unix seconds [default: now]
    #[arg(long, value_parser = parse_time)]
    pub end: Option<f64>,
    /// Role of a version, VERSION=stable|canary|shadow; repeat to add or override
    /// (chart defaults: v1=stable, v2=canary, v3=shadow)
    #[arg(long = "role", value_parser = parse_role)]
    pub roles: Vec<(String, Role)>,
    /// Prefix before the filter's metric names, if the proxy adds one (e.g. `envoy_`)
    #[arg(long, default_value = "", value_parser = parse_prefix)]
    pub metric_prefix: String,
    /// Output on stdout
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Also write a self-contained HTML page with SVG histograms to FILE
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Which comparisons decide the verdict and exit code
    #[arg(long, value_enum, default_value_t = Gate::Canary)]
    pub gate: Gate,
    /// Confidence level of the intervals; 1 - confidence is the tests' alpha
    #[arg(long, default_value_t = 0.95, value_parser = parse_open_unit)]
    pub confidence: f64,
    /// Fewer requests than this in either arm of a check means "insufficient data"
    #[arg(long, default_value_t = 100)]
    pub min_requests: u64,
    /// Tolerated increase of the error rate over stable (0.02 = 2 percentage points)
    #[arg(long, default_value_t = 0.02, value_parser = parse_unit)]
    pub max_error_increase: f64,
    /// Tolerated shift of the spam ratio either way before holding for review
    #[arg(long, default_value_t = 0.05, value_parser = parse_unit)]
    pub max_spam_shift: f64,
    /// Roll back when P(candidate slower) reaches this (Vargha-Delaney A: 0.56 small, 0.64 medium, 0.71 large)
    #[arg(long, default_value_t = 0.64, value_parser = parse_effect)]
    pub max_latency_effect: f64,
    /// ... and only when the p95 grows by more than this many milliseconds
    #[arg(long, default_value_t = 10.0, value_parser = parse_non_negative)]
    pub max_p95_increase_ms: f64,
    /// Latency thresholds in ms for the "share under" columns, comma separated
    #[arg(long, value_delimiter = ',', default_value = "5,25,100", value_parser = parse_threshold)]
    pub thresholds_ms: Vec<f64>,
    /// HTTP timeout per Prometheus query, in seconds
    #[arg(long, default_value_t = 10)]
    pub timeout: u64,
}

/// A Prometheus duration: one or more `<number><unit>` with units
/// y, w, d, h, m, s, ms.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("{text:?} is not a duration like 30s, 15m, 1h30m or 2d");
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(invalid)?;
        if digits == 0 {
            return Err(invalid());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let millis: u64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            "y" => 31_536_000_000,
            _ => return Err(invalid()),
        };
        rest = &rest[unit_len..];
        let part = number.checked_mul(millis).ok_or_else(invalid)?;
        total += Duration::from_millis(part);
    }
    if total.is_zero() {
        return Err(format!("{text:?}: the window must be longer than zero"));
    }
    Ok(total)
}

/// Unix seconds, or an RFC 3339 timestamp (what a pipeline logs when a
/// rollout stage started or ended).
fn parse_time(text: &str) -> Result<f64, String> {
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

/// Plain HTTP only: the client is built without TLS, and a cluster's
/// Prometheus is reached through `kubectl port-forward`, which speaks HTTP.
fn parse_url(text: &str) -> Result<String, String> {
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

fn parse_role(text: &str) -> Result<(String, Role), String> {
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

fn parse_prefix(text: &str) -> Result<String, String> {
    let valid = text.chars().enumerate().all(|(i, c)| {
        c == '_' || c == ':' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())
    });
    if valid {
        Ok(text.to_string())
    } else {
        Err(format!("{text:?} is not a Prometheus metric name prefix"))
    }
}

fn parse_number(text: &str) -> Result<f64, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| format!("{text:?} is not a number"))
}

fn parse_open_unit(text: &str) -> Result<f64, String> {
    let v = parse_number(text)?;
    if v > 0.0 && v < 1.0 {
        Ok(v)
    } else {
        Err(format!("{v} must lie strictly between 0 and 1"))
    }
}

fn parse_unit(text: &str) -> Result<f64, String> {
    let v = parse_number(text)?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} must lie between 0 and 1"))
    }
}

fn parse_effect(text: &str) -> Result<f64, String> {
    let v = parse_number(text)?;
    if v > 0.5 && v <= 1.0 {
        Ok(v)
    } else {
        Err(format!(
            "{v} must lie in (0.5, 1]: 0.5 means no difference at all"
        ))
    }
}

fn parse_non_negative(text: &str) -> Result<f64, String> {
    let v = parse_number(text)?;
    if v >= 0.0 {
        Ok(v)
    } else {
        Err(format!("{v} must not be negative"))
    }
}

fn parse_threshold(text: &str) -> Result<f64, String> {
    let v = parse_number(text)?;
    if v > 0.0 {
        Ok(v)
    } else {
        Err(format!("threshold {v} ms must be positive"))
    }
}

/// The chart's default roles, then the user's overrides.
fn roles(overrides: &[(String, Role)]) -> BTreeMap<String, Role> {
    let mut roles = BTreeMap::from([
        ("v1".to_string(), Role::Stable),
        ("v2".to_string(), Role::Canary),
        ("v3".to_string(), Role::Shadow),
    ]);
    roles.extend(overrides.iter().cloned());
    roles
}

/// Queries Prometheus, prints the report, writes the HTML page if asked,
/// and returns the verdict's exit code.
pub fn run(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let client = prom::Prometheus::new(&args.prometheus, Duration::from_secs(args.timeout))?;
    let end = match args.end {
        Some(end) => end,
        None => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default(),
    };
    let seconds = args.window.as_secs_f64();
    let window = Window {
        start: end - seconds,
        end,
        seconds,
    };
    let names = MetricNames {
        prefix: args.metric_prefix.clone(),
    };
    let selector = format!("{{__name__=~\"{}\"}}", prom::name_regex(&names.all()));
    let before = client.instant(&selector, window.start)?;
    let during = client.samples(
        &format!("{selector}[{}ms]", args.window.as_millis()),
        window.end,
    )?;
    if during.is_empty() {
        eprintln!(
            "meshctl report: no experiment series in {} for this window (is the mesh scraped? is --metric-prefix right?)",
            args.prometheus
        );
    }
    let data = Dataset::new(names, prom::increases(before, during));
    let settings = Settings {
        roles: roles(&args.roles),
        confidence: args.confidence,
        min_requests: args.min_requests as f64,
        max_error_increase: args.max_error_increase,
        max_spam_shift: args.max_spam_shift,
        max_latency_effect: args.max_latency_effect,
        max_p95_increase_ms: args.max_p95_increase_ms,
        thresholds_ms: args.thresholds_ms.clone(),
        gate: args.gate,
    };
    let report = analysis::analyse(&args.prometheus, window, settings, &data);
    let text = match args.format {
        Format::Table => render::table(&report),
        Format::Markdown => render::markdown(&report),
        Format::Json => render::json(&report)?,
    };
    print!("{text}");
    if let Some(path) = &args.html {
        std::fs::write(path, html::page(&report)).map_err(|source| ReportError::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok(ExitCode::from(report.exit_code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_follow_prometheus_syntax() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        for bad in ["", "h", "10", "5x", "1.5h", "0s", "-1m"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
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

    #[test]
    fn numeric_options_are_range_checked() {
        assert!(parse_open_unit("1").is_err());
        assert!(parse_open_unit("0.99").is_ok());
        assert!(parse_unit("1.5").is_err());
        assert!(parse_effect("0.5").is_err());
        assert!(parse_effect("0.71").is_ok());
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
    fn a_non_http_url_is_a_usage_error() {
        assert!(matches!(
            prom::Prometheus::new("localhost:9090", Duration::from_secs(1)),
            Err(ReportError::Usage(_))
        ));
    }
}
