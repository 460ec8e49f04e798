//! The tenant's schedules: a published workflow started on a cron clock in
//! a timezone. Every node's tick loop (`ticker`) fires them.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::auth::Tenant;
use super::body::JsonBody;
use super::error::ErrorBody;
use super::{ApiError, AppState};
use crate::backend::{Schedule, ScheduleError};
use crate::scheduler::clock::rfc3339;
use crate::scheduler::schedule::{CatchUp, Cron, Overlap};
use crate::workflow::is_valid_name;

/// Most schedules one tenant keeps.
pub const MAX_SCHEDULES: usize = 100;

/// Longest cron pattern and timezone name.
const MAX_PATTERN: usize = 256;

/// Largest input a schedule keeps for its runs, as JSON.
pub const MAX_SCHEDULE_INPUT: usize = 256 << 10;

/// `POST /v1/schedules` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({"name": "nightly", "cron": "0 3 * * *", "timezone": "Europe/Berlin",
    "workflow": "report@^1", "input": {"day": "yesterday"}})))]
pub struct ScheduleBody {
    /// Lowercase letters, digits, `_` and `-`, starting with a letter (at most 63).
    #[schema(pattern = "^[a-z][a-z0-9_-]{0,62}$")]
    pub name: String,
    /// Five fields (minute hour day month weekday), or six with seconds first.
    pub cron: String,
    /// An IANA timezone, `UTC` when left out; ticks keep their wall-clock
    /// time across daylight-saving changes.
    #[serde(default)]
    pub timezone: Option<String>,
    /// A published workflow template, `name@requirement` (e.g. `report@^1`):
    /// each tick runs the highest version matching then.
    pub workflow: String,
    /// Each run's input; `{}` when left out (at most 256 KiB).
    #[serde(default)]
    pub input: Option<serde_json::Value>,
    /// What a tick does while the previous run has not ended (default `skip`).
    #[serde(default)]
    pub overlap: Overlap,
    /// What ticks missed while no node ran get (default `latest`).
    #[serde(default)]
    pub catch_up: CatchUp,
    /// Create it paused.
    #[serde(default)]
    pub paused: bool,
}

/// A schedule as the API shows it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScheduleView {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub workflow: String,
    pub input: serde_json::Value,
    pub overlap: Overlap,
    pub catch_up: CatchUp,
    pub paused: bool,
    pub created_at: String,
    /// When the next tick is due (absent while paused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_tick: Option<String>,
    /// The newest tick handled, fired or skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_tick: Option<String>,
    /// The run the newest fired tick started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<String>,
    /// Why the newest tick that could not start its run could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<ScheduleError>,
}

impl From<Schedule> for ScheduleView {
    fn from(s: Schedule) -> Self {
        Self {
            name: s.name,
            cron: s.cron,
            timezone: s.timezone,
            workflow: s.workflow,
            input: s.input,
            overlap: s.overlap,
            catch_up: s.catch_up,
            paused: s.paused,
            created_at: rfc3339(s.created_at),
            next_tick: s.next_tick.map(rfc3339),
            last_tick: s.last_tick.map(rfc3339),
            last_run: s.last_run,
            last_error: s.last_error,
        }
    }
}

/// The tenant's schedules, by name.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScheduleList {
    pub schedules: Vec<ScheduleView>,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::unprocessable("invalid_schedule", message)
}

/// Create a schedule.
///
/// Each tick of `cron` in `timezone` starts one run of `workflow` with
/// `input`, however many nodes there are; the run carries `schedule` and
/// `scheduled_for`. The workflow and input are checked now as a submission
/// would check them.
#[utoipa::path(post, path = "/v1/schedules", tag = "schedules", operation_id = "create_schedule",
    request_body = ScheduleBody,
    security(("api_key" = [])),
    responses(
        (status = 201, description = "Created", body = ScheduleView),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 409, description = "A schedule of this name exists (`schedule_exists`), or the tenant has 100 (`too_many_schedules`)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "A bad name, pattern, timezone or input (`invalid_schedule`), or a workflow or input a run would refuse (`invalid_workflow`, `invalid_input`)", body = ErrorBody),
        (status = 503, description = "The backend cannot be reached", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    JsonBody { value: body, .. }: JsonBody<ScheduleBody>,
) -> Result<(StatusCode, Json<ScheduleView>), ApiError> {
    if !is_valid_name(&body.name) {
        return Err(invalid(
            "a schedule name is lowercase letters, digits, `_` and `-`, starting with a letter (at most 63)",
        ));
    }
    let timezone = body.timezone.unwrap_or_else(|| "UTC".to_string());
    if body.cron.len() > MAX_PATTERN || timezone.len() > MAX_PATTERN {
        return Err(invalid(format!(
            "cron and timezone are at most {MAX_PATTERN} bytes"
        )));
    }
    let cron = Cron::parse(&body.cron, &timezone).map_err(invalid)?;
    let now = state.scheduler.clock().now();
    let Some(first) = cron.next_after(now) else {
        return Err(invalid(format!("{:?} never ticks", body.cron)));
    };
    let input = body.input.unwrap_or_else(|| serde_json::json!({}));
    if serde_json::to_vec(&input).map_or(usize::MAX, |v| v.len()) > MAX_SCHEDULE_INPUT {
        return Err(invalid("a schedule's input is at most 256 KiB of JSON"));
    }
    if !body.workflow.contains('@') {
        return Err(invalid(
            "workflow names a published template, such as \"report@^1\" (weft workflow publish)",
        ));
    }
    let workflow = serde_json::Value::String(body.workflow.clone());
    super::start::prepare(&state, &tenant, workflow, Some(input.clone()), 0).await?;
    let existing = state.store().schedules(&tenant.name).await?;
    if existing.iter().any(|s| s.name == body.name) {
        return Err(exists(&body.name));
    }
    if existing.len() >= MAX_SCHEDULES {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_many_schedules",
            format!("the tenant has {MAX_SCHEDULES} schedules already; delete one first"),
        ));
    }
    let schedule = Schedule {
        name: body.name,
        cron: body.cron,
        timezone,
        workflow: body.workflow,
        input,
        overlap: body.overlap,
        catch_up: body.catch_up,
        paused: body.paused,
        created_at: now,
        after: now,
        next_tick: (!body.paused).then_some(first),
        last_tick: None,
        last_run: None,
        last_error: None,
        version: 1,
    };
    if !state
        .store()
        .create_schedule(&tenant.name, schedule.clone())
        .await?
    {
        return Err(exists(&schedule.name));
    }
    Ok((StatusCode::CREATED, Json(schedule.into())))
}

