//! Tenants, API keys and per-tenant rate limits.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};

use super::auth::Admin;
use super::body::{JsonBody, object};
use super::error::ErrorBody;
use super::{ApiError, AppState};
use crate::backend::{Limits, TenantRecord};
use crate::scheduler::clock::rfc3339;
use crate::workflow::is_valid_name;

/// SHA-256 of a secret (API key or admin token).
pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// A new API key: `weft_` and 256 random bits as hex.
pub fn new_api_key() -> String {
    format!("weft_{}", hex::encode(rand::random::<[u8; 32]>()))
}

/// A new tenant record holding one fresh key; returns the record and the key.
pub fn new_tenant(name: &str, limits: Limits, now: u64) -> (TenantRecord, String) {
    let key = new_api_key();
    let record = TenantRecord {
        name: name.to_string(),
        key_hashes: vec![hex::encode(hash_secret(&key))],
        limits,
        created_at: now,
    };
    (record, key)
}

/// Submission rate limiters, one per tenant, kept on this node.
#[derive(Default)]
pub struct RateLimits {
    limiters: Mutex<HashMap<String, (u32, Arc<DefaultDirectRateLimiter>)>>,
}

impl RateLimits {
    /// Takes one submission from the tenant's allowance; `Err(seconds to wait)`
    /// when there is none left.
    pub fn check(&self, tenant: &str, per_second: u32) -> Result<(), u64> {
        self.take(tenant, per_second, Quota::per_second)
    }

    /// The same with an allowance per minute (bursts of as many).
    pub fn check_per_minute(&self, tenant: &str, per_minute: u32) -> Result<(), u64> {
        self.take(tenant, per_minute, Quota::per_minute)
    }

    fn take(&self, tenant: &str, rate: u32, quota: fn(NonZeroU32) -> Quota) -> Result<(), u64> {
        let limiter = {
            let mut limiters = self.limiters.lock().unwrap_or_else(|e| e.into_inner());
            match limiters.get(tenant) {
                Some((r, limiter)) if *r == rate => limiter.clone(),
                _ => {
                    let n = NonZeroU32::new(rate.max(1)).expect("at least one");
                    let limiter = Arc::new(RateLimiter::direct(quota(n)));
                    limiters.insert(tenant.to_string(), (rate, limiter.clone()));
                    limiter
                }
            }
        };
        limiter.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            wait.as_secs_f64().ceil().max(1.0) as u64
        })
    }
}

/// The 429 of a tenant over one of its rates: `rate` `things` per `per`.
pub fn rate_limited(tenant: &str, rate: u32, things: &str, per: &str, wait: u64) -> ApiError {
    ApiError::too_many(
        "rate_limited",
        format!("tenant {tenant:?} may {things} {rate} per {per}; retry after {wait} s"),
        wait,
    )
}

/// `POST /v1/tenants` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// Lowercase letters, digits, `_` and `-`, starting with a letter.
    #[schema(pattern = "^[a-z][a-z0-9_-]{0,62}$")]
    pub name: String,
    /// Limits other than the defaults.
    #[serde(default, deserialize_with = "object")]
    pub limits: Option<LimitsPatch>,
}

