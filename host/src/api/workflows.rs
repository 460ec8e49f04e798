//! Workflow templates: documents published once under a name and version,
//! and started by `POST /v1/runs` with `"workflow": "name@requirement"`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use semver::Version;
use serde::{Deserialize, Serialize};

use super::auth::Tenant;
use super::body::JsonBody;
use super::error::ErrorBody;
use super::{ApiError, AppState};
use crate::backend::{Published, VersionRecord};
use crate::registry::PublishError;
use crate::scheduler::clock::rfc3339;
use crate::workflow::is_valid_name;

/// A template version as publishing and reading report it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TemplateInfo {
    pub name: String,
    pub version: String,
    /// `sha256:<hex>` of the document as compact JSON with sorted keys.
    pub digest: String,
    /// RFC 3339
    pub published_at: String,
}

/// One template version with its document.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TemplateVersion {
    #[serde(flatten)]
    pub info: TemplateInfo,
    #[schema(value_type = Object)]
    pub document: serde_json::Value,
}

/// The tenant's templates.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TemplateList {
    pub workflows: Vec<TemplateVersions>,
}

/// A template and its versions, lowest first.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TemplateVersions {
    pub name: String,
    pub versions: Vec<String>,
}

fn info(record: VersionRecord) -> TemplateInfo {
    TemplateInfo {
        name: record.name,
        version: record.version,
        digest: record.digest,
        published_at: rfc3339(record.published_at),
    }
}

/// Publish a workflow template; versions are immutable.
///
/// The body is a workflow document, validated as a submission would be
/// (its components must be published). Runs naming the template pin the
/// version they resolved to at submission.
#[utoipa::path(put, path = "/v1/workflows/{name}/{version}", tag = "workflows", operation_id = "publish_workflow",
    params(
        ("name" = String, Path, description = "Template name", pattern = "^[a-z][a-z0-9_-]{0,62}$"),
        ("version" = String, Path, description = "Semantic version, e.g. 1.2.0", pattern = r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"),
    ),
    request_body(content = Object, description = "A workflow document"),
    security(("api_key" = [])),
    responses(
        (status = 201, description = "Published", body = TemplateInfo),
        (status = 200, description = "The same document was already published as this version", body = TemplateInfo),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 409, description = "Another document is published as this version", body = ErrorBody),
        (status = 413, description = "Body too large, or over the tenant's storage", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "An invalid document, name or version", body = ErrorBody),
        (status = 429, description = "Publishing faster than the tenant's publishes_per_minute", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn publish(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path((name, version)): Path<(String, String)>,
    JsonBody {
        value: document,
        bytes,
    }: JsonBody<serde_json::Value>,
) -> Result<(StatusCode, Json<TemplateInfo>), ApiError> {
    let version = check_name_and_version(&name, &version)?;
    if let Err(wait) = state
        .publishes
        .check_per_minute(&tenant.name, tenant.limits.publishes_per_minute)
    {
        let rate = tenant.limits.publishes_per_minute;
        return Err(super::tenants::rate_limited(
            &tenant.name,
            rate,
            "publish workflows:",
            "minute",
            wait,
        ));
    }
    let (_, document) =
        super::start::check_document(&state, &tenant, document, bytes.len()).await?;
    let published = state
        .registry
        .publish_template(
            &tenant.name,
            &name,
            &version,
            &document,
            tenant.limits.storage_bytes,
        )
        .await
        .map_err(|e| match e {
            PublishError::QuotaExceeded { .. } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "quota_exceeded",
                e.to_string(),
            ),
            PublishError::Backend(e) => e.into(),
            other => ApiError::unprocessable("invalid_workflow", other.to_string()),
        })?;
    match published {
        Published::Created(r) => {
            tracing::info!(tenant = %tenant.name, workflow = %r.name, version = %r.version, "workflow template published");
            Ok((StatusCode::CREATED, Json(info(r))))
        }
        Published::Unchanged(r) => Ok((StatusCode::OK, Json(info(r)))),
        Published::Conflict(r) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "version_exists",
            format!(
                "workflow {}@{} is already published with another document ({}); versions never change: publish a new version",
                r.name, r.version, r.digest
            ),
        )),
    }
}

fn check_name_and_version(name: &str, version: &str) -> Result<Version, ApiError> {
    if !is_valid_name(name) {
        return Err(ApiError::unprocessable(
            "invalid_name",
            format!(
                "invalid workflow name {name:?}: use lowercase letters, digits, `_` and `-`, starting with a letter"
            ),
        ));
    }
    Version::parse(version).map_err(|_| {
        ApiError::unprocessable(
            "invalid_version",
            format!("invalid version {version:?}: versions are semantic versions such as 1.2.3"),
        )
    })
}

/// One version of a workflow template, with its document.
#[utoipa::path(get, path = "/v1/workflows/{name}/{version}", tag = "workflows", operation_id = "get_workflow",
    params(
        ("name" = String, Path, description = "Template name"),
        ("version" = String, Path, description = "Semantic version"),
    ),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The version", body = TemplateVersion),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 404, description = "No such template or version", body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<TemplateVersion>, ApiError> {
    let not_found = || ApiError::not_found(format_args!("workflow {name}@{version}"));
    let (Ok(wanted), true) = (Version::parse(&version), is_valid_name(&name)) else {
        return Err(not_found());
    };
    let record = state
        .registry
        .template_versions(&tenant.name, &name)
        .await?
        .into_iter()
        .find(|v| Version::parse(&v.version).ok().as_ref() == Some(&wanted))
        .ok_or_else(not_found)?;
    let document = state.registry.template_document(&record).await?;
    Ok(Json(TemplateVersion {
        info: info(record),
        document,
    }))
}

/// The tenant's workflow templates and their versions.
#[utoipa::path(get, path = "/v1/workflows", tag = "workflows", operation_id = "list_workflows",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Every template of the tenant", body = TemplateList),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
) -> Result<Json<TemplateList>, ApiError> {
    let mut workflows = Vec::new();
    for name in state.registry.template_names(&tenant.name).await? {
        let mut versions: Vec<Version> = state
            .registry
            .template_versions(&tenant.name, &name)
            .await?
            .iter()
            .filter_map(|v| Version::parse(&v.version).ok())
            .collect();
        versions.sort();
        workflows.push(TemplateVersions {
            name,
            versions: versions.iter().map(Version::to_string).collect(),
        });
    }
    Ok(Json(TemplateList { workflows }))
}
