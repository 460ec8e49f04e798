//! Checking a workflow and its input for a tenant, and starting a run of
//! it: what `POST /v1/runs`, validation, schedules and sub-workflow plans
//! share.

use tracing::Instrument;

use super::{ApiError, AppState};
use crate::backend::{Admission, Idempotency, NewRun, TenantRecord};
use crate::registry::referenced_names;
use crate::scheduler::model::{RunSpec, RunStatus, TemplateRef};
use crate::scheduler::new_run_id;
use crate::scheduler::{flow, rules};
use crate::workflow::{self, Problem, Validated};
/// Validates a document against the tenant's registry and limits; `size` is
/// the length of the body it came in, so that large documents are validated
/// off the async executor.
pub(super) async fn check_document(
    state: &AppState,
    tenant: &TenantRecord,
    document: serde_json::Value,
    size: usize,
) -> Result<(Validated, serde_json::Value), ApiError> {
    let invalid = |details: Vec<Problem>| {
        ApiError::unprocessable(
            "invalid_workflow",
            format!("the workflow has {} problem(s)", details.len()),
        )
        .with_details(details)
    };
    // Counted before anything else, so a huge document costs no more than this.
    let steps = document
        .get("steps")
        .and_then(serde_json::Value::as_array)
        .map_or(0, Vec::len);
    if steps > tenant.limits.steps_per_run as usize {
        return Err(invalid(vec![Problem::new(
            "/steps",
            format!(
                "{steps} steps is more than the tenant's steps_per_run ({})",
                tenant.limits.steps_per_run
            ),
        )]));
    }
    let snapshot = state
        .registry
        .snapshot(&tenant.name, referenced_names(&document))
        .await?;
    let ceilings = StepCeilings {
        fuel: tenant.limits.fuel,
        memory_mb: tenant.limits.memory_mb,
        timeout_ms: tenant.limits.timeout_ms,
    };
    let checked = crate::budget::offload_if_large(size, move || {
        let validated = workflow::validate(&document, &snapshot)?;
        let problems = over_limits(&validated.workflow, &ceilings);
        if problems.is_empty() {
            Ok((validated, document))
        } else {
            Err(problems)
        }
    })
    .await;
    let (validated, document) = checked.map_err(invalid)?;
    let mut problems = unknown_secrets(state, tenant, &validated.workflow).await?;
    problems.extend(undeclared_queues(state, &validated.workflow).await?);
    problems.extend(undeclared_rate_limits(state, tenant, &validated.workflow).await?);
    if !problems.is_empty() {
        return Err(invalid(problems));
    }
    Ok((validated, document))
}

/// A problem for each step whose concurrency key does not resolve for the
/// run's input.
fn concurrency_keys(workflow: &workflow::Workflow, input: &serde_json::Value) -> Vec<Problem> {
    workflow
        .steps
        .iter()
        .enumerate()
        .filter_map(|(i, step)| {
            let why = step.concurrency.as_ref()?.key_for(input).err()?;
            Some(Problem::new(
                format!("/steps/{i}/concurrency/key"),
                format!("no concurrency key for this input: {why}"),
            ))
        })
        .collect()
}

/// A problem for each step whose rate limit the tenant has not set.
async fn undeclared_rate_limits(
    state: &AppState,
    tenant: &TenantRecord,
    workflow: &workflow::Workflow,
) -> Result<Vec<Problem>, ApiError> {
    if workflow.steps.iter().all(|s| s.rate_limit.is_none()) {
        return Ok(Vec::new());
    }
    let declared = state.store().rate_limits(&tenant.name).await?;
    Ok(workflow
        .steps
        .iter()
        .enumerate()
        .filter_map(|(i, step)| {
            let name = step.rate_limit.as_deref()?;
            (!declared.iter().any(|d| d.name == name)).then(|| {
                Problem::new(
                    format!("/steps/{i}/rate_limit"),
                    format!(
                        "unknown rate limit {name:?}: set it first with PUT /v1/rate-limits/{name}"
                    ),
                )
            })
        })
        .collect())
}

