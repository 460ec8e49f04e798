//! Validating workflows, submitting, reading and cancelling runs (the
//! checks and the start itself are in `start`).

use super::auth::Tenant;
use super::body::JsonBody;
use super::error::ErrorBody;
use super::start::{Start, check_document, start_run};
use super::{ApiError, AppState};
use crate::backend::listing::{self, RunQuery, RunsPage};
use crate::backend::{Cancelled, Idempotency};
use crate::scheduler::flow;
use crate::scheduler::model::{ItemsPage, RunStatus, RunView};
use crate::telemetry::TraceContext;
use crate::workflow;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `POST /v1/runs` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({"workflow": example_workflow(), "input": {"name": "ada"}})))]
pub struct RunRequest {
    /// The workflow document, or a published template as `"name@requirement"`
    /// (e.g. `"orders@^1.2"`): the highest matching version, pinned in the run.
    #[schema(value_type = Object)]
    pub workflow: serde_json::Value,
    /// The run's input; `{}` when left out.
    #[serde(default)]
    pub input: Option<serde_json::Value>,
    /// 0 to 9, default 5: within the tenant, ready steps of runs of higher
    /// priority are taken first.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 9)]
    pub priority: Option<u8>,
    /// When to start the run (RFC 3339), at most 365 days ahead; it is
    /// `scheduled` until then, and may be cancelled meanwhile. A time that
    /// has passed starts it at once. Not together with `delay_ms`.
    #[serde(default)]
    #[schema(format = DateTime)]
    pub start_at: Option<String>,
    /// Start the run this many milliseconds from now (at most 365 days).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 31_536_000_000_i64)]
    pub delay_ms: Option<u64>,
}

/// A workflow that runs on a fresh `weft serve`: `echo` is one of the example
/// components published for tenant `default`.
fn example_workflow() -> serde_json::Value {
    serde_json::json!({
        "name": "hello",
        "steps": [{"id": "say", "component": "echo@1", "input": {"text": "hello, ${input.name}"}}],
        "output": "${steps.say.output.text}",
    })
}

/// A run's id and status.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunRef {
    pub id: String,
    pub status: RunStatus,
}

/// The answer of a successful validation.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Valid {
    pub valid: bool,
}

/// Check a workflow document without running it.
#[utoipa::path(post, path = "/v1/workflows/validate", tag = "workflows", operation_id = "validate_workflow",
    request_body(content = Object, description = "A workflow document", example = example_workflow),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The document is valid for this tenant", body = Valid),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Every problem, with its JSON Pointer", body = ErrorBody),
    ))]
pub async fn validate(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    JsonBody {
        value: document,
        bytes,
    }: JsonBody<serde_json::Value>,
) -> Result<Json<Valid>, ApiError> {
    let (validated, _) = check_document(&state, &tenant, document, bytes.len()).await?;
    super::children::plan_root(&state, &tenant, &validated.workflow).await?;
    Ok(Json(Valid { valid: true }))
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bad = || ApiError::bad_request("Idempotency-Key must be 1 to 255 visible ASCII characters");
    let key = value.to_str().map_err(|_| bad())?;
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad());
    }
    Ok(Some(key.to_string()))
}

fn accepted(id: &str, status: RunStatus) -> Response {
    let mut response = (
        StatusCode::ACCEPTED,
        Json(RunRef {
            id: id.to_string(),
            status,
        }),
    )
        .into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/runs/{id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// Submit a run of a workflow.
///
/// Every `name@requirement` is resolved against the tenant's registry and the
/// digest pinned in the run. With `Idempotency-Key`, the same key and body
/// return the run the first request created.
#[utoipa::path(post, path = "/v1/runs", tag = "runs", operation_id = "submit_run",
    request_body = RunRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries of this request safe: 1 to 255 visible ASCII characters",
        min_length = 1, max_length = 255, pattern = "^[!-~]{1,255}$"),
        ("traceparent" = Option<String>, Header, description = "A W3C trace context: the run's trace becomes a child of this span (one that is not valid is ignored)")),
    security(("api_key" = [])),
    responses(
        (status = 202, description = "Accepted; `Location` is the run's URL", body = RunRef,
            headers(("Location" = String, description = "/v1/runs/{id}"))),
        (status = 400, description = "Malformed JSON or header", body = ErrorBody),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Invalid workflow or input, or a reused Idempotency-Key", body = ErrorBody),
        (status = 429, description = "Too many unfinished runs, or submitting too fast", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn submit(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    headers: HeaderMap,
    JsonBody {
        value: request,
        bytes,
    }: JsonBody<RunRequest>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let priority = request.priority.unwrap_or(flow::DEFAULT_PRIORITY);
    if priority > flow::MAX_PRIORITY {
        return Err(ApiError::unprocessable(
            "invalid_request",
            format!("priority {priority} is not 0 to 9"),
        ));
    }
    if let Err(wait) = state
        .rates
        .check(&tenant.name, tenant.limits.runs_per_second)
    {
        let rate = tenant.limits.runs_per_second;
        let submit = "submit runs:";
        return Err(super::tenants::rate_limited(
            &tenant.name,
            rate,
            submit,
            "second",
            wait,
        ));
    }
    let start = Start {
        workflow: request.workflow,
        input: request.input,
        priority,
        start_at: request.start_at,
        delay_ms: request.delay_ms,
        idempotency: key.map(|key| Idempotency {
            key,
            fingerprint: hex::encode(Sha256::digest(&bytes)),
        }),
        schedule: None,
        trace: headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(TraceContext::from_traceparent),
        size: bytes.len(),
    };
    let (id, status) = start_run(&state, &tenant, start).await?;
    Ok(accepted(&id, status))
}

/// A run: every step with status, attempts, digest, output or error.
#[utoipa::path(get, path = "/v1/runs/{id}", tag = "runs", operation_id = "get_run",
    params(("id" = String, Path, description = "Run id")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The run", body = RunView),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 404, description = "No such run", body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    match state.store().run(&tenant.name, &id).await? {
        Some(view) => Ok(super::run_body::response(view).await),
        None => Err(ApiError::not_found(format_args!("run {id:?}"))),
    }
}

/// Cancel a run that has not finished: steps not started are skipped, running
/// ones stopped at their next epoch tick.
#[utoipa::path(post, path = "/v1/runs/{id}/cancel", tag = "runs", operation_id = "cancel_run",
    params(("id" = String, Path, description = "Run id")),
    security(("api_key" = [])),
    responses(
        (status = 202, description = "Cancelled", body = RunRef),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 404, description = "No such run", body = ErrorBody),
        (status = 409, description = "The run has already ended", body = ErrorBody),
    ))]