fn exists(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "schedule_exists",
        format!("schedule {name:?} exists; delete it first to replace it"),
    )
}

/// The tenant's schedules.
#[utoipa::path(get, path = "/v1/schedules", tag = "schedules", operation_id = "list_schedules",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "By name", body = ScheduleList),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 503, description = "The backend cannot be reached", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
) -> Result<Json<ScheduleList>, ApiError> {
    let schedules = state.store().schedules(&tenant.name).await?;
    Ok(Json(ScheduleList {
        schedules: schedules.into_iter().map(ScheduleView::from).collect(),
    }))
}

async fn find(state: &AppState, tenant: &str, name: &str) -> Result<Schedule, ApiError> {
    state
        .store()
        .schedule(tenant, name)
        .await?
        .ok_or_else(|| ApiError::not_found(format_args!("schedule {name:?}")))
}

/// One schedule.
#[utoipa::path(get, path = "/v1/schedules/{name}", tag = "schedules", operation_id = "get_schedule",
    params(("name" = String, Path, description = "Schedule name")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The schedule", body = ScheduleView),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 404, description = "No such schedule", body = ErrorBody),
        (status = 503, description = "The backend cannot be reached", body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(name): Path<String>,
) -> Result<Json<ScheduleView>, ApiError> {
    Ok(Json(find(&state, &tenant.name, &name).await?.into()))
}

/// Delete a schedule; the runs it started go on.
#[utoipa::path(delete, path = "/v1/schedules/{name}", tag = "schedules", operation_id = "delete_schedule",
    params(("name" = String, Path, description = "Schedule name")),
    security(("api_key" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 404, description = "No such schedule", body = ErrorBody),
        (status = 503, description = "The backend cannot be reached", body = ErrorBody),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state.store().delete_schedule(&tenant.name, &name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format_args!("schedule {name:?}")))
    }
}

/// Pause a schedule: its ticks start nothing until it is resumed.
#[utoipa::path(post, path = "/v1/schedules/{name}/pause", tag = "schedules", operation_id = "pause_schedule",
    params(("name" = String, Path, description = "Schedule name")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Paused (also when it was)", body = ScheduleView),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 404, description = "No such schedule", body = ErrorBody),
        (status = 503, description = "The backend cannot be reached", body = ErrorBody),
    ))]
pub async fn pause(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(name): Path<String>,
) -> Result<Json<ScheduleView>, ApiError> {
    let paused = change(&state, &tenant.name, &name, |s, _| {
        s.paused = true;
        s.next_tick = None;
    })
    .await?;
    Ok(Json(paused.into()))
}

/// Resume a paused schedule: from its next tick on; the ticks it missed
/// while paused start nothing.
#[utoipa::path(post, path = "/v1/schedules/{name}/resume", tag = "schedules", operation_id = "resume_schedule",
    params(("name" = String, Path, description = "Schedule name")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Resumed (also when it was not paused)", body = ScheduleView),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 404, description = "No such schedule", body = ErrorBody),
        (status = 503, description = "The backend cannot be reached", body = ErrorBody),
    ))]
pub async fn resume(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(name): Path<String>,
) -> Result<Json<ScheduleView>, ApiError> {
    let resumed = change(&state, &tenant.name, &name, |s, now| {
        if s.paused {
            s.paused = false;
            s.after = now;
            s.next_tick = Cron::parse(&s.cron, &s.timezone)
                .ok()
                .and_then(|c| c.next_after(now));
        }
    })
    .await?;
    Ok(Json(resumed.into()))
}

/// Applies `edit` to the stored schedule, again over a newer version when a
/// node's tick changed it meanwhile.
async fn change(
    state: &AppState,
    tenant: &str,
    name: &str,
    edit: impl Fn(&mut Schedule, crate::scheduler::clock::Millis),
) -> Result<Schedule, ApiError> {
    loop {
        let mut schedule = find(state, tenant, name).await?;
        schedule.version += 1;
        edit(&mut schedule, state.scheduler.clock().now());
        if state
            .store()
            .update_schedule(tenant, schedule.clone())
            .await?
        {
            return Ok(schedule);
        }
    }
}
