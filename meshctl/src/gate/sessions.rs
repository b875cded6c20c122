//! The gate's analyses, one per canary revision (a session), each judged
//! interval by interval through `rollout::analysis::Analysis`, the path
//! `meshctl rollout` takes: a session's first call starts its analysis,
//! every later call at least `min_interval` after the last one adds the
//! interval in between and judges them all.

use std::collections::BTreeMap;

use crate::report::model::Window;
use crate::report::{Comparison, Settings, Verdict};
use crate::rollout::analysis::Analysis;
use crate::rollout::engine::ArmCount;
use crate::rollout::evidence::EvidenceReader;

/// What the gate knows that no request says: the statistics' settings and
/// the canary's configured share of new users.
#[derive(Debug, Clone)]
pub struct Policy {
    pub settings: Settings,
    /// The chart's `istio.trafficSplit.canary` as a fraction; `None`: no
    /// sample ratio check.
    pub canary_share: Option<f64>,
    /// Seconds: calls closer to a session's last interval than this get its
    /// last judgement (Flagger calls several hooks per iteration).
    pub min_interval: f64,
    /// Sessions kept; the least recently used goes first.
    pub max_sessions: usize,
    /// Seconds a session may go unused before it is forgotten.
    pub ttl: f64,
}

struct Session {
    analysis: Analysis,
    started: f64,
    /// End of the last interval judged (the start, before the first).
    last: f64,
    used: f64,
    comparison: Comparison,
}

/// A session's judgement, as one call sees it.
#[derive(Debug, Clone)]
pub struct Judgement {
    pub comparison: Comparison,
    /// Intervals judged, and seconds since the session started.
    pub intervals: usize,
    pub seconds: f64,
    pub canary: ArmCount,
    pub stable: ArmCount,
}

pub struct Sessions {
    policy: Policy,
    sessions: BTreeMap<String, Session>,
}

impl Sessions {
    pub fn new(policy: Policy) -> Sessions {
        Sessions {
            policy,
            sessions: BTreeMap::new(),
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Judges session `key` at `now`: a new session starts its analysis
    /// (no interval yet: insufficient data); a known one adds the interval
    /// since its last judgement when at least `min_interval` has passed.
    pub fn judge(
        &mut self,
        key: &str,
        now: f64,
        reader: &mut dyn EvidenceReader,
    ) -> anyhow::Result<Judgement> {
        self.forget_stale(now);
        if !self.sessions.contains_key(key) {
            if self.sessions.len() >= self.policy.max_sessions.max(1) {
                let oldest = self
                    .sessions
                    .iter()
                    .min_by(|a, b| a.1.used.total_cmp(&b.1.used))
                    .map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    self.sessions.remove(&oldest);
                }
            }
            let analysis = Analysis::new(self.policy.settings.clone());
            let comparison = analysis.comparison();
            self.sessions.insert(
                key.to_string(),
                Session {
                    analysis,
                    started: now,
                    last: now,
                    used: now,
                    comparison,
                },
            );
        }
        let min_interval = self.policy.min_interval;
        let share = self.policy.canary_share;
        let Some(session) = self.sessions.get_mut(key) else {
            anyhow::bail!("session {key} vanished");
        };
        session.used = now;
        if now - session.last >= min_interval {
            let window = Window {
                start: session.last,
                end: now,
                seconds: now - session.last,
            };
            let data = reader.read(&window)?;
            session.comparison = session.analysis.judge(&data, share);
            session.last = now;
        }
        Ok(Judgement {
            comparison: session.comparison.clone(),
            intervals: session.analysis.intervals(),
            seconds: now - session.started,
            canary: session.analysis.count(0, true),
            stable: session.analysis.count(0, false),
        })
    }

    /// The cohort assignment over the `window` seconds before `now`, before
    /// any analysis: the sample ratio and whether the gateway assigns
    /// cohorts at all. No session is touched.
    pub fn preflight(
        &self,
        now: f64,
        window: f64,
        reader: &mut dyn EvidenceReader,
    ) -> anyhow::Result<Judgement> {
        let data = reader.read(&Window {
            start: now - window,
            end: now,
            seconds: window,
        })?;
        let mut analysis = Analysis::new(self.policy.settings.clone());
        let comparison = analysis.judge(&data, self.policy.canary_share);
        Ok(Judgement {
            comparison,
            intervals: 1,
            seconds: window,
            canary: analysis.count(0, true),
            stable: analysis.count(0, false),
        })
    }

    fn forget_stale(&mut self, now: f64) {
        let ttl = self.policy.ttl;
        self.sessions.retain(|_, s| now - s.used <= ttl);
    }

    /// Sessions held now.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

/// Whether a preflight may start an analysis: no when the gateway assigned
/// no cohort in the window (the filter is off or failing open: users would
/// not be sticky), or when new users do not split as configured.
pub fn preflight_passes(judgement: &Judgement) -> Result<(), String> {
    let (canary, stable) = (judgement.canary.requests, judgement.stable.requests);
    if canary + stable <= 0.0 {
        return Err(
            "the gateway assigned no cohort in the preflight window: no sms_cohort_requests_total \
             increase (is the cohort filter running on the ingress gateway?)"
                .into(),
        );
    }
    let mismatch = judgement.comparison.checks.iter().find(|c| {
        c.metric == crate::report::model::Metric::SampleRatio && c.outcome == Verdict::Hold
    });
    match mismatch {
        Some(check) => Err(format!("sample ratio: {}", check.detail)),
        None => Ok(()),
    }
}
