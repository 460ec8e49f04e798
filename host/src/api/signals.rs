//! Sending a signal to a run (`POST /v1/runs/{id}/signals/{name}`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::auth::Tenant;
use super::body::JsonBody;
use super::error::ErrorBody;
use super::{ApiError, AppState};
use crate::backend::Signalled;
use crate::scheduler::rules::MAX_BUFFERED_SIGNALS;
use crate::workflow::{is_signal_name, json_size};

/// `POST /v1/runs/{id}/signals/{name}` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({"payload": {"approved_by": "ada"}})))]
pub struct SignalRequest {
    /// What the signal carries: the output of the step that takes it;
    /// `null` when left out. At most the tenant's `output_bytes`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}

/// What became of a signal.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SignalSent {
    pub run: String,
    pub signal: String,
    /// `delivered`: a waiting step took it; `buffered`: no step waits for
    /// it yet, it is kept for the next one that does.
    pub status: SignalStatus,
    /// The step that took it (when delivered).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// Signals of this name the run keeps now, this one included (when buffered).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buffered: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SignalStatus {
    Delivered,
    Buffered,
}

/// Send a signal to a run.
///
/// The run's step waiting for a signal of this name (the first in document
/// order, if several wait) takes it at once and its payload becomes the
/// step's output. If no step waits for it yet, the run keeps it (at most
/// 100 per name, oldest first) for the next signal step of that name.
#[utoipa::path(post, path = "/v1/runs/{id}/signals/{name}", tag = "runs", operation_id = "signal_run",
    params(
        ("id" = String, Path, description = "Run id"),
        ("name" = String, Path, description = "Signal name", pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"),
    ),
    request_body = SignalRequest,
    security(("api_key" = [])),
    responses(
        (status = 202, description = "Taken by a waiting step, or kept for a later one", body = SignalSent),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 404, description = "No such run", body = ErrorBody),
        (status = 409, description = "The run has ended (`run_finished`), or 100 signals of this name wait already (`signal_buffer_full`)", body = ErrorBody),
        (status = 413, description = "The payload is larger than the tenant's output_bytes, or the run's run_bytes", body = ErrorBody),
        (status = 415, description = "The body is not sent as JSON", body = ErrorBody),
        (status = 422, description = "The signal name or the body is not valid", body = ErrorBody),
    ))]
pub async fn send(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path((id, name)): Path<(String, String)>,
    body: JsonBody<SignalRequest>,
) -> Result<(StatusCode, Json<SignalSent>), ApiError> {
    if !is_signal_name(&name) {
        return Err(ApiError::unprocessable(
            "invalid_signal",
            "a signal name is a letter or digit, then up to 127 letters, digits, `_`, `.` or `-`",
        ));
    }
    let payload = body.value.payload;
    let limit = tenant.limits.output_bytes;
    if json_size(&payload, usize::try_from(limit).unwrap_or(usize::MAX)).is_none() {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "the payload is larger than the tenant's output_bytes ({limit} bytes): it becomes a step's output"
            ),
        ));
    }
    let signalled = state
        .scheduler
        .signal(&tenant.name, &id, &name, payload)
        .await?;
    let sent = |status, step, buffered| SignalSent {
        run: id.clone(),
        signal: name.clone(),
        status,
        step,
        buffered,
    };
    match signalled {
        Signalled::Delivered { step } => Ok((
            StatusCode::ACCEPTED,
            Json(sent(SignalStatus::Delivered, Some(step), None)),
        )),
        Signalled::Buffered { buffered } => Ok((
            StatusCode::ACCEPTED,
            Json(sent(SignalStatus::Buffered, None, Some(buffered))),
        )),
        Signalled::Missing => Err(ApiError::not_found(format_args!("run {id:?}"))),
        Signalled::Finished(status) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "run_finished",
            format!(
                "run {id:?} has ended ({}): no step will take the signal",
                status.as_str()
            ),
        )),
        Signalled::Full => Err(ApiError::new(
            StatusCode::CONFLICT,
            "signal_buffer_full",
            format!(
                "run {id:?} keeps {MAX_BUFFERED_SIGNALS} signals {name:?} already and no step waits for one; \
                 send it again once a signal step has taken one"
            ),
        )),
        Signalled::TooLarge { run_bytes } => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "run_too_large",
            format!("the payload would take run {id:?} past its run_bytes ({run_bytes} bytes)"),
        )),
    }
}