/// Some limits; those left out keep their value.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsPatch {
    #[serde(default, deserialize_with = "whole")]
    #[schema(minimum = 1, maximum = 2_147_483_647)]
    pub concurrent_runs: Option<u32>,
    #[serde(default, deserialize_with = "whole")]
    #[schema(minimum = 1, maximum = 2_147_483_647)]
    pub runs_per_second: Option<u32>,
    #[serde(default, deserialize_with = "whole")]
    #[schema(minimum = 1, maximum = 9_223_372_036_854_775_807_i64)]
    pub component_bytes: Option<u64>,
    #[serde(default, deserialize_with = "whole")]
    #[schema(minimum = 1, maximum = 9_223_372_036_854_775_807_i64)]
    pub fuel: Option<u64>,
    #[serde(default, deserialize_with = "whole")]
    #[schema(minimum = 1, maximum = 4096)]
    pub memory_mb: Option<u32>,
    #[serde(default, deserialize_with = "whole")]
    #[schema(minimum = 1, maximum = 86_400_000)]
    pub timeout_ms: Option<u64>,
    #[serde(default, deserialize_with = "whole")]
    #[schema(minimum = 1, maximum = 9_223_372_036_854_775_807_i64)]
    pub output_bytes: Option<u64>,
    #[serde(default, deserialize_with = "whole")]
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub steps_per_run: Option<u32>,
    #[serde(default, deserialize_with = "whole")]
    #[schema(minimum = 1, maximum = 9_223_372_036_854_775_807_i64)]
    pub input_bytes: Option<u64>,
    #[serde(default, deserialize_with = "whole")]
    #[schema(minimum = 1, maximum = 9_223_372_036_854_775_807_i64)]
    pub run_bytes: Option<u64>,
    #[serde(default, deserialize_with = "whole")]
    #[schema(minimum = 1, maximum = 9_223_372_036_854_775_807_i64)]
    pub storage_bytes: Option<u64>,
    #[serde(default, deserialize_with = "whole")]
    #[schema(minimum = 1, maximum = 2_147_483_647)]
    pub publishes_per_minute: Option<u32>,
    #[serde(default, deserialize_with = "whole")]
    #[schema(minimum = 1, maximum = 87_600)]
    pub retention_hours: Option<u32>,
    #[serde(default, deserialize_with = "whole")]
    #[schema(minimum = 1, maximum = 1000)]
    pub max_deliveries: Option<u32>,
    /// Host patterns, replacing the tenant's list (`[]` allows nothing).
    #[schema(max_items = 1000, value_type = Option<Vec<HostEntry>>)]
    pub allowed_hosts: Option<Vec<String>>,
    #[serde(default, deserialize_with = "whole")]
    #[schema(minimum = 1, maximum = 100_000)]
    pub http_requests: Option<u32>,
    #[serde(default, deserialize_with = "whole")]
    #[schema(minimum = 1, maximum = 9_223_372_036_854_775_807_i64)]
    pub http_response_bytes: Option<u64>,
    #[serde(default, deserialize_with = "whole")]
    #[schema(minimum = 1, maximum = 1000)]
    pub weight: Option<u32>,
    #[serde(default, deserialize_with = "whole")]
    #[schema(minimum = 1, maximum = 2_147_483_647)]
    pub concurrent_steps: Option<u32>,
}

/// One entry of `allowed_hosts`: `api.example.com`, `*.example.com`,
/// `10.0.0.5:8080`, `[::1]:8080` (schema only).
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, pattern = r"^(\*\.)?[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?$")]
#[expect(dead_code, reason = "describes an entry for the OpenAPI document")]
pub struct HostEntry(String);

/// Most entries of a tenant's `allowed_hosts`.
pub const MAX_ALLOWED_HOSTS: usize = 1000;

/// Reads a limit that is a whole number, also when written `64.0`: JSON Schema,
/// and so the OpenAPI document, counts that as an integer; serde does not.
pub(super) fn whole<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    let whole = number.as_u64().or_else(|| {
        number
            .as_f64()
            .filter(|f| f.fract() == 0.0 && (0.0..=u64::MAX as f64).contains(f))
            .map(|f| f as u64)
    });
    whole
        .and_then(|n| T::try_from(n).ok())
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom(format!("{number} is not a whole number in range")))
}

/// Largest count a limit may be: what the document's `int32` format allows.
const MAX_INT32: u32 = i32::MAX as u32;
/// Largest size or amount a limit may be: what `int64` allows (and JSON
/// clients that read numbers as signed 64-bit integers).
const MAX_INT64: u64 = i64::MAX as u64;

