//! The tenant's secrets: set, list (names only) and delete. No call returns
//! a value; only the steps that list a secret read it.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::auth::Tenant;
use super::body::JsonBody;
use super::error::ErrorBody;
use super::{ApiError, AppState};
use crate::capability::secrets::{MAX_SECRET_BYTES, MAX_SECRETS, SecretError};
use crate::scheduler::clock::rfc3339;
use crate::workflow::is_valid_name;

/// `PUT /v1/secrets/{name}` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({"value": "sk_live_..."})))]
#[expect(dead_code, reason = "documents the body; `set` reads it by hand")]
pub struct SecretValue {
    /// At most 64 KiB of UTF-8.
    pub value: String,
}

/// A secret as the API shows it: never its value.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SecretEntry {
    pub name: String,
    /// When it was last set (RFC 3339).
    pub updated_at: String,
}

/// The tenant's secrets, by name.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SecretList {
    pub secrets: Vec<SecretEntry>,
}

impl From<SecretError> for ApiError {
    fn from(e: SecretError) -> Self {
        match e {
            SecretError::Backend(e) => e.into(),
            SecretError::Missing(name) => ApiError::not_found(format_args!("secret {name:?}")),
            other => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "secrets_unavailable",
                other.to_string(),
            ),
        }
    }
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if is_valid_name(name) {
        return Ok(());
    }
    Err(ApiError::unprocessable(
        "invalid_secret",
        "a secret name is lowercase letters, digits, `_` and `-`, starting with a letter (at most 63)",
    ))
}

/// Set a secret.
///
/// Sealed with the node's key before it is stored; its value is never
/// returned, and is replaced by `***` in the logs, errors and output of
/// the steps that read it.
#[utoipa::path(put, path = "/v1/secrets/{name}", tag = "secrets", operation_id = "set_secret",
    params(("name" = String, Path, description = "Secret name", pattern = "^[a-z][a-z0-9_-]{0,62}$")),
    request_body = SecretValue,
    security(("api_key" = [])),
    responses(
        (status = 201, description = "Created", body = SecretEntry),
        (status = 200, description = "Replaced", body = SecretEntry),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 409, description = "The tenant has 1,000 secrets already (`too_many_secrets`)", body = ErrorBody),
        (status = 413, description = "The value is over 64 KiB (`secret_too_large`)", body = ErrorBody),
        (status = 415, description = "The body is not sent as JSON", body = ErrorBody),
        (status = 422, description = "The name or the body is not valid", body = ErrorBody),
        (status = 503, description = "This node has no secrets key (`secrets_unavailable`)", body = ErrorBody),
    ))]
pub async fn set(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(name): Path<String>,
    body: JsonBody<serde_json::Value>,
) -> Result<(StatusCode, Json<SecretEntry>), ApiError> {
    check_name(&name)?;
    // Read by hand, so that no parse error can quote the value.
    let fields = body.value.as_object().filter(|o| o.len() == 1);
    let Some(value) = fields.and_then(|o| o.get("value")?.as_str()) else {
        return Err(ApiError::unprocessable(
            "invalid_request",
            "the body is {\"value\": \"...\"}: one field, a string",
        ));
    };
    if value.len() > MAX_SECRET_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "secret_too_large",
            format!(
                "the value is {} bytes; a secret is at most {MAX_SECRET_BYTES}",
                value.len()
            ),
        ));
    }
    let existing = state.vault.list(&tenant.name).await?;
    if existing.len() >= MAX_SECRETS && !existing.iter().any(|s| s.name == name) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_many_secrets",
            format!("the tenant keeps {MAX_SECRETS} secrets already: delete one first"),
        ));
    }
    let created = state.vault.set(&tenant.name, &name, value).await?;
    let updated_at = rfc3339(state.scheduler.clock().now());
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(SecretEntry { name, updated_at })))
}

/// List the tenant's secrets: names and when each was set, never values.
#[utoipa::path(get, path = "/v1/secrets", tag = "secrets", operation_id = "list_secrets",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The tenant's secrets, by name", body = SecretList),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
) -> Result<Json<SecretList>, ApiError> {
    let secrets = state.vault.list(&tenant.name).await?;
    Ok(Json(SecretList {
        secrets: secrets
            .into_iter()
            .map(|s| SecretEntry {
                name: s.name,
                updated_at: rfc3339(s.updated_at),
            })
            .collect(),
    }))
}

/// Delete a secret. Runs submitted before that whose steps list it fail
/// those steps with `secret_missing` (retried, in case it is set again).
#[utoipa::path(delete, path = "/v1/secrets/{name}", tag = "secrets", operation_id = "delete_secret",
    params(("name" = String, Path, description = "Secret name")),
    security(("api_key" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 404, description = "No such secret", body = ErrorBody),
        (status = 422, description = "Not a secret name", body = ErrorBody),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    check_name(&name)?;
    if state.vault.delete(&tenant.name, &name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format_args!("secret {name:?}")))
    }
}
