//! Queues (admin): declared by name, each served by the nodes started with
//! it (`weft serve --queues`); a step names one with `"queue"`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::auth::Admin;
use super::error::ErrorBody;
use super::{ApiError, AppState};
use crate::backend::QueueStats;
use crate::scheduler::flow;

/// Most queues a cluster declares (besides `default`): each is a label of
/// the queue metrics and a set of keys the dispatcher visits.
pub const MAX_QUEUES: usize = 100;

/// A declared queue.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueEntry {
    pub name: String,
}

/// The declared queues, `default` first, with their ready work.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueList {
    pub queues: Vec<QueueStats>,
}

/// Declare a queue.
///
/// Steps may then name it with `"queue"`; they run only on nodes started
/// with it (`weft serve --queues default,NAME`). Declaring it again changes
/// nothing. Admin.
#[utoipa::path(put, path = "/v1/queues/{name}", tag = "queues", operation_id = "declare_queue",
    params(("name" = String, Path, description = "Queue name", pattern = "^[a-z][a-z0-9_-]{0,62}$")),
    security(("admin_token" = [])),
    responses(
        (status = 201, description = "Declared", body = QueueEntry),
        (status = 200, description = "Declared already", body = QueueEntry),
        (status = 401, description = "Not the admin token", body = ErrorBody),
        (status = 409, description = "100 queues are declared already (`too_many_queues`)", body = ErrorBody),
        (status = 422, description = "Not a queue name (`invalid_queue`)", body = ErrorBody),
        (status = 503, description = "The backend cannot be reached", body = ErrorBody),
    ))]
pub async fn declare(
    State(state): State<AppState>,
    _admin: Admin,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    if !flow::valid_queue(&name) {
        return Err(ApiError::unprocessable(
            "invalid_queue",
            "a queue name is lowercase letters, digits, `_` and `-`, starting with a letter (at most 63)",
        ));
    }
    let declared = state.store().queues().await?;
    let status = if declared.iter().any(|q| q.name == name) {
        StatusCode::OK
    } else if declared.len() > MAX_QUEUES {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_many_queues",
            format!("{MAX_QUEUES} queues are declared already"),
        ));
    } else if state.store().declare_queue(&name).await? {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(QueueEntry { name })).into_response())
}

/// The declared queues.
///
/// Each with its depth (ready steps no node has taken) and the age of its
/// oldest ready step: what an autoscaler reads (also on `/metrics` as
/// `weft_queue_depth{queue}` and `weft_queue_oldest_age_seconds{queue}`). Admin.
#[utoipa::path(get, path = "/v1/queues", tag = "queues", operation_id = "list_queues",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "`default` first, then by name", body = QueueList),
        (status = 401, description = "Not the admin token", body = ErrorBody),
        (status = 503, description = "The backend cannot be reached", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<QueueList>, ApiError> {
    Ok(Json(QueueList {
        queues: state.store().queues().await?,
    }))
}
