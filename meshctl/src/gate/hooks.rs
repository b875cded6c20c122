//! What each caller asks and how a verdict answers it.
//!
//! Flagger (`pkg/controller/webhook.go`, v1.41) POSTs a
//! `CanaryWebhookPayload` (`name`, `namespace`, `phase`, `checksum`,
//! `metadata`) and reads any status above 202 as "no": a `confirm-rollout`
//! or `confirm-promotion` hook then waits, a `rollout` hook counts a failed
//! check (the Canary's `threshold` of them rolls back), and a `rollback`
//! hook rolls back on a 2xx. Its HTTP client retries 5xx answers, so a
//! verdict's "no" is a 412, and only a failure of the gate (Prometheus
//! unreachable) is a 503.
//!
//! Argo Rollouts' `web` metric provider (`metricproviders/webmetric`,
//! v1.10) GETs a URL, counts any non-2xx as a measurement error, and
//! evaluates the AnalysisTemplate's `successCondition` and
//! `failureCondition` on the JSON body: the gate answers 200 with the
//! verdict, and the template decides (`result.verdict == "promote"`,
//! `result.verdict == "roll_back"`; anything else is inconclusive).

use serde::{Deserialize, Serialize};

use crate::report::Verdict;
use crate::rollout::analysis::reasons;
use crate::rollout::engine::ArmCount;
use crate::rollout::events::CheckLine;

use super::sessions::Judgement;

/// The questions the gate answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hook {
    /// Flagger, before a new revision gets traffic: may the analysis start?
    ConfirmRollout,
    /// Flagger, every iteration: did this check pass (no roll-back)?
    Rollout,
    /// Flagger, before promoting: is the canary shown good enough?
    ConfirmPromotion,
    /// Flagger, every iteration: roll back now?
    Rollback,
    /// Argo Rollouts' web metric: the verdict, for the template to judge.
    Argo,
}

impl Hook {
    /// The Flagger hook of a path segment (its webhook `type`).
    pub fn flagger(kind: &str) -> Option<Hook> {
        match kind {
            "confirm-rollout" => Some(Hook::ConfirmRollout),
            "rollout" => Some(Hook::Rollout),
            "confirm-promotion" => Some(Hook::ConfirmPromotion),
            "rollback" => Some(Hook::Rollback),
            _ => None,
        }
    }

    /// The hook's "yes" (a 2xx) for a verdict. `ConfirmRollout` is not
    /// answered from a verdict (see `sessions::preflight_passes`).
    pub fn go(self, verdict: Verdict) -> bool {
        match self {
            Hook::Rollout => verdict != Verdict::RollBack,
            Hook::ConfirmPromotion => verdict == Verdict::Promote,
            Hook::Rollback => verdict == Verdict::RollBack,
            Hook::ConfirmRollout | Hook::Argo => true,
        }
    }
}

/// Flagger's webhook payload (`flaggerv1.CanaryWebhookPayload`).
#[derive(Debug, Clone, Deserialize)]
pub struct FlaggerPayload {
    pub name: String,
    pub namespace: String,
    #[serde(default)]
    pub phase: String,
    #[serde(default)]
    pub checksum: String,
}

impl FlaggerPayload {
    /// One analysis per canary revision: Flagger's checksum changes with
    /// the target's spec and tracked configs, so a new revision starts a new
    /// session.
    pub fn session(&self) -> Result<String, String> {
        for (field, value) in [("name", &self.name), ("namespace", &self.namespace)] {
            if value.trim().is_empty() {
                return Err(format!("field `{field}` is empty"));
            }
        }
        Ok(format!(
            "flagger/{}/{}/{}",
            self.namespace, self.name, self.checksum
        ))
    }
}

/// The body of every answer: the verdict and its evidence.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    pub hook: String,
    pub session: String,
    /// promote, hold, insufficient_data or roll_back.
    pub verdict: Verdict,
    /// The hook's answer: true with a 2xx status.
    pub go: bool,
    /// Why, for a person: the details of the checks behind the verdict.
    pub reason: String,
    /// Intervals judged since the session started, and its age in seconds.
    pub intervals: usize,
    pub seconds: f64,
    pub canary: ArmCount,
    pub stable: ArmCount,
    pub checks: Vec<CheckLine>,
    /// `meshctl report`'s exit code for the verdict.
    pub exit_code: u8,
}

impl Answer {
    pub fn new(hook: Hook, session: String, judgement: &Judgement, go: bool) -> Answer {
        let comparison = &judgement.comparison;
        let verdict = comparison.verdict;
        let reason = if judgement.intervals == 0 {
            "the analysis starts now: its first interval is judged at the next call".to_string()
        } else if verdict == Verdict::Promote {
            "every check passed".to_string()
        } else {
            reasons(comparison, verdict)
        };
        Answer {
            hook: serde_json::to_value(hook)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            session,
            verdict,
            go,
            reason,
            intervals: judgement.intervals,
            seconds: judgement.seconds,
            canary: judgement.canary,
            stable: judgement.stable,
            checks: comparison.checks.iter().map(CheckLine::from).collect(),
            exit_code: verdict.exit_code(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Verdict::*;

    // Each hook's yes and no, verdict by verdict: only a roll-back fails a
    // rollout check, only a promotion confirms one, only a roll-back asks
    // Flagger to roll back.
    #[test]
    fn each_hook_answers_the_verdicts_its_own_way() {
        let all = [Promote, Hold, InsufficientData, RollBack];
        let yes = |hook: Hook| {
            all.iter()
                .filter(|v| hook.go(**v))
                .copied()
                .collect::<Vec<_>>()
        };
        assert_eq!(yes(Hook::Rollout), vec![Promote, Hold, InsufficientData]);
        assert_eq!(yes(Hook::ConfirmPromotion), vec![Promote]);
        assert_eq!(yes(Hook::Rollback), vec![RollBack]);
        assert_eq!(yes(Hook::Argo), all.to_vec());
        assert_eq!(
            Hook::flagger("confirm-promotion"),
            Some(Hook::ConfirmPromotion)
        );
        assert_eq!(Hook::flagger("event"), None);
    }

    #[test]
    fn a_flagger_session_is_one_revision_of_one_canary() {
        let payload: FlaggerPayload = serde_json::from_str(
            r#"{"name":"model-service","namespace":"sms","phase":"Progressing","checksum":"7c9d","metadata":{"a":"b"}}"#,
        )
        .unwrap();
        assert_eq!(payload.session().unwrap(), "flagger/sms/model-service/7c9d");
        let nameless: FlaggerPayload =
            serde_json::from_str(r#"{"name":" ","namespace":"sms"}"#).unwrap();
        assert_eq!(nameless.session().unwrap_err(), "field `name` is empty");
        assert!(serde_json::from_str::<FlaggerPayload>(r#"{"namespace":"sms"}"#).is_err());
    }
}
