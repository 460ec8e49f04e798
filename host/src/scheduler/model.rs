//! The run and step records: what is stored, what travels through the queue,
//! and what clients see.

use std::sync::Arc;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use super::clock::{Millis, rfc3339};
use crate::engine::{Failure, LogLine};
use crate::workflow::Workflow;

/// Status of a run: `queued` -> `running` -> `succeeded | failed | cancelled`;
/// a run that fails or is cancelled with compensations to run is
/// `compensating` until they end; a run submitted to start later
/// (`start_at`, `delay_ms`) is `scheduled` until then.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Scheduled,
    Queued,
    Running,
    Compensating,
    Succeeded,
    Failed,
    Cancelled,
}

impl RunStatus {
    /// Whether the run has ended.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }

    /// The status as it appears in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Compensating => "compensating",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Status of a step within a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Pending,
    Queued,
    Running,
    /// A sleep or signal step waiting for its time or its signal; it holds no worker.
    Waiting,
    Succeeded,
    Failed,
    Skipped,
    Cancelled,
}

impl StepStatus {
    /// Whether the step will not change any more.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Skipped | Self::Cancelled
        )
    }

    /// The status as it appears in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Waiting => "waiting",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Per-step resources when the step does not set its own, and the run's
/// budgets: the tenant's limits at the time the run was submitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepDefaults {
    /// Fuel per attempt (roughly one unit per wasm instruction).
    pub fuel: u64,
    /// Linear memory per attempt, in MiB.
    pub memory_mb: u32,
    /// Deadline per attempt when the step sets no `timeout_ms`.
    pub timeout_ms: u64,
    /// Largest output a step may return, in bytes.
    pub output_bytes: usize,
    /// Largest step input (and run output) once references are resolved, in bytes.
    #[serde(default = "defaults::input_bytes")]
    pub input_bytes: usize,
    /// All stored inputs, outputs and logs of the run, in bytes.
    #[serde(default = "defaults::run_bytes")]
    pub run_bytes: u64,
    /// Deliveries of one attempt before it fails `delivery_limit`.
    #[serde(default = "defaults::max_deliveries")]
    pub max_deliveries: u32,
    /// How long the run is kept once it has ended.
    #[serde(default = "defaults::retention_ms")]
    pub retention_ms: u64,
    /// Steps and for_each items of the run together.
    #[serde(default = "defaults::steps_per_run")]
    pub steps_per_run: u32,
}

/// The defaults of the budgets, also for runs stored before they existed.
mod defaults {
    pub fn input_bytes() -> usize {
        4 << 20
    }
    pub fn run_bytes() -> u64 {
        256 << 20
    }
    pub fn max_deliveries() -> u32 {
        5
    }
    pub fn retention_ms() -> u64 {
        24 * 3_600_000
    }
    pub fn steps_per_run() -> u32 {
        10_000
    }
}

impl Default for StepDefaults {
    fn default() -> Self {
        Self {
            fuel: 10_000_000_000,
            memory_mb: 64,
            timeout_ms: 30_000,
            output_bytes: 1 << 20,
            input_bytes: defaults::input_bytes(),
            run_bytes: defaults::run_bytes(),
            max_deliveries: defaults::max_deliveries(),
            retention_ms: defaults::retention_ms(),
            steps_per_run: defaults::steps_per_run(),
        }
    }
}

