//! Every failure a client can cause, as a JSON body with the right status.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// The largest `/predict` body accepted, in bytes. An SMS is at most a few
/// hundred characters; 16 KiB leaves room for long concatenated messages.
pub const BODY_LIMIT: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("request body is not valid UTF-8")]
    InvalidUtf8,
    #[error("request body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("{0}")]
    InvalidField(String),
    #[error("field `sms` is empty or only whitespace")]
    EmptySms,
    #[error("request body is larger than {BODY_LIMIT} bytes")]
    TooLarge,
    #[error("could not read the request body: {0}")]
    BodyRead(String),
    #[error("content type must be application/json, got {0}")]
    UnsupportedMediaType(String),
    #[error("no route for {method} {path}")]
    NotFound { method: String, path: String },
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
}

/// The JSON body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A stable, machine-readable code, e.g. `invalid_json`.
    pub error: &'static str,
    /// What is wrong, for a person.
    pub message: String,
    pub status: u16,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidUtf8
            | ApiError::InvalidJson(_)
            | ApiError::InvalidField(_)
            | ApiError::BodyRead(_) => StatusCode::BAD_REQUEST,
            ApiError::EmptySms => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidUtf8 => "invalid_utf8",
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::InvalidField(_) => "invalid_field",
            ApiError::EmptySms => "empty_sms",
            ApiError::TooLarge => "body_too_large",
            ApiError::BodyRead(_) => "body_read_failed",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::NotFound { .. } => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
        }
    }
}

/// Rides on an error response so the request log can say what went wrong.
#[derive(Debug, Clone)]
pub struct LoggedError {
    pub code: &'static str,
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = ErrorBody {
            error: self.code(),
            message: self.to_string(),
            status: status.as_u16(),
        };
        let logged = LoggedError {
            code: body.error,
            message: body.message.clone(),
        };
        let mut response = (status, Json(body)).into_response();
        response.extensions_mut().insert(logged);
        response
    }
}
