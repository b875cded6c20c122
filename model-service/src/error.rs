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
    #[error("metrics could not be encoded: {0}")]
    MetricsUnavailable(String),
}

/// The machine-readable code of an error, one per kind of failure. An enum
/// so the OpenAPI document lists every code a client can get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidUtf8,
    InvalidJson,
    InvalidField,
    EmptySms,
    BodyTooLarge,
    BodyReadFailed,
    UnsupportedMediaType,
    NotFound,
    MethodNotAllowed,
    MetricsUnavailable,
}

impl ErrorCode {
    /// Every code, in the order the document lists them.
    pub const ALL: [ErrorCode; 10] = [
        ErrorCode::InvalidUtf8,
        ErrorCode::InvalidJson,
        ErrorCode::InvalidField,
        ErrorCode::EmptySms,
        ErrorCode::BodyTooLarge,
        ErrorCode::BodyReadFailed,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::MetricsUnavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidUtf8 => "invalid_utf8",
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::EmptySms => "empty_sms",
            ErrorCode::BodyTooLarge => "body_too_large",
            ErrorCode::BodyReadFailed => "body_read_failed",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::MetricsUnavailable => "metrics_unavailable",
        }
    }
}

/// The JSON body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A stable, machine-readable code, e.g. `invalid_json`.
    pub error: ErrorCode,
    /// What is wrong, for a person.
    pub message: String,
    /// The response's HTTP status, repeated.
    #[schema(minimum = 400, maximum = 599)]
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
            ApiError::MetricsUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::InvalidUtf8 => ErrorCode::InvalidUtf8,
            ApiError::InvalidJson(_) => ErrorCode::InvalidJson,
            ApiError::InvalidField(_) => ErrorCode::InvalidField,
            ApiError::EmptySms => ErrorCode::EmptySms,
            ApiError::TooLarge => ErrorCode::BodyTooLarge,
            ApiError::BodyRead(_) => ErrorCode::BodyReadFailed,
            ApiError::UnsupportedMediaType(_) => ErrorCode::UnsupportedMediaType,
            ApiError::NotFound { .. } => ErrorCode::NotFound,
            ApiError::MethodNotAllowed { .. } => ErrorCode::MethodNotAllowed,
            ApiError::MetricsUnavailable(_) => ErrorCode::MetricsUnavailable,
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
            code: body.error.as_str(),
            message: body.message.clone(),
        };
        let mut response = (status, Json(body)).into_response();
        response.extensions_mut().insert(logged);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_their_names() {
        for code in ErrorCode::ALL {
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::json!(code.as_str())
            );
        }
    }

    #[test]
    fn every_error_has_a_listed_code_and_a_client_or_server_status() {
        let errors = [
            ApiError::InvalidUtf8,
            ApiError::InvalidJson(String::new()),
            ApiError::InvalidField(String::new()),
            ApiError::EmptySms,
            ApiError::TooLarge,
            ApiError::BodyRead(String::new()),
            ApiError::UnsupportedMediaType(String::new()),
            ApiError::NotFound {
                method: "GET".into(),
                path: "/x".into(),
            },
            ApiError::MethodNotAllowed {
                method: "PUT".into(),
                path: "/x".into(),
            },
            ApiError::MetricsUnavailable(String::new()),
        ];
        let codes: Vec<ErrorCode> = errors.iter().map(ApiError::code).collect();
        assert_eq!(codes, ErrorCode::ALL, "one code per error, in order");
        for error in &errors {
            let status = error.status();
            assert!(
                status.is_client_error() || error.code() == ErrorCode::MetricsUnavailable,
                "{error:?} answers {status}"
            );
        }
    }
}