/// Everything about a run that never changes after submission.
#[derive(Debug)]
pub struct RunSpec {
    pub id: String,
    pub tenant: String,
    /// The document as submitted, kept for backends that must re-parse it.
    pub document: serde_json::Value,
    pub workflow: Workflow,
    /// The digest of each step's component, in step order, pinned at submission.
    pub pins: Vec<String>,
    pub input: serde_json::Value,
    pub defaults: StepDefaults,
    pub created_at: Millis,
    /// The workflow template the run was started from, resolved and pinned at submission.
    pub template: Option<TemplateRef>,
    /// The run whose sub-workflow step started this one.
    pub parent: Option<String>,
    /// The index of that step in the parent run.
    pub parent_step: Option<u32>,
    /// What each sub-workflow step starts, by step index: resolved and pinned
    /// at submission.
    pub children: std::collections::BTreeMap<u32, ChildPlan>,
    /// 0-9: within its tenant, ready work of a run of higher priority is
    /// taken first (`flow::rank`).
    pub priority: u8,
    /// When the run starts, if it was submitted to start later: it is
    /// `scheduled` until then.
    pub start_at: Option<Millis>,
    /// The schedule whose tick started the run.
    pub schedule: Option<ScheduledBy>,
    /// The trace the run belongs to (`telemetry`).
    pub trace: Option<crate::telemetry::TraceContext>,
}

/// The schedule and tick a run was started by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledBy {
    pub name: String,
    pub tick: Millis,
}

/// The child run a sub-workflow step starts: its template, resolved and
/// pinned at the root's submission, with the digests of its components and
/// what its own sub-workflow steps start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChildPlan {
    pub template: TemplateRef,
    pub document: serde_json::Value,
    pub pins: Vec<String>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub children: std::collections::BTreeMap<u32, ChildPlan>,
}

/// A published workflow template's name and the version a run pinned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateRef {
    pub name: String,
    pub version: String,
}

/// How deep sub-workflows nest at most: a root's child is at depth 1.
pub const MAX_CHILD_DEPTH: u32 = 5;

impl RunSpec {
    /// The id of the child run that sub-workflow step `index` starts: the
    /// same on every delivery of the step, so that it is started once; it
    /// lists beside its parent (ids are ordered by the time they carry).
    pub fn child_id(&self, index: usize) -> String {
        use sha2::Digest;
        let hash = sha2::Sha256::digest(format!("{}/{index}", self.id));
        let suffix = u64::from_be_bytes(hash[..8].try_into().expect("8 bytes"));
        format!("run_{:012x}{suffix:016x}", self.created_at)
    }

    /// The child run sub-workflow step `index` starts with `input`, as its
    /// plan was pinned at submission; its limits are the parent's.
    pub fn child(
        &self,
        index: usize,
        input: serde_json::Value,
        now: Millis,
    ) -> Result<RunSpec, String> {
        let plan = self
            .children
            .get(&(index as u32))
            .ok_or_else(|| format!("step {index} has no pinned sub-workflow"))?;
        let any = |_: &str, _: &semver::VersionReq| Ok::<_, String>(String::new());
        let validated = crate::workflow::validate(&plan.document, &any)
            .map_err(|problems| format!("the sub-workflow no longer validates: {problems:?}"))?;
        Ok(RunSpec {
            id: self.child_id(index),
            tenant: self.tenant.clone(),
            document: plan.document.clone(),
            workflow: validated.workflow,
            pins: plan.pins.clone(),
            input,
            defaults: self.defaults,
            created_at: now,
            template: Some(plan.template.clone()),
            parent: Some(self.id.clone()),
            parent_step: Some(index as u32),
            children: plan.children.clone(),
            priority: self.priority,
            start_at: None,
            schedule: None,
            trace: self.trace.map(|t| t.child(&self.id, index)),
        })
    }

    /// The workflow's name as runs show it: the template's, else the document's.
    pub fn workflow_name(&self) -> &str {
        self.template
            .as_ref()
            .map_or(self.workflow.name.as_str(), |t| t.name.as_str())
    }

    /// The limits of one attempt of step `index` (or of its compensation).
    pub fn limits(&self, index: usize, compensation: bool) -> crate::engine::StepLimits {
        let step = &self.workflow.steps[index];
        let (limits, timeout_ms) = match (&step.compensate, compensation) {
            (Some(c), true) => (&c.limits, c.timeout_ms),
            _ => (&step.limits, step.timeout_ms),
        };
        let memory_mb = limits.memory_mb.unwrap_or(self.defaults.memory_mb);
        crate::engine::StepLimits {
            fuel: limits.fuel.unwrap_or(self.defaults.fuel),
            memory_bytes: (memory_mb as usize) << 20,
            timeout: std::time::Duration::from_millis(
                timeout_ms.unwrap_or(self.defaults.timeout_ms),
            ),
            output_bytes: self.defaults.output_bytes,
        }
    }

