//! `meshctl report`: experiment evidence from Prometheus. Traffic, latency
//! and quality per version and cohort over a window, the canary (and shadow)
//! compared with stable, and a verdict whose exit code a pipeline can act on.
//! See `README.md` beside this file for the statistics and exit codes.

mod checks;
mod dataset;
mod flags;
mod format;
mod html;
mod model;
mod prom;
mod render;
mod stats;
#[cfg(test)]
mod testdata;
mod traffic;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dataset::{Dataset, MetricNames};
use flags::{
    parse_duration, parse_effect, parse_non_negative, parse_open_unit, parse_prefix, parse_role,
    parse_threshold, parse_time, parse_unit, parse_url,
};
use model::{Gate, Report, Role, Settings, Verdict, Window};

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

/// Builds the whole report from one window's data: the tables, the
/// comparisons and the verdict of the gated ones.
pub fn analyse(prometheus: &str, window: Window, settings: Settings, data: &Dataset) -> Report {
    let tables = traffic::tables(&settings, data);
    let comparisons = checks::comparisons(&settings, data);
    let verdict = Verdict::combine(comparisons.iter().filter(|c| c.gating).map(|c| c.verdict));
    Report {
        prometheus: prometheus.to_string(),
        window,
        settings,
        versions: tables.versions,
        cohorts: tables.cohorts,
        version_cohorts: tables.version_cohorts,
        latency: tables.latency,
        comparisons,
        verdict,
        exit_code: verdict.exit_code(),
    }
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
    let data = Dataset::fetch(&client, names, &window)?;
    if data.is_empty() {
        eprintln!(
            "meshctl report: no experiment series in {} for this window (is the mesh scraped? is --metric-prefix right?)",
            args.prometheus
        );
    }
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
    let report = analyse(&args.prometheus, window, settings, &data);
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
    use super::testdata::{inc, settings, window};
    use super::*;

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
    fn a_non_http_url_is_a_usage_error() {
        assert!(matches!(
            prom::Prometheus::new("localhost:9090", Duration::from_secs(1)),
            Err(ReportError::Usage(_))
        ));
    }

    // The seed's "Evidence of Success" table, from model_predictions_total
    // only: v1 169, v2 13, v3 183. By hand: live 182, shares 169/182 =
    // 92.86% and 13/182 = 7.14%, mirror coverage 183/182 = 100.55% (the
    // "offset of 1" the seed explains away is visible, not hidden).
    #[test]
    fn the_seeds_service_only_evidence_gets_shares_and_coverage() {
        let p = MetricNames::SERVICE_PREDICTIONS;
        let data = Dataset::new(
            MetricNames {
                prefix: String::new(),
            },
            vec![
                inc(p, &[("version", "v1"), ("result", "ham")], 169.0),
                inc(p, &[("version", "v2"), ("result", "ham")], 13.0),
                inc(p, &[("version", "v3"), ("result", "ham")], 183.0),
            ],
        );
        let report = analyse("http://p", window(), settings(), &data);
        let v = |name: &str| report.versions.iter().find(|t| t.version == name).unwrap();
        assert!((v("v1").live_share.unwrap() - 0.928571).abs() < 1e-6);
        assert!((v("v2").live_share.unwrap() - 0.071429).abs() < 1e-6);
        assert!((v("v3").mirror_coverage.unwrap() - 1.005495).abs() < 1e-6);
        assert_eq!(v("v3").predictions, 183.0);
        assert_eq!(report.verdict, Verdict::InsufficientData);
    }
}