pub async fn cancel(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<RunRef>), ApiError> {
    match state.scheduler.cancel(&tenant.name, &id).await? {
        None => Err(ApiError::not_found(format_args!("run {id:?}"))),
        Some(Cancelled::AlreadyEnded(status)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "run_finished",
            format!("run {id:?} has already ended ({})", status.as_str()),
        )),
        Some(Cancelled::Now { status, .. }) => {
            Ok((StatusCode::ACCEPTED, Json(RunRef { id, status })))
        }
    }
}

/// `GET /v1/runs` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RunsQuery {
    /// Only runs with this status.
    pub status: Option<RunStatus>,
    /// Only runs of this workflow (a template's name, or a document's `name`).
    pub workflow: Option<String>,
    /// Runs per page, 1 to 500; 50 when left out.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// Where the page starts: `next_cursor` of the page before; the first page without it.
    #[param(pattern = "^(run_[0-9a-fA-F]{1,64})?$")]
    pub cursor: Option<String>,
}

/// The tenant's runs, newest first, a page at a time.
///
/// A page reads only its own runs. With a filter, a page looks at up to
/// 5,000 runs and may then hold fewer than `limit`: follow `next_cursor`
/// until it is null.
#[utoipa::path(get, path = "/v1/runs", tag = "runs", operation_id = "list_runs",
    params(RunsQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "A page of runs", body = RunsPage),
        (status = 400, description = "Bad filter, cursor or limit", body = ErrorBody),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    query: Result<axum::extract::Query<RunsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<RunsPage>, ApiError> {
    let bad = ApiError::bad_request;
    let axum::extract::Query(query) = query.map_err(|e| bad(e.body_text()))?;
    let limit = query.limit.unwrap_or(listing::DEFAULT_LIMIT);
    if !(1..=listing::MAX_LIMIT).contains(&limit) {
        return Err(bad(format!(
            "limit must be 1 to {}, not {limit}",
            listing::MAX_LIMIT
        )));
    }
    let after = match query.cursor.filter(|c| !c.is_empty()) {
        Some(c) if listing::is_cursor(&c) => Some(c),
        Some(c) => {
            let shown: String = c.chars().take(100).collect();
            return Err(bad(format!("cursor {shown:?} is not one this API gave")));
        }
        None => None,
    };
    if let Some(w) = &query.workflow
        && w.len() > 256
    {
        return Err(bad("workflow must be at most 256 bytes".to_string()));
    }
    let query = RunQuery {
        status: query.status,
        workflow: query.workflow,
        after,
        limit,
    };
    Ok(Json(state.store().list_runs(&tenant.name, &query).await?))
}

/// `GET /v1/runs/{id}/steps/{step}/items` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ItemsQuery {
    /// Where the page starts: `next_cursor` of the page before; the first page without it.
    #[param(pattern = "^([0-9]{1,9})?$")]
    pub cursor: Option<String>,
    /// Items per page, 1 to 1000; 100 when left out.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// Most items in one page.
const MAX_ITEMS_PAGE: u32 = 1_000;

/// The items of a for_each step, in item order: status, attempts, output or
/// error, times.
#[utoipa::path(get, path = "/v1/runs/{id}/steps/{step}/items", tag = "runs", operation_id = "list_items",
    params(
        ("id" = String, Path, description = "Run id"),
        ("step" = String, Path, description = "Step id"),
        ItemsQuery,
    ),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "A page of items", body = ItemsPage),
        (status = 400, description = "Bad cursor or limit", body = ErrorBody),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 404, description = "No such run or step", body = ErrorBody),
    ))]
pub async fn items(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path((id, step)): Path<(String, String)>,
    query: Result<axum::extract::Query<ItemsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ItemsPage>, ApiError> {
    let bad = ApiError::bad_request;
    let axum::extract::Query(query) = query.map_err(|e| bad(e.body_text()))?;
    let cursor = match query.cursor.as_deref() {
        None | Some("") => 0,
        Some(c) => c
            .parse::<u32>()
            .map_err(|_| bad(format!("cursor {c:?} is not one this API gave")))?,
    };
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_ITEMS_PAGE).contains(&limit) {
        return Err(bad(format!(
            "limit must be 1 to {MAX_ITEMS_PAGE}, not {limit}"
        )));
    }
    state
        .store()
        .items(&tenant.name, &id, &step, cursor, limit)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format_args!("step {step:?} of run {id:?}")))
}

/// The JSON Schema (Draft 2020-12) of the workflow document.
#[utoipa::path(get, path = "/v1/workflows/schema", tag = "workflows", operation_id = "workflow_schema",
    responses((status = 200, description = "The schema", body = Object)))]
pub async fn schema() -> Json<serde_json::Value> {
    Json(workflow::document_schema().clone())
}