    /// The digest of the component that compensates step `index`, if it has one.
    pub fn compensation_pin(&self, index: usize) -> Option<&str> {
        let n = self.workflow.steps.len();
        self.pins
            .get(n + index)
            .map(String::as_str)
            .filter(|p| !p.is_empty())
    }
}

/// A unit of work on the queue.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Task {
    pub run: Arc<str>,
    pub kind: TaskKind,
}

/// What a task asks a worker to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaskKind {
    /// Run attempt `attempt` (1-based) of step `index`.
    Step { index: u32, attempt: u32 },
    /// Every step ended: resolve the run's output and end it.
    Finalize,
    /// Run attempt `attempt` of item `item` of the for_each step `index`.
    Item { index: u32, item: u32, attempt: u32 },
    /// Run attempt `attempt` of the compensation of step `index`.
    Compensate { index: u32, attempt: u32 },
}

/// What a claimed attempt belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    Step(usize),
    /// Item `.1` of the for_each step `.0`.
    Item(usize, u32),
    /// The compensation of step `.0`.
    Compensation(usize),
}

impl Target {
    /// The step this target belongs to.
    pub fn step(self) -> usize {
        match self {
            Self::Step(i) | Self::Item(i, _) | Self::Compensation(i) => i,
        }
    }
}

/// Why a run failed, when it did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunError {
    pub code: String,
    pub message: String,
    /// The step whose failure failed the run, if one did.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub step: Option<String>,
}

/// The mutable state of one step.
#[derive(Debug, Clone, Default)]
pub struct StepRecord {
    pub status: Option<StepStatus>,
    pub attempts: u32,
    pub output: Option<Arc<serde_json::Value>>,
    pub error: Option<Failure>,
    pub logs: Vec<LogLine>,
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    /// Why a skipped step was skipped.
    pub reason: Option<String>,
}

/// How the items of a for_each step stand, in the run JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ItemsView {
    /// Items in the list.
    pub total: u32,
    /// Items by status; `pending` ones have not started.
    pub counts: ItemCounts,
    /// The items that failed, by index, with their errors (the first
    /// [`MAX_FAILED_SHOWN`]; the items endpoint pages through all).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub failed: Vec<FailedItem>,
}

/// Failed items a run JSON shows at most for one step.
pub const MAX_FAILED_SHOWN: usize = 100;

/// Items of a for_each step by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ItemCounts {
    pub pending: u32,
    pub queued: u32,
    pub running: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub cancelled: u32,
}

impl ItemCounts {
    /// Counts one more item of `status`.
    pub fn add(&mut self, status: StepStatus) {
        match status {
            StepStatus::Pending => self.pending += 1,
            StepStatus::Queued => self.queued += 1,
            StepStatus::Running | StepStatus::Waiting => self.running += 1,
            StepStatus::Succeeded => self.succeeded += 1,
            StepStatus::Failed => self.failed += 1,
            StepStatus::Skipped | StepStatus::Cancelled => self.cancelled += 1,
        }
    }
}

/// One failed item in an [`ItemsView`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FailedItem {
    pub index: u32,
    pub error: Failure,
}

/// One item of a for_each step, as `GET /v1/runs/{id}/steps/{step}/items` pages it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ItemView {
    pub index: u32,
    #[serde(flatten)]
    pub record: AttemptsView,
}

impl ItemView {
    /// The view of item `index` from its record.
    pub fn new(index: u32, rec: &StepRecord) -> Self {
        Self {
            index,
            record: AttemptsView::new(rec),
        }
    }
}

/// A page of items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ItemsPage {
    pub items: Vec<ItemView>,
    /// Where the next page starts; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub next_cursor: Option<String>,
}

