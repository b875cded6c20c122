//! The canary judged over every interval so far: the one path from an
//! interval's metrics to a verdict that `meshctl rollout` (through its
//! engine) and `meshctl gate` (for Flagger and Argo Rollouts) both take.
//! Each interval is kept as a stratum, so the checks judge the whole
//! analysis with statistics that stay valid at every look (see
//! `report::checks`).

use std::collections::BTreeSet;

use crate::report::checks;
use crate::report::dataset::{Dataset, Evidence};
use crate::report::model::Source;
use crate::report::{Comparison, Role, Settings, Verdict};

use super::engine::ArmCount;

pub struct Analysis {
    settings: Settings,
    candidates: BTreeSet<String>,
    baselines: BTreeSet<String>,
    strata: Vec<Evidence>,
}

impl Analysis {
    pub fn new(settings: Settings) -> Analysis {
        Analysis {
            candidates: settings.versions(Role::Canary),
            baselines: settings.versions(Role::Stable),
            settings,
            strata: Vec::new(),
        }
    }

    /// Adds the interval whose metrics `data` holds (the report's dataset
    /// over it) and judges every interval so far. `canary_share` is the
    /// canary's configured share of new users during the interval (0..1);
    /// `None` leaves the interval out of the sample ratio check (its new
    /// users came under two weights, or the weight is not known).
    ///
    /// The canary is read from the gateway's per-cohort view: what users
    /// experienced, faults injected by the routes included.
    pub fn judge(&mut self, data: &Dataset, canary_share: Option<f64>) -> Comparison {
        let mut interval = Evidence::of(
            data,
            Role::Canary,
            &self.candidates,
            &self.baselines,
            Some(Source::Gateway),
        );
        interval.canary_share = canary_share;
        self.strata.push(interval);
        self.comparison()
    }

    /// The canary comparison over every interval so far.
    pub fn comparison(&self) -> Comparison {
        checks::comparison(
            &self.settings,
            Role::Canary,
            self.candidates.iter().cloned().collect(),
            self.baselines.iter().cloned().collect(),
            true,
            &self.strata,
        )
    }

    /// Intervals judged so far.
    pub fn intervals(&self) -> usize {
        self.strata.len()
    }

    /// Requests and new users of the canary (`candidate` true) or stable
    /// over the intervals from `first` on.
    pub fn count(&self, first: usize, candidate: bool) -> ArmCount {
        self.strata
            .get(first..)
            .unwrap_or_default()
            .iter()
            .fold(ArmCount::default(), |total, e| {
                let arm = if candidate { &e.candidate } else { &e.baseline };
                ArmCount {
                    requests: total.requests + arm.requests,
                    new_users: total.new_users + arm.new_users.unwrap_or(0.0),
                }
            })
    }
}

/// "metric: detail; ..." of the checks whose outcome is `outcome`: why a
/// comparison rolls back, holds or lacks data.
pub fn reasons(comparison: &Comparison, outcome: Verdict) -> String {
    comparison
        .checks
        .iter()
        .filter(|c| c.outcome == outcome)
        .map(|c| format!("{}: {}", c.metric, c.detail))
        .collect::<Vec<_>>()
        .join("; ")
}
