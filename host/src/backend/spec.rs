//! How a run's spec is kept by a backend that stores it as text (Redis,
//! the embedded file store), and read back.

use serde::{Deserialize, Serialize};

use crate::backend::BackendError;
use crate::scheduler::clock::Millis;
use crate::scheduler::model::Target;
use crate::scheduler::model::{ChildPlan, RunSpec, ScheduledBy, StepDefaults, TemplateRef};
use crate::workflow::{self, Root, Template};

/// What a store keeps of a spec.
#[derive(Serialize, Deserialize)]
struct StoredSpec {
    id: String,
    tenant: String,
    document: serde_json::Value,
    pins: Vec<String>,
    input: serde_json::Value,
    defaults: StepDefaults,
    created_at: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    template: Option<TemplateRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    parent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    parent_step: Option<u32>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    children: std::collections::BTreeMap<u32, ChildPlan>,
    #[serde(default = "default_priority")]
    priority: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    start_at: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    schedule: Option<ScheduledBy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trace: Option<crate::telemetry::TraceContext>,
}

fn default_priority() -> u8 {
    crate::scheduler::flow::DEFAULT_PRIORITY
}

pub(crate) fn store_spec(spec: &RunSpec) -> String {
    serde_json::to_string(&StoredSpec {
        id: spec.id.clone(),
        tenant: spec.tenant.clone(),
        document: spec.document.clone(),
        pins: spec.pins.clone(),
        input: spec.input.clone(),
        defaults: spec.defaults,
        created_at: spec.created_at,
        template: spec.template.clone(),
        parent: spec.parent.clone(),
        parent_step: spec.parent_step,
        children: spec.children.clone(),
        priority: spec.priority,
        start_at: spec.start_at,
        schedule: spec.schedule.clone(),
        trace: spec.trace,
    })
    .expect("a spec serialises")
}

/// Rebuilds a spec: the document was valid when the run was submitted; its
/// pins are the stored ones.
pub(crate) fn parse_spec(stored: &str) -> Result<RunSpec, BackendError> {
    let stored: StoredSpec =
        serde_json::from_str(stored).map_err(|e| corrupt(format!("run spec: {e}")))?;
    let any = |_: &str, _: &semver::VersionReq| Ok::<_, String>(String::new());
    let validated = workflow::validate(&stored.document, &any).map_err(|problems| {
        corrupt(format!(
            "run {}: stored workflow no longer validates: {problems:?}",
            stored.id
        ))
    })?;
    Ok(RunSpec {
        id: stored.id,
        tenant: stored.tenant,
        document: stored.document,
        workflow: validated.workflow,
        pins: stored.pins,
        input: stored.input,
        defaults: stored.defaults,
        created_at: stored.created_at,
        template: stored.template,
        parent: stored.parent,
        parent_step: stored.parent_step,
        children: stored.children,
        priority: stored.priority,
        start_at: stored.start_at,
        schedule: stored.schedule,
        trace: stored.trace,
    })
}

pub(crate) fn parse_json(s: &str, what: &str) -> Result<serde_json::Value, BackendError> {
    serde_json::from_str(s).map_err(|e| corrupt(format!("{what}: {e}")))
}

fn corrupt(what: impl std::fmt::Display) -> BackendError {
    BackendError::Corrupt(what.to_string())
}

/// The steps a template refers to.
pub(crate) fn step_roots(template: &Template) -> Vec<usize> {
    template
        .roots()
        .filter_map(|root| match root {
            Root::Step(d) => Some(d),
            _ => None,
        })
        .collect()
}

/// The steps whose outputs an attempt of `target` reads: its input's; for a
/// step, also its list's, and for its first attempt its condition's.
pub(crate) fn reads_of(step: &crate::workflow::Step, target: Target, attempt: u32) -> Vec<usize> {
    let mut reads = step_roots(&step.input);
    if let Target::Step(_) = target {
        if let Some(f) = &step.for_each {
            reads.extend(step_roots(&f.list));
        }
        if let Some(when) = step.when.as_ref().filter(|_| attempt == 1) {
            reads.extend(when.steps().iter().copied());
        }
        if let crate::workflow::Action::Sleep(crate::workflow::Sleep::Until(until)) = &step.action {
            reads.extend(step_roots(until));
        }
    }
    reads.sort_unstable();
    reads.dedup();
    reads
}