/// The attempts of an item or of a compensation, as clients see them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AttemptsView {
    pub status: StepStatus,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    #[schema(value_type = Option<serde_json::Value>)]
    pub output: Option<StepOutput>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<Failure>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub finished_at: Option<String>,
}

/// How a step's compensation went, in the run JSON.
pub type CompensationView = AttemptsView;

impl AttemptsView {
    pub fn new(rec: &StepRecord) -> Self {
        Self {
            status: rec.status.unwrap_or(StepStatus::Pending),
            attempts: rec.attempts,
            output: rec.output.clone().map(StepOutput::Value),
            error: rec.error.clone(),
            started_at: rec.started_at.map(rfc3339),
            finished_at: rec.finished_at.map(rfc3339),
        }
    }
}

/// A run as clients see it: `GET /v1/runs/{id}` and `weft exec` print this.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunView {
    pub id: String,
    pub tenant: String,
    /// The template's name for a run started from one, else the document's `name`.
    pub workflow: String,
    /// The template version the run pinned at submission.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub workflow_version: Option<String>,
    /// The run whose sub-workflow step started this one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub parent: Option<String>,
    pub status: RunStatus,
    pub input: serde_json::Value,
    /// The document's `output` resolved once every step succeeded, else null.
    pub output: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<RunError>,
    pub created_at: String,
    /// When a run submitted to start later (`start_at`, `delay_ms`) starts.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub start_at: Option<String>,
    /// The schedule whose tick started the run.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub schedule: Option<String>,
    /// That tick's time.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub scheduled_for: Option<String>,
    /// The run's priority (0-9) within its tenant.
    #[serde(default = "default_priority")]
    pub priority: u8,
    /// The id of the run's trace (32 hexadecimal digits): the caller's, when
    /// it was submitted with a `traceparent`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub trace_id: Option<String>,
    /// The trace as the run keeps it, for the spans made of it.
    #[serde(skip)]
    #[schema(ignore)]
    pub trace: Option<crate::telemetry::TraceContext>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub finished_at: Option<String>,
    /// Every step, keyed by id in document order, so that `steps.<id>.output`
    /// reads the same here as in a workflow reference.
    pub steps: IndexMap<String, StepView>,
}

fn default_priority() -> u8 {
    super::flow::DEFAULT_PRIORITY
}

/// One step of a [`RunView`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StepView {
    /// The component the step runs; absent for a step that waits.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub component: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
    pub status: StepStatus,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    #[schema(value_type = Option<serde_json::Value>)]
    pub output: Option<StepOutput>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<Failure>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub finished_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub logs: Vec<LogLine>,
    /// Why the step was skipped, when it was.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    /// A for_each step's items.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub items: Option<ItemsView>,
    /// The step's compensation, once it started.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub compensation: Option<CompensationView>,
    /// A sub-workflow step's template, as `name@version` (pinned at submission).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub workflow: Option<String>,
    /// The child run a sub-workflow step started, once it started one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub run: Option<String>,
    /// The steps this one waits for: its `needs` and the steps its `input`,
    /// `when` or `for_each` refer to, in document order.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub depends_on: Vec<String>,
}

impl StepView {
    /// Builds the view of step `index` of `spec` from its record.
    pub fn new(spec: &RunSpec, index: usize, rec: &StepRecord) -> Self {
        let step = &spec.workflow.steps[index];
        Self {
            component: step.component().map(|c| c.raw.clone()).unwrap_or_default(),
            digest: spec.pins[index].clone(),
            status: rec.status.unwrap_or(StepStatus::Pending),
            attempts: rec.attempts,
            output: rec.output.clone().map(StepOutput::Value),
            error: rec.error.clone(),
            started_at: rec.started_at.map(rfc3339),
            finished_at: rec.finished_at.map(rfc3339),
            duration_ms: match (rec.started_at, rec.finished_at) {
                (Some(s), Some(f)) => Some(f.saturating_sub(s)),
                _ => None,
            },
            logs: rec.logs.clone(),
            reason: rec.reason.clone(),
            items: None,
            compensation: None,
            workflow: spec
                .children
                .get(&(index as u32))
                .map(|c| format!("{}@{}", c.template.name, c.template.version)),
            run: (step.sub_workflow().is_some() && rec.attempts > 0).then(|| spec.child_id(index)),
            depends_on: step
                .deps
                .iter()
                .map(|&d| spec.workflow.steps[d].id.clone())
                .collect(),
        }
    }
}