impl LimitsPatch {
    /// The limits with this patch applied; `at` is the JSON Pointer of the
    /// patch in the request body, for the problems found.
    fn apply(&self, mut limits: Limits, at: &str) -> Result<Limits, ApiError> {
        fn set<T: Copy + PartialOrd + std::fmt::Display>(
            at: &str,
            field: &str,
            value: Option<T>,
            min: T,
            max: T,
            slot: &mut T,
            problems: &mut Vec<crate::workflow::Problem>,
        ) {
            if let Some(v) = value {
                if v < min || v > max {
                    problems.push(crate::workflow::Problem::new(
                        format!("{at}/{field}"),
                        format!("must be between {min} and {max}"),
                    ));
                } else {
                    *slot = v;
                }
            }
        }
        let mut p = Vec::new();
        let l = &mut limits;
        set(
            at,
            "concurrent_runs",
            self.concurrent_runs,
            1,
            MAX_INT32,
            &mut l.concurrent_runs,
            &mut p,
        );
        set(
            at,
            "runs_per_second",
            self.runs_per_second,
            1,
            MAX_INT32,
            &mut l.runs_per_second,
            &mut p,
        );
        set(
            at,
            "component_bytes",
            self.component_bytes,
            1,
            MAX_INT64,
            &mut l.component_bytes,
            &mut p,
        );
        set(at, "fuel", self.fuel, 1, MAX_INT64, &mut l.fuel, &mut p);
        set(
            at,
            "memory_mb",
            self.memory_mb,
            1,
            4096,
            &mut l.memory_mb,
            &mut p,
        );
        set(
            at,
            "timeout_ms",
            self.timeout_ms,
            1,
            86_400_000,
            &mut l.timeout_ms,
            &mut p,
        );
        set(
            at,
            "output_bytes",
            self.output_bytes,
            1,
            MAX_INT64,
            &mut l.output_bytes,
            &mut p,
        );
        set(
            at,
            "steps_per_run",
            self.steps_per_run,
            1,
            1_000_000,
            &mut l.steps_per_run,
            &mut p,
        );
        set(
            at,
            "input_bytes",
            self.input_bytes,
            1,
            MAX_INT64,
            &mut l.input_bytes,
            &mut p,
        );
        set(
            at,
            "run_bytes",
            self.run_bytes,
            1,
            MAX_INT64,
            &mut l.run_bytes,
            &mut p,
        );
        set(
            at,
            "storage_bytes",
            self.storage_bytes,
            1,
            MAX_INT64,
            &mut l.storage_bytes,
            &mut p,
        );
        set(
            at,
            "publishes_per_minute",
            self.publishes_per_minute,
            1,
            MAX_INT32,
            &mut l.publishes_per_minute,
            &mut p,
        );
        // Ten years.
        set(
            at,
            "retention_hours",
            self.retention_hours,
            1,
            87_600,
            &mut l.retention_hours,
            &mut p,
        );
        set(
            at,
            "max_deliveries",
            self.max_deliveries,
            1,
            1000,
            &mut l.max_deliveries,
            &mut p,
        );
        set(
            at,
            "http_requests",
            self.http_requests,
            1,
            100_000,
            &mut l.http_requests,
            &mut p,
        );
        set(
            at,
            "http_response_bytes",
            self.http_response_bytes,
            1,
            MAX_INT64,
            &mut l.http_response_bytes,
            &mut p,
        );
        set(
            at,
            "weight",
            self.weight,
            1,
            crate::scheduler::flow::MAX_WEIGHT,
            &mut l.weight,
            &mut p,
        );
        set(
            at,
            "concurrent_steps",
            self.concurrent_steps,
            1,
            MAX_INT32,
            &mut l.concurrent_steps,
            &mut p,
        );
        if let Some(hosts) = &self.allowed_hosts {
            if hosts.len() > MAX_ALLOWED_HOSTS {
                p.push(crate::workflow::Problem::new(
                    format!("{at}/allowed_hosts"),
                    format!("at most {MAX_ALLOWED_HOSTS} entries"),
                ));
            }
            for (i, host) in hosts.iter().enumerate().take(MAX_ALLOWED_HOSTS) {
                if let Err(why) = crate::capability::hosts::HostPattern::parse(host) {
                    p.push(crate::workflow::Problem::new(
                        format!("{at}/allowed_hosts/{i}"),
                        why,
                    ));
                }
            }
            l.allowed_hosts = hosts.clone();
        }
        if p.is_empty() {
            Ok(limits)
        } else {
            Err(
                ApiError::unprocessable("invalid_request", "a limit is out of range")
                    .with_details(p),
            )
        }
    }
}

