//! The HTTP handlers and the OpenAPI document generated from them.

use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use crate::app::AppState;
use crate::error::{ApiError, BODY_LIMIT, ErrorBody, ErrorCode};
use crate::headers::{HeaderNames, VERSION_HEADER};
use crate::model::Label;

#[derive(Debug, Deserialize, ToSchema)]
pub struct PredictRequest<'a> {
    /// The message to classify: at least one character that is not white
    /// space (the pattern lists Unicode's White_Space characters, which the
    /// service trims, so every JSON Schema dialect reads it the same way).
    #[serde(borrow)]
    #[schema(
        value_type = String,
        example = "WINNER!! Claim your £900 prize now",
        min_length = 1,
        pattern = r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    pub sms: std::borrow::Cow<'a, str>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PredictResponse<'a> {
    pub result: Label,
    /// The classifier behind this version.
    #[schema(value_type = String)]
    pub classifier: &'a str,
    /// The message, as received.
    #[schema(value_type = String)]
    pub sms: &'a str,
    /// The model version that answered (`v1`, `v2`, `v3`).
    #[schema(value_type = String)]
    pub version: &'a str,
    /// The model's probability for `result`, 0.5 to 1.
    pub confidence: f32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatusBody {
    pub status: &'static str,
    pub service: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VersionBody {
    pub service: &'static str,
    /// The model version served.
    pub version: String,
    pub classifier: String,
    /// The service build.
    pub service_version: &'static str,
    /// SHA-256 of the data the model was trained on.
    pub dataset_sha256: String,
    /// Test-split scores recorded in the artifact.
    pub accuracy: f64,
    pub spam_f1: f64,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "model-service",
        description = "SMS spam classifier; one model version per instance."
    ),
    paths(predict, health, ready, version, metrics, usage, openapi, sms_page),
    components(schemas(
        PredictRequest,
        PredictResponse,
        StatusBody,
        VersionBody,
        ErrorBody,
        ErrorCode,
        Label
    ))
)]
pub struct ApiDoc;

/// Classify one SMS.
#[utoipa::path(
    post,
    path = "/predict",
    request_body(content = PredictRequest, content_type = "application/json",
        description = "At most 16 KiB"),
    responses(
        (status = 200, description = "The verdict", body = PredictResponse,
            headers(("x-model-version" = String, description = "The version that answered"),
                    ("x-model-prediction" = String, description = "spam or ham (named by PREDICTION_HEADER)"))),
        (status = 400, description = "Invalid UTF-8 or JSON, missing or non-string `sms`, or a body that is not an object (`invalid_utf8`, `invalid_json`, `invalid_field`, `body_read_failed`)", body = ErrorBody),
        (status = 413, description = "Body over 16 KiB (`body_too_large`)", body = ErrorBody),
        (status = 415, description = "Content type is not application/json (`unsupported_media_type`)", body = ErrorBody),
        (status = 422, description = "`sms` is empty or only white space (`empty_sms`)", body = ErrorBody),
    )
)]
pub async fn predict(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_json_content_type(&headers)?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > BODY_LIMIT as u64) {
        return Err(ApiError::TooLarge);
    }
    let bytes = Limited::new(body, BODY_LIMIT)
        .collect()
        .await
        .map_err(|err| {
            if err.is::<LengthLimitError>() {
                ApiError::TooLarge
            } else {
                ApiError::BodyRead(err.to_string())
            }
        })?
        .to_bytes();
    let text = std::str::from_utf8(&bytes).map_err(|_| ApiError::InvalidUtf8)?;
    let request: PredictRequest =
        serde_json::from_str(text).map_err(|err| match err.classify() {
            serde_json::error::Category::Data => {
                ApiError::InvalidField(format!("field `sms` must be present and a string: {err}"))
            }
            _ => ApiError::InvalidJson(err.to_string()),
        })?;
    // serde also reads a struct from a JSON array; the API takes objects only.
    if !text.trim_start().starts_with('{') {
        return Err(ApiError::InvalidField(
            "the body must be a JSON object with a string field `sms`".to_string(),
        ));
    }
    if request.sms.trim().is_empty() {
        return Err(ApiError::EmptySms);
    }

    let started = Instant::now();
    let prediction = state.model.predict(&request.sms);
    state
        .metrics
        .observe_prediction(prediction.label, started.elapsed().as_secs_f64());

    let body = PredictResponse {
        result: prediction.label,
        classifier: &state.model.classifier,
        sms: &request.sms,
        version: state.model.version.as_str(),
        confidence: prediction.confidence(),
    };
    let mut response = Json(body).into_response();
    let out = response.headers_mut();
    out.insert(VERSION_HEADER, state.version_header.clone());
    out.insert(
        state.headers.prediction.clone(),
        HeaderValue::from_static(prediction.label.as_str()),
    );
    if let Some(cohort) = headers.get(&state.headers.cohort) {
        out.insert(state.headers.cohort_response.clone(), cohort.clone());
    }
    Ok(response)
}

