//! The gate's HTTP surface:
//!
//! | route | caller | 2xx means |
//! | --- | --- | --- |
//! | `POST /flagger/confirm-rollout` | Flagger `confirm-rollout` hook | the cohort assignment is healthy: start |
//! | `POST /flagger/rollout` | Flagger `rollout` hook | no roll-back |
//! | `POST /flagger/confirm-promotion` | Flagger `confirm-promotion` hook | promote |
//! | `POST /flagger/rollback` | Flagger `rollback` hook | roll back now |
//! | `GET /argo/verdict?session=ID` | Argo Rollouts `web` metric | always (the template reads `verdict`) |
//! | `GET /healthz` | kubelet | the gate runs |
//!
//! Every answer is JSON (`hooks::Answer`); a bad request gets a 4xx JSON
//! body naming what is wrong, a failure to read Prometheus a 503.

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use crate::rollout::evidence::EvidenceReader;

use super::hooks::{Answer, FlaggerPayload, Hook};
use super::sessions::{Sessions, preflight_passes};

/// Sessions and the reader, behind one lock: a judgement reads Prometheus
/// and updates its session as one step.
pub struct Gate {
    pub sessions: Sessions,
    pub reader: Box<dyn EvidenceReader + Send>,
    /// Seconds before now that `confirm-rollout` reads.
    pub preflight_window: f64,
    /// The clock (Unix seconds); tests move it.
    pub now: Box<dyn Fn() -> f64 + Send>,
}

pub type Shared = Arc<Mutex<Gate>>;

/// A failure a caller gets as JSON: `{"error", "message", "status"}`.
#[derive(Debug)]
pub struct Failure {
    status: StatusCode,
    code: &'static str,
    message: String,
}

#[derive(Serialize)]
struct FailureBody<'a> {
    error: &'a str,
    message: &'a str,
    status: u16,
}

impl Failure {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Failure {
        Failure {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let body = FailureBody {
            error: self.code,
            message: &self.message,
            status: self.status.as_u16(),
        };
        (self.status, Json(body)).into_response()
    }
}

pub fn router(gate: Shared) -> Router {
    Router::new()
        .route("/flagger/{hook}", post(flagger))
        .route("/argo/verdict", get(argo))
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"ok": true})) }),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(gate)
}

async fn not_found(method: Method, OriginalUri(uri): OriginalUri) -> Failure {
    Failure::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, OriginalUri(uri): OriginalUri) -> Failure {
    Failure::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("method {method} is not allowed on {}", uri.path()),
    )
}

/// The answer with its status: 200 for a yes, 412 for a verdict's no.
fn answered(answer: Answer) -> Response {
    let status = if answer.go {
        StatusCode::OK
    } else {
        StatusCode::PRECONDITION_FAILED
    };
    (status, Json(answer)).into_response()
}

/// Runs a judgement off the async workers: it blocks on Prometheus.
async fn blocking<T: Send + 'static>(
    gate: Shared,
    work: impl FnOnce(&mut Gate) -> anyhow::Result<T> + Send + 'static,
) -> Result<T, Failure> {
    let unavailable = |message: String| {
        Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "evidence_unavailable",
            message,
        )
    };
    tokio::task::spawn_blocking(move || {
        let mut gate = gate
            .lock()
            .map_err(|_| anyhow::anyhow!("the gate's state is poisoned"))?;
        work(&mut gate)
    })
    .await
    .map_err(|e| unavailable(format!("the judgement did not finish: {e}")))?
    .map_err(|e| unavailable(format!("{e:#}")))
}

async fn flagger(
    State(gate): State<Shared>,
    Path(kind): Path<String>,
    payload: Result<Json<FlaggerPayload>, JsonRejection>,
) -> Result<Response, Failure> {
    let hook = Hook::flagger(&kind).ok_or_else(|| {
        Failure::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no Flagger hook {kind:?}: use confirm-rollout, rollout, confirm-promotion or rollback"
            ),
        )
    })?;
    let Json(payload) =
        payload.map_err(|r| Failure::new(r.status(), "invalid_payload", r.body_text()))?;
    let session = payload
        .session()
        .map_err(|m| Failure::new(StatusCode::BAD_REQUEST, "invalid_field", m))?;
    let answer = blocking(gate, move |gate| {
        let now = (gate.now)();
        if hook == Hook::ConfirmRollout {
            let window = gate.preflight_window;
            let judgement = gate.sessions.preflight(now, window, gate.reader.as_mut())?;
            let verdict = preflight_passes(&judgement);
            let go = verdict.is_ok();
            let mut answer = Answer::new(hook, session, &judgement, go);
            answer.reason = match verdict {
                Ok(()) => format!(
                    "the cohort assignment over the last {window:.0}s is healthy: {} canary and {} stable requests",
                    answer.canary.requests, answer.stable.requests
                ),
                Err(why) => why,
            };
            return Ok(answer);
        }
        let judgement = gate
            .sessions
            .judge(&session, now, gate.reader.as_mut())?;
        let go = hook.go(judgement.comparison.verdict);
        Ok(Answer::new(hook, session, &judgement, go))
    })
    .await?;
    Ok(answered(answer))
}

#[derive(Debug, Deserialize)]
struct ArgoQuery {
    session: String,
}

async fn argo(
    State(gate): State<Shared>,
    query: Result<Query<ArgoQuery>, QueryRejection>,
) -> Result<Response, Failure> {
    let Query(query) =
        query.map_err(|r| Failure::new(r.status(), "invalid_query", r.body_text()))?;
    let id = query.session.trim().to_string();
    if id.is_empty() {
        return Err(Failure::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "query parameter `session` is empty: give one per analysis, e.g. the rollout's pod template hash",
        ));
    }
    let session = format!("argo/{id}");
    let answer = blocking(gate, move |gate| {
        let now = (gate.now)();
        let judgement = gate.sessions.judge(&session, now, gate.reader.as_mut())?;
        Ok(Answer::new(Hook::Argo, session, &judgement, true))
    })
    .await?;
    Ok(answered(answer))
}
