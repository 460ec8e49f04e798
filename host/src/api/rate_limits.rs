//! The tenant's rate limits: steps that name one (`"rate_limit"`) start
//! within it, across the cluster.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::auth::Tenant;
use super::body::JsonBody;
use super::error::ErrorBody;
use super::{ApiError, AppState};
use crate::backend::RateLimit;
use crate::workflow::is_valid_name;

/// Most rate limits one tenant keeps.
pub const MAX_RATE_LIMITS: usize = 100;

/// Most starts per second a rate limit allows, and the largest burst.
const MAX_PER_SECOND: f64 = 1_000_000.0;
const MAX_BURST: u32 = 1_000_000;

/// `PUT /v1/rate-limits/{name}` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({"per_second": 10, "burst": 10})))]
pub struct RateLimitBody {
    /// Starts per second (more than 0, at most 1,000,000; fractions allowed).
    #[schema(exclusive_minimum = 0, maximum = 1_000_000)]
    pub per_second: f64,
    /// Starts at once after a quiet spell (1 to 1,000,000); default:
    /// `per_second` rounded up.
    #[serde(default, deserialize_with = "super::tenants::whole")]
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub burst: Option<u32>,
}

/// The tenant's rate limits, by name.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RateLimitList {
    pub rate_limits: Vec<RateLimit>,
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if is_valid_name(name) {
        return Ok(());
    }
    Err(ApiError::unprocessable(
        "invalid_rate_limit",
        "a rate limit name is lowercase letters, digits, `_` and `-`, starting with a letter (at most 63)",
    ))
}

/// Set a rate limit.
///
/// Steps that name it with `"rate_limit"` start at most `per_second` a
/// second, and `burst` at once after a quiet spell, across every node; the
/// others wait, in order. Setting it again replaces it.
#[utoipa::path(put, path = "/v1/rate-limits/{name}", tag = "rate limits", operation_id = "set_rate_limit",
    params(("name" = String, Path, description = "Rate limit name", pattern = "^[a-z][a-z0-9_-]{0,62}$")),
    request_body = RateLimitBody,
    security(("api_key" = [])),
    responses(
        (status = 201, description = "Created", body = RateLimit),
        (status = 200, description = "Replaced", body = RateLimit),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 409, description = "The tenant has 100 rate limits already (`too_many_rate_limits`)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "A bad name or value (`invalid_rate_limit`)", body = ErrorBody),
        (status = 503, description = "The backend cannot be reached", body = ErrorBody),
    ))]
pub async fn set(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(name): Path<String>,
    JsonBody { value: body, .. }: JsonBody<RateLimitBody>,
) -> Result<Response, ApiError> {
    check_name(&name)?;
    let per_second = body.per_second;
    if !(per_second.is_finite() && per_second > 0.0 && per_second <= MAX_PER_SECOND) {
        return Err(ApiError::unprocessable(
            "invalid_rate_limit",
            "per_second must be more than 0 and at most 1,000,000",
        ));
    }
    let burst = body
        .burst
        .unwrap_or_else(|| per_second.ceil().clamp(1.0, f64::from(MAX_BURST)) as u32);
    if !(1..=MAX_BURST).contains(&burst) {
        return Err(ApiError::unprocessable(
            "invalid_rate_limit",
            "burst must be 1 to 1,000,000",
        ));
    }
    let existing = state.store().rate_limits(&tenant.name).await?;
    if existing.len() >= MAX_RATE_LIMITS && !existing.iter().any(|l| l.name == name) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_many_rate_limits",
            format!("the tenant has {MAX_RATE_LIMITS} rate limits already; delete one first"),
        ));
    }
    let limit = RateLimit {
        name,
        per_second,
        burst,
    };
    let created = state
        .store()
        .put_rate_limit(&tenant.name, limit.clone())
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(limit)).into_response())
}

/// The tenant's rate limits.
#[utoipa::path(get, path = "/v1/rate-limits", tag = "rate limits", operation_id = "list_rate_limits",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "By name", body = RateLimitList),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 503, description = "The backend cannot be reached", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
) -> Result<Json<RateLimitList>, ApiError> {
    Ok(Json(RateLimitList {
        rate_limits: state.store().rate_limits(&tenant.name).await?,
    }))
}

/// One rate limit.
#[utoipa::path(get, path = "/v1/rate-limits/{name}", tag = "rate limits", operation_id = "get_rate_limit",
    params(("name" = String, Path, description = "Rate limit name")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The rate limit", body = RateLimit),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 404, description = "No such rate limit", body = ErrorBody),
        (status = 503, description = "The backend cannot be reached", body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(name): Path<String>,
) -> Result<Json<RateLimit>, ApiError> {
    state
        .store()
        .rate_limits(&tenant.name)
        .await?
        .into_iter()
        .find(|l| l.name == name)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format_args!("rate limit {name:?}")))
}

/// Delete a rate limit.
///
/// Steps that wait for it start at once.
#[utoipa::path(delete, path = "/v1/rate-limits/{name}", tag = "rate limits", operation_id = "delete_rate_limit",
    params(("name" = String, Path, description = "Rate limit name")),
    security(("api_key" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 404, description = "No such rate limit", body = ErrorBody),
        (status = 503, description = "The backend cannot be reached", body = ErrorBody),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state.store().delete_rate_limit(&tenant.name, &name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format_args!("rate limit {name:?}")))
    }
}
