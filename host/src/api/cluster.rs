//! `GET /v1/cluster`: the live nodes and the queues (admin).

use axum::Json;
use axum::extract::State;

use super::auth::Admin;
use super::error::ErrorBody;
use super::{ApiError, AppState};
use crate::backend::ClusterView;

/// The live nodes with the steps each runs, and the depth and pending count
/// of each queue (what an autoscaler reads). Admin.
#[utoipa::path(get, path = "/v1/cluster", tag = "health",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Nodes heard of in the last 10 s, and the queues", body = ClusterView),
        (status = 401, description = "Not the admin token", body = ErrorBody),
        (status = 503, description = "The backend cannot be reached", body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<ClusterView>, ApiError> {
    Ok(Json(state.store().cluster().await?))
}