/// A new tenant and its API key (shown once; only its hash is kept).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedTenant {
    pub tenant: String,
    pub api_key: String,
}

/// A tenant as the admin sees it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TenantInfo {
    pub tenant: String,
    pub limits: Limits,
    /// RFC 3339
    pub created_at: String,
}

/// Create a tenant (admin).
#[utoipa::path(post, path = "/v1/tenants", tag = "tenants", operation_id = "create_tenant",
    request_body = CreateTenant,
    security(("admin_token" = [])),
    responses(
        (status = 201, description = "Created; the API key is shown only now", body = CreatedTenant),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Not the admin token", body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Invalid name or limits", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    _admin: Admin,
    JsonBody { value: req, .. }: JsonBody<CreateTenant>,
) -> Result<(StatusCode, Json<CreatedTenant>), ApiError> {
    if !is_valid_name(&req.name) {
        return Err(ApiError::unprocessable(
            "invalid_name",
            format!(
                "invalid tenant name {:?}: use lowercase letters, digits, `_` and `-`, starting with a letter (at most 63)",
                req.name
            ),
        ));
    }
    let limits = match &req.limits {
        Some(patch) => patch.apply(Limits::default(), "/limits")?,
        None => Limits::default(),
    };
    let now = state.scheduler.clock().now();
    let (record, key) = new_tenant(&req.name, limits, now);
    if !state.store().create_tenant(record).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "tenant_exists",
            format!("a tenant named {:?} already exists", req.name),
        ));
    }
    tracing::info!(tenant = %req.name, "tenant created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedTenant {
            tenant: req.name,
            api_key: key,
        }),
    ))
}

/// A tenant and its limits (admin).
#[utoipa::path(get, path = "/v1/tenants/{name}", tag = "tenants", operation_id = "get_tenant",
    params(("name" = String, Path, description = "Tenant name")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The tenant", body = TenantInfo),
        (status = 401, description = "Not the admin token", body = ErrorBody),
        (status = 404, description = "No such tenant", body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    _admin: Admin,
    Path(name): Path<String>,
) -> Result<Json<TenantInfo>, ApiError> {
    let tenant = state
        .store()
        .tenant(&name)
        .await?
        .ok_or_else(|| ApiError::not_found(format_args!("tenant {name:?}")))?;
    Ok(Json(TenantInfo {
        tenant: tenant.name,
        limits: tenant.limits,
        created_at: rfc3339(tenant.created_at),
    }))
}

/// Change some of a tenant's limits (admin); runs already submitted keep theirs.
#[utoipa::path(put, path = "/v1/tenants/{name}/limits", tag = "tenants", operation_id = "set_tenant_limits",
    params(("name" = String, Path, description = "Tenant name")),
    request_body = LimitsPatch,
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The tenant's limits after the change", body = Limits),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Not the admin token", body = ErrorBody),
        (status = 404, description = "No such tenant", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "A limit out of range", body = ErrorBody),
    ))]
pub async fn set_limits(
    State(state): State<AppState>,
    _admin: Admin,
    Path(name): Path<String>,
    JsonBody { value: patch, .. }: JsonBody<LimitsPatch>,
) -> Result<Json<Limits>, ApiError> {
    let not_found = || ApiError::not_found(format_args!("tenant {name:?}"));
    let tenant = state.store().tenant(&name).await?.ok_or_else(not_found)?;
    let limits = patch.apply(tenant.limits, "")?;
    if !state.store().set_limits(&name, limits.clone()).await? {
        return Err(not_found());
    }
    Ok(Json(limits))
}