/// A problem for each step whose queue no admin declared.
async fn undeclared_queues(
    state: &AppState,
    workflow: &workflow::Workflow,
) -> Result<Vec<Problem>, ApiError> {
    let named = || workflow.steps.iter().filter_map(|s| s.queue.as_deref());
    if named().all(|q| q == flow::DEFAULT_QUEUE) {
        return Ok(Vec::new());
    }
    let declared = state.store().queues().await?;
    Ok(workflow
        .steps
        .iter()
        .enumerate()
        .filter_map(|(i, step)| {
            let queue = step.queue.as_deref()?;
            (!declared.iter().any(|d| d.name == queue)).then(|| {
                Problem::new(
                    format!("/steps/{i}/queue"),
                    format!("unknown queue {queue:?}: an admin declares it first with PUT /v1/queues/{queue}"),
                )
            })
        })
        .collect())
}

/// A problem for each secret a step lists that the tenant does not have.
async fn unknown_secrets(
    state: &AppState,
    tenant: &TenantRecord,
    workflow: &workflow::Workflow,
) -> Result<Vec<Problem>, ApiError> {
    let listed = workflow.steps.iter().flat_map(|s| s.secrets.iter());
    if listed.clone().next().is_none() {
        return Ok(Vec::new());
    }
    let unknown = state
        .vault
        .unknown(&tenant.name, listed.map(String::as_str))
        .await?;
    let mut problems = Vec::new();
    for (i, step) in workflow.steps.iter().enumerate() {
        for (k, name) in step.secrets.iter().enumerate() {
            if unknown.contains(name) {
                problems.push(Problem::new(
                    format!("/steps/{i}/secrets/{k}"),
                    format!(
                        "unknown secret {name:?}: set it first with PUT /v1/secrets/{name} (weft secret set {name})"
                    ),
                ));
            }
        }
    }
    Ok(problems)
}

/// The most a step of the tenant may ask for.
struct StepCeilings {
    fuel: u64,
    memory_mb: u32,
    timeout_ms: u64,
}

/// Steps asking for more than the tenant may use.
fn over_limits(workflow: &workflow::Workflow, limits: &StepCeilings) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (i, step) in workflow.steps.iter().enumerate() {
        if let Some(fuel) = step.limits.fuel
            && fuel > limits.fuel
        {
            problems.push(Problem::new(
                format!("/steps/{i}/limits/fuel"),
                format!("{fuel} is above the tenant's limit of {}", limits.fuel),
            ));
        }
        if let Some(mb) = step.limits.memory_mb
            && mb > limits.memory_mb
        {
            problems.push(Problem::new(
                format!("/steps/{i}/limits/memory_mb"),
                format!(
                    "{mb} MiB is above the tenant's limit of {} MiB",
                    limits.memory_mb
                ),
            ));
        }
        if let Some(ms) = step.timeout_ms
            && ms > limits.timeout_ms
        {
            problems.push(Problem::new(
                format!("/steps/{i}/timeout_ms"),
                format!(
                    "{ms} ms is above the tenant's limit of {} ms",
                    limits.timeout_ms
                ),
            ));
        }
    }
    problems
}

/// The template version `reference` (`name@requirement`) names, with its document.
async fn resolve_template(
    state: &AppState,
    tenant: &str,
    reference: &str,
) -> Result<(crate::backend::VersionRecord, serde_json::Value), ApiError> {
    let invalid = |message: String| {
        ApiError::unprocessable("invalid_workflow", message.clone())
            .with_details(vec![Problem::new("/workflow", message)])
    };
    let parsed = reference
        .split_once('@')
        .filter(|(name, requirement)| workflow::is_valid_name(name) && !requirement.is_empty());
    let Some((name, requirement)) = parsed else {
        let shown: String = reference.chars().take(200).collect();
        return Err(invalid(format!(
            "{shown:?} is neither a workflow document nor a template reference such as \"orders@^1\""
        )));
    };
    let requirement = workflow::parse_requirement(requirement).map_err(invalid)?;
    state
        .registry
        .resolve_template(tenant, name, &requirement)
        .await?
        .map_err(invalid)
}

