//! The report's schema: what the JSON, the tables and the HTML page show.
//! Plain data; the numbers come from `traffic` and `checks`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use super::stats::MannWhitney;
use super::stats::quantile::ShareUnder;
use super::stats::sequential::RateComparison;
use super::stats::srm::SampleRatio;

/// What a version does in the experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Stable,
    Canary,
    Shadow,
}

impl Role {
    /// The part each of the chart's versions plays, as its `_helpers.tpl`
    /// (`sms-checker.role`) labels them; tests/tests/chart_values.rs checks the two
    /// agree.
    pub const CHART_DEFAULTS: [(&'static str, Role); 3] = [
        ("v1", Role::Stable),
        ("v2", Role::Canary),
        ("v3", Role::Shadow),
    ];

    /// [`Role::CHART_DEFAULTS`] by version.
    pub fn chart_defaults() -> BTreeMap<String, Role> {
        Role::CHART_DEFAULTS
            .iter()
            .map(|&(version, role)| (version.to_string(), role))
            .collect()
    }

    /// The cohort that routes to this role (cohorts are named after roles).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Stable => "stable",
            Role::Canary => "canary",
            Role::Shadow => "shadow",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which comparisons decide the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Gate {
    Canary,
    Shadow,
    Both,
}

/// Thresholds and choices that shape the verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub roles: BTreeMap<String, Role>,
    /// 1 - alpha of the confidence sequences: over every look together.
    pub confidence: f64,
    /// Effective requests at which the confidence sequences are narrowest.
    pub sequence_tuning: f64,
    pub min_requests: f64,
    pub min_users: f64,
    pub max_error_increase: f64,
    pub max_spam_shift: f64,
    pub max_p95_increase_ms: f64,
    /// Assumed correlation of one user's requests (the design effect).
    pub icc: f64,
    /// The canary's configured percent of new users, for the sample ratio
    /// check; `None` skips it.
    pub canary_weight: Option<f64>,
    /// Sample ratio mismatch below this p-value holds.
    pub srm_p: f64,
    pub thresholds_ms: Vec<f64>,
    pub gate: Gate,
}

impl Settings {
    /// The versions that play `role`, in name order.
    pub fn versions(&self, role: Role) -> BTreeSet<String> {
        self.roles
            .iter()
            .filter(|(_, r)| **r == role)
            .map(|(v, _)| v.clone())
            .collect()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Window {
    pub start: f64,
    pub end: f64,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct VersionTraffic {
    pub version: String,
    pub role: Option<Role>,
    /// Every request its sidecar saw (live and mirrored).
    pub sidecar_requests: f64,
    /// Requests its sidecar saw as mirror copies.
    pub mirrored_requests: f64,
    /// Predictions its model-service counted.
    pub predictions: f64,
    /// Share of all live (non-shadow) sidecar requests.
    pub live_share: Option<f64>,
    /// For a shadow: its requests / the live versions' requests.
    pub mirror_coverage: Option<f64>,
    pub errors: f64,
    pub error_rate: Option<f64>,
    pub spam: f64,
    pub ham: f64,
    pub spam_ratio: Option<f64>,
}

/// One version's requests from one cohort, as its sidecar saw them.
#[derive(Debug, Clone, Serialize)]
pub struct VersionCohort {
    pub version: String,
    pub role: Option<Role>,
    pub cohort: String,
    pub requests: f64,
    pub errors: f64,
    pub spam_ratio: Option<f64>,
    /// For a shadow: its requests from this cohort / the live versions'.
    pub mirror_coverage: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CohortTraffic {
    pub cohort: String,
    pub requests: f64,
    pub share: Option<f64>,
    pub errors: f64,
    pub error_rate: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The ingress gateway's view, per cohort: what users experienced.
    Gateway,
    /// The version's sidecar, per version.
    Sidecar,
    /// The model-service's own timer, per version.
    Service,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Gateway => "gateway",
            Source::Sidecar => "sidecar",
            Source::Service => "service",
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BinCount {
    pub lower: f64,
    /// `None` for the `+Inf` bucket.
    pub upper: Option<f64>,
    pub count: f64,
}

/// Latency of one version or cohort, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub subject: String,
    pub source: Source,
    pub role: Option<Role>,
    pub count: f64,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub under: Vec<ShareUnder>,
    pub bins: Vec<BinCount>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    SampleRatio,
    ErrorRate,
    SpamRatio,
    Latency,
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Metric::SampleRatio => "sample ratio",
            Metric::ErrorRate => "error rate",
            Metric::SpamRatio => "spam ratio",
            Metric::Latency => "latency",
        })
    }
}

/// The recommendation, also the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Promote,
    Hold,
    InsufficientData,
    RollBack,
}

impl Verdict {
    /// 0 promote, 3 hold, 4 roll back, 5 insufficient data. 1 and 2 stay
    /// with failures of the tool (runtime errors, usage errors from clap), so
    /// a pipeline never mistakes a crash for a verdict.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Promote => 0,
            Verdict::Hold => 3,
            Verdict::RollBack => 4,
            Verdict::InsufficientData => 5,
        }
    }

    /// Roll back beats everything (a clear failure needs no more data);
    /// missing evidence beats a hold; promote needs every part to agree.
    pub fn combine(verdicts: impl IntoIterator<Item = Verdict>) -> Verdict {
        verdicts
            .into_iter()
            .max()
            .unwrap_or(Verdict::InsufficientData)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Promote => "promote",
            Verdict::Hold => "hold",
            Verdict::InsufficientData => "insufficient data",
            Verdict::RollBack => "roll back",
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencyComparison {
    /// Shown, not decided on: a rank test has no anytime-valid form here.
    pub test: MannWhitney,
    pub candidate_p95: Option<f64>,
    pub baseline_p95: Option<f64>,
    /// The share of requests slower than stable's p95 (rounded up to a
    /// bucket bound both histograms have), candidate against stable.
    pub tail: Option<TailComparison>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TailComparison {
    /// The bound of the latest interval (each interval takes the bound from
    /// stable's data before it, see `checks::tail_strata`).
    pub above_ms: f64,
    pub rates: RateComparison,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub metric: Metric,
    pub source: Source,
    pub outcome: Verdict,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rates: Option<RateComparison>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyComparison>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_ratio: Option<SampleRatio>,
}

impl Check {
    /// A check that has not been decided yet: insufficient data until the
    /// comparison says otherwise.
    pub fn undecided(metric: Metric, source: Source) -> Check {
        Check {
            metric,
            source,
            outcome: Verdict::InsufficientData,
            detail: String::new(),
            rates: None,
            latency: None,
            sample_ratio: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub name: String,
    pub candidate: Role,
    pub candidate_versions: Vec<String>,
    pub baseline_versions: Vec<String>,
    pub gating: bool,
    pub checks: Vec<Check>,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub prometheus: String,
    pub window: Window,
    pub settings: Settings,
    pub versions: Vec<VersionTraffic>,
    pub cohorts: Vec<CohortTraffic>,
    pub version_cohorts: Vec<VersionCohort>,
    pub latency: Vec<Latency>,
    pub comparisons: Vec<Comparison>,
    pub verdict: Verdict,
    pub exit_code: u8,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_combine_by_severity() {
        use Verdict::*;
        assert_eq!(Verdict::combine([Promote, Hold]), Hold);
        assert_eq!(Verdict::combine([Hold, InsufficientData]), InsufficientData);
        assert_eq!(Verdict::combine([InsufficientData, RollBack]), RollBack);
        assert_eq!(Verdict::combine([Promote, Promote]), Promote);
        assert_eq!(Verdict::combine([]), InsufficientData);
    }
}
