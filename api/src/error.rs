//! `ApiError`: every failure an API handler can answer with, rendered as RFC 9457
//! `application/problem+json`. Server errors are logged once here and stay opaque to clients.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use showrunner_shared::domain::FieldError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{detail}")]
    BadRequest { detail: String, errors: Vec<FieldError> },
    #[error("{detail}")]
    Validation { detail: String, errors: Vec<FieldError> },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    RequestTimeout(String),
    /// A `Range` no byte of the resource satisfies (416); `size` goes into `Content-Range`.
    #[error("{detail}")]
    RangeNotSatisfiable { detail: String, size: u64 },
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{detail}")]
    TooManyRequests { detail: String, retry_after_secs: Option<u64> },
    #[error("{detail}")]
    Unavailable { detail: String, retry_after_secs: u64 },
    #[error("internal error: {0:#}")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self::Validation {
            detail: format!("{field}: {message}"),
            errors: vec![FieldError::new(field, message)],
        }
    }

    pub fn bad_param(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self::BadRequest {
            detail: format!("{field}: {message}"),
            errors: vec![FieldError::new(field, message)],
        }
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not Found"),
            Self::BadRequest { .. } => (StatusCode::BAD_REQUEST, "bad-request", "Bad Request"),
            Self::Validation { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "validation", "Validation Failed")
            }
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict", "Conflict"),
            Self::Gone(_) => (StatusCode::GONE, "gone", "Gone"),
            Self::PreconditionFailed(_) => {
                (StatusCode::PRECONDITION_FAILED, "precondition-failed", "Precondition Failed")
            }
            Self::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported Media Type",
            ),
            Self::PayloadTooLarge(_) => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large", "Payload Too Large")
            }
            Self::RequestTimeout(_) => {
                (StatusCode::REQUEST_TIMEOUT, "request-timeout", "Request Timeout")
            }
            Self::RangeNotSatisfiable { .. } => (
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range-not-satisfiable",
                "Range Not Satisfiable",
            ),
            Self::MethodNotAllowed(_) => {
                (StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "Method Not Allowed")
            }
            Self::TooManyRequests { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "too-many-requests", "Too Many Requests")
            }
            Self::Unavailable { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Service Unavailable")
            }
            Self::Internal(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal Server Error")
            }
        }
    }
}

impl From<sea_orm::DbErr> for ApiError {
    fn from(e: sea_orm::DbErr) -> Self {
        // Every pooled connection busy past `database.acquire_timeout_secs`, or PostgreSQL
        // away: a retry later can succeed, so 503 with Retry-After rather than a 500. Nothing
        // was accepted (a write answers 202 only after its row is committed and published).
        if showrunner_shared::db::unreachable(&e) {
            tracing::warn!(error = %e, "database unavailable, answering 503");
            return Self::Unavailable {
                detail: "the database is busy or unreachable; retry shortly".into(),
                retry_after_secs: 1,
            };
        }
        Self::Internal(e.into())
    }
}

#[cfg_attr(test, derive(schemars::JsonSchema))]
#[derive(Serialize)]
pub(crate) struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a [FieldError]>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, slug, title) = self.parts();
        let detail = match &self {
            Self::Internal(error) => {
                tracing::error!(error = format!("{error:#}"), "request failed");
                "the server could not complete the request".to_string()
            }
            other => other.to_string(),
        };
        let errors = match &self {
            Self::BadRequest { errors, .. } | Self::Validation { errors, .. } => {
                Some(errors.as_slice())
            }
            _ => None,
        };
        let body = Problem {
            kind: format!("https://showrunner.dev/problems/{slug}"),
            title,
            status: status.as_u16(),
            detail,
            errors,
        };
        let mut response = (status, serde_json::to_vec(&body).unwrap_or_default()).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        match &self {
            Self::Unauthorized(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::Unavailable { retry_after_secs, .. }
            | Self::TooManyRequests { retry_after_secs: Some(retry_after_secs), .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            Self::RangeNotSatisfiable { size, .. } => {
                if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    headers.insert(header::CONTENT_RANGE, value);
                }
            }
            _ => {}
        }
        response
    }
}
