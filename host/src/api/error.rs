//! The error shape of every API answer that is not a success:
//! `{"error": {"code", "message", "details": [...]}}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::backend::BackendError;
use crate::workflow::Problem;

/// An error answer: status, machine-readable code, message and details.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Vec<Problem>,
    /// Problems were left out of `details` (at most 100 are listed).
    pub truncated: bool,
    /// Seconds, for 429 answers.
    pub retry_after: Option<u64>,
}

/// The body of an error answer.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorInfo,
}

/// What went wrong.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorInfo {
    /// Machine-readable, e.g. `invalid_workflow`, `not_found`, `rate_limited`.
    pub code: String,
    /// For a person to read.
    pub message: String,
    /// Each problem found, with a JSON Pointer to where it is; at most 100.
    pub details: Vec<ProblemSchema>,
    /// True when more problems were found than `details` lists.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// One problem, at a JSON Pointer into the request.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[schema(as = Problem)]
pub struct ProblemSchema {
    pub path: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
            truncated: false,
            retry_after: None,
        }
    }

    /// The problems, the first 100 of them when there are more.
    pub fn with_details(mut self, details: Vec<Problem>) -> Self {
        (self.details, self.truncated) = crate::workflow::cap_problems(details);
        self
    }

    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn too_many(code: &'static str, message: impl Into<String>, retry_after: u64) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, code, message);
        e.retry_after = Some(retry_after.max(1));
        e
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::Unavailable(m) => {
                tracing::warn!(error = %m, "backend unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the backend cannot be reached; try again shortly",
                )
            }
            BackendError::Corrupt(m) => {
                tracing::error!(error = %m, "backend data is corrupt");
                Self::internal("stored data is unreadable; the operator has been told in the log")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({
            "error": {
                "code": self.code,
                "message": self.message,
                "details": self.details,
            }
        });
        if self.truncated {
            body["error"]["truncated"] = serde_json::Value::Bool(true);
        }
        let mut response = (self.status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