fn check_json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(ApiError::UnsupportedMediaType("none".to_string()));
    };
    let text = value.to_str().unwrap_or("");
    let essence = text.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(format!("{text:?}")))
    }
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/health", responses((status = 200, body = StatusBody)))]
pub async fn health() -> Json<StatusBody> {
    Json(StatusBody {
        status: "healthy",
        service: "model-service",
    })
}

/// Readiness: the model is loaded and the service is not shutting down.
#[utoipa::path(get, path = "/ready", responses(
    (status = 200, description = "Ready", body = StatusBody),
    (status = 503, description = "Shutting down", body = StatusBody)))]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<StatusBody>) {
    if state.ready.load(Ordering::Acquire) {
        (
            StatusCode::OK,
            Json(StatusBody {
                status: "ready",
                service: "model-service",
            }),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(StatusBody {
                status: "not ready",
                service: "model-service",
            }),
        )
    }
}

/// The model version served and its recorded test scores.
#[utoipa::path(get, path = "/version", responses((status = 200, body = VersionBody)))]
pub async fn version(State(state): State<AppState>) -> Json<VersionBody> {
    let model = &state.model;
    Json(VersionBody {
        service: "model-service",
        version: model.version.to_string(),
        classifier: model.classifier.clone(),
        service_version: env!("CARGO_PKG_VERSION"),
        dataset_sha256: model.dataset_sha256.clone(),
        accuracy: model.scores.accuracy,
        spam_f1: model.scores.f1,
    })
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", responses(
    (status = 200, content_type = "text/plain", body = String),
    (status = 503, description = "The registry could not be encoded (`metrics_unavailable`)", body = ErrorBody)))]
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let text = state.metrics.render().map_err(|err| {
        tracing::error!(error = %err, "metrics encoding failed");
        ApiError::MetricsUnavailable(err.to_string())
    })?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response())
}

/// The endpoints, for a person exploring with curl.
#[utoipa::path(get, path = "/", responses((status = 200, description = "JSON", content_type = "application/json")))]
pub async fn usage(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "service": "model-service",
        "version": state.model.version.as_str(),
        "endpoints": {
            "POST /predict": "classify {\"sms\": \"...\"} as spam or ham",
            "GET /sms": "web page to try the classifier",
            "GET /health": "liveness",
            "GET /ready": "readiness (model loaded, not shutting down)",
            "GET /version": "model version, classifier and test scores",
            "GET /metrics": "Prometheus metrics",
            "GET /openapi.json": "OpenAPI document",
        }
    }))
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", responses((status = 200, description = "JSON", content_type = "application/json")))]
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// A page to type an SMS and see the verdict, version and cohort.
#[utoipa::path(get, path = "/sms", responses((status = 200, content_type = "text/html", body = String)))]
pub async fn sms_page(State(state): State<AppState>) -> Html<Bytes> {
    Html(state.page.clone())
}

/// The page with the names of the response headers it shows, rendered once.
pub fn sms_page_html(headers: &HeaderNames) -> Bytes {
    include_str!("sms.html")
        .replace("{{version_header}}", &attribute(VERSION_HEADER))
        .replace(
            "{{cohort_header}}",
            &attribute(headers.cohort_response.as_str()),
        )
        .into()
}

/// Text for a double-quoted HTML attribute (a header name may hold `&` or `'`).
fn attribute(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub async fn not_found(method: Method, OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::NotFound {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
}

pub async fn method_not_allowed(method: Method, OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
}
