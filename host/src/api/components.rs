//! The component registry over HTTP.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use semver::Version;
use serde::{Deserialize, Serialize};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

use super::auth::Tenant;
use super::body::{content_type, read_limited};
use super::error::ErrorBody;
use super::{ApiError, AppState};
use crate::backend::{Published, VersionRecord};
use crate::registry::PublishError;
use crate::scheduler::clock::rfc3339;
use crate::workflow::is_valid_name;

/// A version as publishing reports it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PublishedVersion {
    pub name: String,
    pub version: String,
    /// `sha256:<hex>` of the bytes.
    pub digest: String,
    /// Bytes.
    pub size: u64,
}

/// One published version.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VersionInfo {
    pub name: String,
    pub version: String,
    pub digest: String,
    pub size: u64,
    /// RFC 3339
    pub published_at: String,
}

/// The tenant's components.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ComponentList {
    pub components: Vec<ComponentVersions>,
}

/// A component and its versions, lowest first.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ComponentVersions {
    pub name: String,
    pub versions: Vec<String>,
}

/// A component's bytes, as `PUT /v1/components/{name}/{version}` takes them:
/// a raw body, not a JSON array of numbers (utoipa's schema for `Vec<u8>`).
pub struct ComponentBytes;

impl utoipa::PartialSchema for ComponentBytes {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .content_media_type("application/wasm")
            .into()
    }
}

impl utoipa::ToSchema for ComponentBytes {}

fn check_name_and_version(name: &str, version: &str) -> Result<Version, ApiError> {
    if !is_valid_name(name) {
        return Err(ApiError::unprocessable(
            "invalid_name",
            PublishError::InvalidName(name.to_string()).to_string(),
        ));
    }
    Version::parse(version).map_err(|_| {
        ApiError::unprocessable(
            "invalid_version",
            PublishError::InvalidVersion(version.to_string()).to_string(),
        )
    })
}

/// Publish a component version; versions are immutable.
///
/// The body is the component's bytes. It is checked as a run would use it
/// (a component exporting the step's `run`, importing nothing Weft does not
/// provide) and compiled before the version is recorded.
#[utoipa::path(put, path = "/v1/components/{name}/{version}", tag = "components", operation_id = "publish_component",
    params(
        ("name" = String, Path, description = "Component name", pattern = "^[a-z][a-z0-9_-]{0,62}$"),
        ("version" = String, Path, description = "Semantic version, e.g. 1.2.0", pattern = r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"),
    ),
    request_body(content = ComponentBytes, content_type = "application/wasm", description = "The component"),
    security(("api_key" = [])),
    responses(
        (status = 201, description = "Published", body = PublishedVersion),
        (status = 200, description = "The same bytes were already published as this version", body = PublishedVersion),
        (status = 400, description = "The upload was cut off", body = ErrorBody),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 409, description = "Other bytes are published as this version", body = ErrorBody),
        (status = 413, description = "Larger than the tenant's component limit, or over its storage", body = ErrorBody),
        (status = 429, description = "Publishing faster than the tenant's publishes_per_minute", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 415, description = "Not `application/wasm`", body = ErrorBody),
        (status = 422, description = "Not a usable component, or a bad name or version", body = ErrorBody),
    ))]
pub async fn publish(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<PublishedVersion>), ApiError> {
    if content_type(&headers).as_deref() != Some("application/wasm") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the component's bytes with `Content-Type: application/wasm`",
        ));
    }
    check_name_and_version(&name, &version)?;
    if let Err(wait) = state
        .publishes
        .check_per_minute(&tenant.name, tenant.limits.publishes_per_minute)
    {
        let rate = tenant.limits.publishes_per_minute;
        let publish = "publish components:";
        return Err(super::tenants::rate_limited(
            &tenant.name,
            rate,
            publish,
            "minute",
            wait,
        ));
    }
    let bytes = read_limited(&headers, body, tenant.limits.component_bytes).await?;
    let published = state
        .registry
        .publish(
            &tenant.name,
            &name,
            &version,
            bytes,
            tenant.limits.storage_bytes,
        )
        .await
        .map_err(|e| match e {
            PublishError::InvalidName(_) => ApiError::unprocessable("invalid_name", e.to_string()),
            PublishError::InvalidVersion(_) => {
                ApiError::unprocessable("invalid_version", e.to_string())
            }
            PublishError::QuotaExceeded { .. } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "quota_exceeded",
                e.to_string(),
            ),
            PublishError::Component(e) => {
                ApiError::unprocessable("invalid_component", e.to_string())
            }
            PublishError::Backend(e) => e.into(),
        })?;
    let (status, record) = match published {
        Published::Created(r) => {
            tracing::info!(tenant = %tenant.name, component = %r.name, version = %r.version, digest = %r.digest, "component published");
            (StatusCode::CREATED, r)
        }
        Published::Unchanged(r) => (StatusCode::OK, r),
        Published::Conflict(r) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "version_exists",
                format!(
                    "{}@{} is already published with other bytes ({}); versions never change: publish a new version",
                    r.name, r.version, r.digest
                ),
            ));
        }
    };
    Ok((
        status,
        Json(PublishedVersion {
            name: record.name,
            version: record.version,
            digest: record.digest,
            size: record.size,
        }),
    ))
}

/// One version of a component.
#[utoipa::path(get, path = "/v1/components/{name}/{version}", tag = "components", operation_id = "get_component",
    params(
        ("name" = String, Path, description = "Component name"),
        ("version" = String, Path, description = "Semantic version"),
    ),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The version", body = VersionInfo),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 404, description = "No such component or version", body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<VersionInfo>, ApiError> {
    let not_found = || ApiError::not_found(format_args!("component {name}@{version}"));
    let Ok(wanted) = Version::parse(&version) else {
        return Err(not_found());
    };
    let versions = state.store().versions(&tenant.name, &name).await?;
    let record: VersionRecord = versions
        .into_iter()
        .find(|v| Version::parse(&v.version).ok().as_ref() == Some(&wanted))
        .ok_or_else(not_found)?;
    Ok(Json(VersionInfo {
        name: record.name,
        version: record.version,
        digest: record.digest,
        size: record.size,
        published_at: rfc3339(record.published_at),
    }))
}

/// The tenant's components and their versions.
#[utoipa::path(get, path = "/v1/components", tag = "components", operation_id = "list_components",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Every component of the tenant", body = ComponentList),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
) -> Result<Json<ComponentList>, ApiError> {
    let mut components = Vec::new();
    for name in state.registry.component_names(&tenant.name).await? {
        let mut versions: Vec<Version> = state
            .store()
            .versions(&tenant.name, &name)
            .await?
            .iter()
            .filter_map(|v| Version::parse(&v.version).ok())
            .collect();
        versions.sort();
        components.push(ComponentVersions {
            name,
            versions: versions.iter().map(Version::to_string).collect(),
        });
    }
    Ok(Json(ComponentList { components }))
}