/// A run to start, from `POST /v1/runs` or a schedule's tick.
pub(super) struct Start {
    /// A document, or a template reference (`name@requirement`).
    pub workflow: serde_json::Value,
    pub input: Option<serde_json::Value>,
    pub priority: u8,
    /// When to start it (RFC 3339), or in how many milliseconds; now when neither.
    pub start_at: Option<String>,
    pub delay_ms: Option<u64>,
    pub idempotency: Option<Idempotency>,
    pub schedule: Option<crate::scheduler::model::ScheduledBy>,
    /// The caller's trace (`traceparent`); a new trace when none.
    pub trace: Option<crate::telemetry::TraceContext>,
    /// The length of the request the workflow came in, if it was one.
    pub size: usize,
}

/// A workflow and input checked for the tenant, ready to run.
pub(super) struct Prepared {
    document: serde_json::Value,
    template: Option<TemplateRef>,
    validated: Validated,
    children: std::collections::BTreeMap<u32, crate::scheduler::model::ChildPlan>,
    input: serde_json::Value,
}

/// Resolves and validates `workflow` (a document or a template reference,
/// `size` long as a request) with `input` for the tenant.
pub(super) async fn prepare(
    state: &AppState,
    tenant: &TenantRecord,
    workflow: serde_json::Value,
    input: Option<serde_json::Value>,
    size: usize,
) -> Result<Prepared, ApiError> {
    let (document, template) = match workflow {
        serde_json::Value::String(reference) => {
            let (record, document) = resolve_template(state, &tenant.name, &reference).await?;
            let template = TemplateRef {
                name: record.name,
                version: record.version,
            };
            (document, Some(template))
        }
        document => (document, None),
    };
    let (validated, document) = check_document(state, tenant, document, size).await?;
    let children = super::children::plan_root(state, tenant, &validated.workflow).await?;
    let input = input.unwrap_or_else(|| serde_json::json!({}));
    let mut problems = workflow::check_input(&validated.workflow, &input);
    problems.extend(concurrency_keys(&validated.workflow, &input));
    if !problems.is_empty() {
        return Err(ApiError::unprocessable(
            "invalid_input",
            format!(
                "the input does not match input_schema ({} problem(s))",
                problems.len()
            ),
        )
        .with_details(problems));
    }
    Ok(Prepared {
        document,
        template,
        validated,
        children,
        input,
    })
}

/// Validates and starts a run for the tenant: its id and status, or the
/// error the API answers.
pub(super) async fn start_run(
    state: &AppState,
    tenant: &TenantRecord,
    start: Start,
) -> Result<(String, RunStatus), ApiError> {
    let Prepared {
        document,
        template,
        validated,
        children,
        input,
    } = prepare(state, tenant, start.workflow, start.input, start.size).await?;
    let now = state.scheduler.clock().now();
    let start_at = rules::start_due(start.start_at.as_deref(), start.delay_ms, now)
        .map_err(|why| ApiError::unprocessable("invalid_request", why))?;
    let id = new_run_id(now);
    let spec = RunSpec {
        id: id.clone(),
        tenant: tenant.name.clone(),
        document,
        workflow: validated.workflow,
        pins: validated.pins,
        input,
        defaults: tenant.limits.step_defaults(),
        created_at: now,
        template,
        parent: None,
        parent_step: None,
        children,
        priority: start.priority,
        start_at,
        schedule: start.schedule,
        trace: Some(start.trace.unwrap_or_default()),
    };
    let new = NewRun {
        spec: std::sync::Arc::new(spec),
        idempotency: start.idempotency,
        max_active: tenant.limits.concurrent_runs,
    };
    let span = tracing::info_span!("run", run = %id, tenant = %tenant.name);
    let admission = state.scheduler.submit(new).instrument(span).await?;
    match admission {
        Admission::Created if start_at.is_some() => Ok((id, RunStatus::Scheduled)),
        Admission::Created => Ok((id, RunStatus::Queued)),
        Admission::Existing {
            run,
            same_request: true,
        } => {
            let status = state
                .store()
                .run(&tenant.name, &run)
                .await?
                .map_or(RunStatus::Queued, |v| v.status);
            Ok((run, status))
        }
        Admission::Existing { run, .. } => Err(ApiError::unprocessable(
            "idempotency_key_reused",
            format!("this Idempotency-Key was used for run {run} with another body"),
        )),
        Admission::AtLimit { active } => Err(ApiError::too_many(
            "too_many_runs",
            format!(
                "tenant {:?} has {active} unfinished runs, its limit; retry when one ends",
                tenant.name
            ),
            1,
        )),
    }
}
