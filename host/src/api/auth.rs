//! Who is calling: a tenant by its API key, or the admin by the admin token.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::{ApiError, AppState, tenants};
use crate::backend::TenantRecord;

/// The tenant whose API key the request carries.
pub struct Tenant(pub TenantRecord);

/// A request carrying the admin token.
pub struct Admin;

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts
        .headers
        .get(AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("no API key: send `Authorization: Bearer <key>`"))?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::unauthorized("the Authorization header is not text"))?;
    let (scheme, token) = value
        .trim()
        .split_once(' ')
        .ok_or_else(|| ApiError::unauthorized("the Authorization header must be `Bearer <key>`"))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(ApiError::unauthorized(
            "the Authorization header must be `Bearer <key>`",
        ));
    }
    Ok(token.trim())
}

impl FromRequestParts<AppState> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let key = bearer(parts)?;
        let hash = hex::encode(tenants::hash_secret(key));
        match state.store().tenant_by_key(&hash).await? {
            Some(tenant) => Ok(Tenant(tenant)),
            None => Err(ApiError::unauthorized("unknown API key")),
        }
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(expected) = &state.admin_token_hash else {
            return Err(ApiError::unauthorized(
                "admin calls are disabled: start `weft serve` with --admin-token or WEFT_ADMIN_TOKEN",
            ));
        };
        let token = bearer(parts)?;
        // Comparing hashes keeps the comparison's time independent of the token.
        if tenants::hash_secret(token) == *expected {
            Ok(Admin)
        } else {
            Err(ApiError::unauthorized("this call needs the admin token"))
        }
    }
}