/// A step's output in a [`StepView`]: shared with the store, so that reading
/// a run copies no output, or the JSON text a store keeps, so that a large
/// output is neither parsed nor checked only to be written out again.
#[derive(Debug, Clone)]
pub enum StepOutput {
    Value(Arc<serde_json::Value>),
    /// JSON text this Weft wrote itself (serialised from a value when the
    /// output was committed), written out as it is; a `String` so that the
    /// text read from a store is kept without a copy.
    Text(Arc<String>),
}

/// The struct name by which `serde_json` serialisers recognise text to
/// write out verbatim; it is how `serde_json::value::RawValue` serialises
/// itself, without the check `RawValue::from_string` makes of every byte.
const RAW_JSON: &str = "$serde_json::private::RawValue";

impl StepOutput {
    /// The output as a JSON value.
    pub fn to_value(&self) -> serde_json::Value {
        match self {
            Self::Value(v) => (**v).clone(),
            Self::Text(t) => serde_json::from_str(t).unwrap_or(serde_json::Value::Null),
        }
    }
}

impl PartialEq for StepOutput {
    fn eq(&self, other: &Self) -> bool {
        self.to_value() == other.to_value()
    }
}

impl Serialize for StepOutput {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Value(v) => v.serialize(serializer),
            Self::Text(t) => {
                use serde::ser::SerializeStruct;
                let mut raw = serializer.serialize_struct(RAW_JSON, 1)?;
                raw.serialize_field(RAW_JSON, t.as_str())?;
                raw.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for StepOutput {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde_json::Value::deserialize(deserializer).map(|v| Self::Value(Arc::new(v)))
    }
}

/// One state change, as the event stream of a run shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RunEvent {
    Run {
        run: String,
        status: RunStatus,
        at: String,
    },
    Step {
        run: String,
        step: String,
        status: StepStatus,
        attempt: u32,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        error: Option<Failure>,
        at: String,
    },
    /// How the items of a for_each step stand: at most one per step per
    /// [`ITEM_EVENT_MS`] while they run.
    Items {
        run: String,
        step: String,
        total: u32,
        succeeded: u32,
        failed: u32,
        at: String,
    },
    /// A compensation changed status.
    Compensation {
        run: String,
        step: String,
        status: StepStatus,
        attempt: u32,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        error: Option<Failure>,
        at: String,
    },
}

/// The least time between two item progress events of one step, in milliseconds.
pub const ITEM_EVENT_MS: Millis = 100;

impl RunEvent {
    /// The run this event belongs to.
    pub fn run_id(&self) -> &str {
        match self {
            Self::Run { run, .. }
            | Self::Step { run, .. }
            | Self::Items { run, .. }
            | Self::Compensation { run, .. } => run,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_output_kept_as_text_is_written_out_verbatim() {
        let text = r#"{"b":[1,2.50,"x\u00e9"],"a":null}"#;
        let output = StepOutput::Text(Arc::new(text.to_owned()));
        assert_eq!(serde_json::to_string(&output).unwrap(), text);
        let nested = serde_json::json!({ "output": serde_json::to_value(&output).unwrap() });
        assert_eq!(nested["output"]["b"][1], serde_json::json!(2.5));
        assert_eq!(
            serde_json::to_string(&vec![output.clone(), output]).unwrap(),
            format!("[{text},{text}]")
        );
    }
}
