//! Where runs, steps, registry records and blobs live (`StateStore`) and how
//! ready steps reach workers (`WorkQueue`). The scheduler sees only these traits.
//!
//! Every method that changes a run applies its whole transition atomically:
//! the step's result, the status changes it causes, and the tasks that became
//! ready are committed together or not at all.

pub mod listing;
pub mod memory;
pub mod redis;
mod spec;

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::engine::{Failure, LogLine};
use crate::scheduler::clock::Millis;
use crate::scheduler::model::{
    ItemsPage, RunError, RunSpec, RunStatus, RunView, StepDefaults, StepStatus, Target, Task,
};

/// A backend could not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    /// The backend cannot be reached right now; the operation may be retried.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// The stored data is not what this version of Weft expects.
    #[error("backend data is corrupt: {0}")]
    Corrupt(String),
}

/// What a worker gets when it claims a task.
pub enum Claim {
    /// Run this attempt. `lease` must accompany the commit.
    Step(StepWork),
    /// Every step ended: resolve the output from `outputs` (None for a step
    /// that ended without one) and finish the run.
    Finalize {
        spec: Arc<RunSpec>,
        outputs: Vec<Option<Arc<serde_json::Value>>>,
    },
    /// The task is obsolete (run ended, step already done, or superseded): drop it.
    Stale,
}

/// One claimed attempt: of a step, of an item of a for_each step, or of a
/// step's compensation.
pub struct StepWork {
    pub spec: Arc<RunSpec>,
    /// The step (`target.step()`).
    pub index: usize,
    pub target: Target,
    pub attempt: u32,
    pub lease: u64,
    /// The outputs of the steps this attempt reads, by step index; a step
    /// that ended without an output is left out (it reads as `null`).
    pub deps: Vec<(usize, Arc<serde_json::Value>)>,
    /// How each dependency of the step ended, with its error: what the gate
    /// of a step's first attempt decides on (empty for other attempts).
    pub facts: Vec<(usize, StepStatus, Option<Failure>)>,
    /// The item an item's attempt runs for.
    pub item: Option<Arc<serde_json::Value>>,
    /// This attempt was delivered more often than the run's `max_deliveries`
    /// (the nodes holding it kept dying): it is not run again but fails
    /// `delivery_limit`.
    pub over_delivered: bool,
    /// The claim is the wake-up of a step that waits (`Outcome::Wait`): its
    /// time has come, so a sleep ends and a signal step times out.
    pub woken: bool,
}

/// The result of an attempt, as the scheduler decided to record it.
#[derive(Debug, Clone)]
pub enum Outcome {
    Succeeded {
        output: serde_json::Value,
        logs: Vec<LogLine>,
    },
    /// Failed, to be tried again as attempt `attempt + 1` at `due`.
    Retry {
        failure: Failure,
        logs: Vec<LogLine>,
        due: Millis,
    },
    /// Failed for good: the run fails with it, unless `continues`
    /// (`on_error: continue`).
    Failed {
        failure: Failure,
        logs: Vec<LogLine>,
        continues: bool,
    },
    /// The step's gate skipped it (a step's first attempt only).
    Skipped {
        reason: String,
        error: Option<Failure>,
    },
    /// A for_each step's list: its items start, `max_concurrency` at a time.
    Expand { items: Vec<serde_json::Value> },
    /// A sleep or signal step waits, holding no worker: until `due` (when
    /// its wake-up is delivered), or until the signal `signal` arrives,
    /// which it takes at once when one is buffered (a step's first attempt only).
    Wait {
        due: Option<Millis>,
        signal: Option<String>,
    },
}

impl Outcome {
    /// What recording this outcome adds to the run's stored bytes (its
    /// output or error and its logs, as compact JSON), counted against `run_bytes`.
    pub fn stored_bytes(&self) -> u64 {
        let (payload, logs) = match self {
            Self::Succeeded { output, logs } => (
                crate::workflow::json_size(output, usize::MAX).unwrap_or(0) as u64,
                logs,
            ),
            Self::Retry { failure, logs, .. } | Self::Failed { failure, logs, .. } => {
                (crate::budget::serialized_len(failure), logs)
            }
            Self::Skipped { reason, error } => {
                let error = error.as_ref().map_or(0, crate::budget::serialized_len);
                return reason.len() as u64 + error;
            }
            Self::Wait { .. } => return 0,
            Self::Expand { items } => {
                return items
                    .iter()
                    .map(|i| crate::workflow::json_size(i, usize::MAX).unwrap_or(0) as u64 + 1)
                    .sum();
            }
        };
        payload + crate::budget::serialized_len(logs)
    }
}

/// What a commit did.
#[derive(Debug, Default)]
pub struct Committed {
    /// False when the attempt was superseded or the run had ended: nothing changed.
    pub applied: bool,
    /// The failure was recorded and the step will be tried again.
    pub retrying: bool,
    /// Steps of this run that were running and are now cancelled.
    pub cancelled: Vec<usize>,
    /// The run's new status, when this commit ended it.
    pub run_ended: Option<RunStatus>,
}

/// A component version in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRecord {
    pub name: String,
    pub version: String,
    pub digest: String,
    pub size: u64,
    pub published_at: Millis,
}

/// A secret as stores keep it: only its sealed bytes (`capability::secrets`).
#[derive(Clone, PartialEq, Eq)]
pub struct SealedSecret {
    /// Nonce and ciphertext.
    pub sealed: Vec<u8>,
    pub updated_at: Millis,
}

/// A secret as clients may see it: its name, never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SecretInfo {
    pub name: String,
    /// When it was last set (RFC 3339 in the API).
    #[serde(skip)]
    pub updated_at: Millis,
}

/// What publishing a version did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    Created(VersionRecord),
    /// The same bytes were already published under this version.
    Unchanged(VersionRecord),
    /// Other bytes are published under this version; versions are immutable.
    Conflict(VersionRecord),
}

/// A run to create, with what admission checks it.
pub struct NewRun {
    pub spec: Arc<RunSpec>,
    /// The client's `Idempotency-Key` and a fingerprint of its request.
    pub idempotency: Option<Idempotency>,
    /// The most unfinished runs the tenant may have; the run is refused at it.
    pub max_active: u32,
}

impl NewRun {
    /// A run admitted unconditionally.
    pub fn new(spec: RunSpec) -> Self {
        Self {
            spec: Arc::new(spec),
            idempotency: None,
            max_active: u32::MAX,
        }
    }
}

/// An idempotency key and the fingerprint (a hash) of the request that carried it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Idempotency {
    pub key: String,
    pub fingerprint: String,
}

/// What creating a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Created,
    /// The idempotency key was seen before: nothing was created.
    Existing {
        run: String,
        same_request: bool,
    },
    /// The tenant has `active` unfinished runs, as many as it may.
    AtLimit {
        active: u32,
    },
}

/// What cancelling did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancelled {
    /// The run is now cancelled, or `compensating` first; these steps were
    /// running and must be stopped.
    Now {
        stopped: Vec<usize>,
        status: RunStatus,
    },
    /// The run had already ended with this status.
    AlreadyEnded(RunStatus),
}

/// What sending a signal did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signalled {
    /// The tenant has no such run.
    Missing,
    /// The run has ended (or is being compensated): nothing waits any more.
    Finished(RunStatus),
    /// The waiting step `step` took it: its payload is that step's output.
    Delivered { step: String },
    /// No step waits for it yet: it is kept, with `buffered` of its name in all.
    Buffered { buffered: u32 },
    /// `rules::MAX_BUFFERED_SIGNALS` of its name are kept already.
    Full,
    /// Its payload would take the run past its `run_bytes` (the limit).
    TooLarge { run_bytes: u64 },
}

/// Per-tenant limits. The per-step ones are both the default of a step that
/// sets nothing and the most a step may ask for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Unfinished runs at once.
    pub concurrent_runs: u32,
    /// Runs submitted per second (bursts of as many).
    pub runs_per_second: u32,
    /// Largest component, in bytes.
    pub component_bytes: u64,
    /// Fuel per step attempt.
    pub fuel: u64,
    /// Linear memory per step attempt, in MiB.
    pub memory_mb: u32,
    /// Deadline per step attempt, in milliseconds.
    pub timeout_ms: u64,
    /// Largest step output, in bytes.
    pub output_bytes: u64,
    /// Steps of one run (for_each items and sub-workflow steps included).
    pub steps_per_run: u32,
    /// Largest step input once its references are resolved, in bytes.
    pub input_bytes: u64,
    /// All stored inputs, outputs and logs of one run, in bytes.
    pub run_bytes: u64,
    /// All of the tenant's component blobs, in bytes.
    pub storage_bytes: u64,
    /// Components published per minute.
    pub publishes_per_minute: u32,
    /// How long finished runs (and the idempotency keys naming them) are kept.
    pub retention_hours: u32,
    /// Deliveries of one step attempt before it fails `delivery_limit`.
    pub max_deliveries: u32,
    /// Hosts the tenant's steps may call (`api.example.com`,
    /// `*.stripe.com:443`, `10.0.0.5:8080`); a step still lists the ones it
    /// calls. Internal addresses are reached only when named here literally.
    pub allowed_hosts: Vec<String>,
    /// Outgoing HTTP requests per step attempt.
    pub http_requests: u32,
    /// Largest body of one outgoing HTTP response, in bytes.
    pub http_response_bytes: u64,
    /// The tenant's share of the nodes against other tenants with ready
    /// work (1 to 1000): a tenant of weight 3 is given three steps for
    /// every one of a tenant of weight 1.
    pub weight: u32,
    /// Attempts of the tenant's steps running at once, cluster-wide; ready
    /// steps beyond it wait.
    pub concurrent_steps: u32,
}

impl Default for Limits {
    fn default() -> Self {
        let step = StepDefaults::default();
        Self {
            concurrent_runs: 1_000,
            runs_per_second: 500,
            // A componentize-py step is about 18 MiB, a componentize-js one 12.
            component_bytes: 64 << 20,
            fuel: step.fuel,
            memory_mb: step.memory_mb,
            timeout_ms: step.timeout_ms,
            output_bytes: step.output_bytes as u64,
            steps_per_run: 10_000,
            input_bytes: step.input_bytes as u64,
            run_bytes: step.run_bytes,
            storage_bytes: 2 << 30,
            publishes_per_minute: 60,
            retention_hours: 24,
            max_deliveries: step.max_deliveries,
            allowed_hosts: Vec::new(),
            http_requests: 50,
            http_response_bytes: 10 << 20,
            weight: 1,
            concurrent_steps: 10_000,
        }
    }
}

impl Limits {
    /// The tenant's share, as the dispatcher reads it.
    pub fn share(&self) -> crate::scheduler::flow::Share {
        crate::scheduler::flow::Share {
            weight: self.weight,
            concurrent_steps: self.concurrent_steps,
        }
    }

    /// What a run submitted now carries: the defaults of a step that sets
    /// nothing, and the run's budgets.
    pub fn step_defaults(&self) -> StepDefaults {
        StepDefaults {
            fuel: self.fuel,
            memory_mb: self.memory_mb,
            timeout_ms: self.timeout_ms,
            output_bytes: usize::try_from(self.output_bytes).unwrap_or(usize::MAX),
            input_bytes: usize::try_from(self.input_bytes).unwrap_or(usize::MAX),
            run_bytes: self.run_bytes,
            max_deliveries: self.max_deliveries,
            retention_ms: u64::from(self.retention_hours) * 3_600_000,
            steps_per_run: self.steps_per_run,
        }
    }
}

/// A tenant: its name, the hashes of its API keys and its limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRecord {
    pub name: String,
    /// SHA-256 of each API key, as hex.
    pub key_hashes: Vec<String>,
    pub limits: Limits,
    pub created_at: Millis,
}

/// A node as the cluster sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeInfo {
    /// Unique per process.
    pub node: String,
    /// `all`, `api` or `worker`.
    pub role: String,
    /// The address its HTTP API listens on.
    pub listen: String,
    /// Steps it runs at once at most.
    pub concurrency: u32,
    /// Steps running on it now.
    pub running: u64,
    /// RFC 3339 time of its last heartbeat.
    pub seen_at: String,
}

/// A rate limit as a tenant declared it: steps that name it start at most
/// `per_second` a second, `burst` at once after a quiet spell, across the
/// cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RateLimit {
    pub name: String,
    pub per_second: f64,
    pub burst: u32,
}

impl RateLimit {
    pub fn rate(&self) -> crate::scheduler::flow::Rate {
        crate::scheduler::flow::Rate {
            per_second: self.per_second,
            burst: self.burst,
        }
    }
}

/// A tenant's schedule as a store keeps it: what it starts, on which
/// clock, and where its ticks stand. `version` counts its changes; a change
/// is stored only over the version it was made from (`update_schedule`), so
/// nodes firing the same tick at once store its outcome once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    /// A published workflow template, `name@requirement`.
    pub workflow: String,
    pub input: serde_json::Value,
    pub overlap: crate::scheduler::schedule::Overlap,
    pub catch_up: crate::scheduler::schedule::CatchUp,
    pub paused: bool,
    pub created_at: Millis,
    /// Ticks after this are due: the creation, the resumption or the last
    /// tick handled.
    pub after: Millis,
    /// When the next tick is due; none while paused.
    pub next_tick: Option<Millis>,
    /// The newest tick handled, fired or skipped.
    pub last_tick: Option<Millis>,
    /// The run the newest fired tick started.
    pub last_run: Option<String>,
    /// Why the newest tick that could not start its run could not.
    pub last_error: Option<ScheduleError>,
    pub version: u64,
}

/// A tick that could not start its run, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScheduleError {
    /// The tick, RFC 3339.
    pub tick: String,
    pub code: String,
    pub message: String,
}

/// A declared queue and its ready work, as an autoscaler reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueStats {
    pub name: String,
    /// Ready steps waiting for a node that serves the queue.
    pub depth: u64,
    /// How long the oldest of them has waited, in seconds (0 when none waits).
    pub oldest_age_seconds: f64,
}

/// The live nodes and the queues of a backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClusterView {
    /// `memory` or `redis`.
    pub backend: String,
    pub nodes: Vec<NodeInfo>,
    /// The declared queues, `default` first.
    pub queues: Vec<QueueStats>,
    /// Tasks taken by a node and not finished.
    pub pending: u64,
    /// Retries (and waits) waiting for their due time.
    pub delayed: u64,
}

/// Runs, steps, registry records and blobs.
#[async_trait::async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// Whether the backend can be reached.
    async fn ping(&self) -> Result<(), BackendError> {
        Ok(())
    }

    /// Stores a new run and enqueues its root steps, unless its idempotency key
    /// was seen or the tenant is at its limit of unfinished runs.
    async fn create_run(&self, new: NewRun) -> Result<Admission, BackendError>;

    /// Claims a delivered task: checks it is current, marks the step
    /// running with a new lease and returns what the attempt needs.
    async fn claim(&self, delivery: &Delivery, now: Millis) -> Result<Claim, BackendError>;

    /// Records the outcome of an attempt holding `lease`; ignored when the
    /// lease was superseded or the step is no longer running. A success enqueues
    /// the dependents that became ready; the last success enqueues finalisation;
    /// a failure fails the run, skipping steps not started and cancelling
    /// running ones.
    async fn commit(
        &self,
        run: &str,
        target: Target,
        lease: u64,
        outcome: Outcome,
        now: Millis,
    ) -> Result<Committed, BackendError>;

    /// A page of the items of the tenant's for_each step `step`, from item
    /// `cursor`, at most `limit`; `None` when there is no such run or step.
    async fn items(
        &self,
        tenant: &str,
        run: &str,
        step: &str,
        cursor: u32,
        limit: u32,
    ) -> Result<Option<ItemsPage>, BackendError>;

    /// Ends a run whose steps all succeeded, with its output or an error.
    async fn finish(
        &self,
        run: &str,
        result: Result<serde_json::Value, RunError>,
        now: Millis,
    ) -> Result<bool, BackendError>;

    /// Cancels a run that has not ended. `None` when the tenant has no such run.
    async fn cancel(
        &self,
        tenant: &str,
        run: &str,
        now: Millis,
    ) -> Result<Option<Cancelled>, BackendError>;

    /// Sends the signal `name` to the tenant's run: the waiting step of
    /// lowest index that waits for it takes it, or it is kept for the next
    /// (`rules::signal_goes`), atomically, so each signal is taken once.
    async fn signal(
        &self,
        tenant: &str,
        run: &str,
        name: &str,
        payload: serde_json::Value,
        now: Millis,
    ) -> Result<Signalled, BackendError>;

    /// A page of the tenant's runs, newest first.
    async fn list_runs(
        &self,
        tenant: &str,
        query: &listing::RunQuery,
    ) -> Result<listing::RunsPage, BackendError>;

    /// The tenant's run, as clients see it.
    async fn run(&self, tenant: &str, run: &str) -> Result<Option<RunView>, BackendError>;

    /// State changes of every run on this backend, from now on.
    fn subscribe(&self) -> broadcast::Receiver<crate::scheduler::model::RunEvent>;

    /// The ids of runs that ended (cancelled, or failed by a step) while
    /// steps of theirs were running, whichever node ended them; `None` when
    /// every attempt runs in this process, which stops them itself.
    fn ended_runs(&self) -> Option<broadcast::Receiver<String>> {
        None
    }

    /// Stores component bytes under their digest (once).
    async fn put_blob(&self, digest: &str, bytes: Bytes) -> Result<(), BackendError>;

    /// Component bytes by digest.
    async fn blob(&self, digest: &str) -> Result<Option<Bytes>, BackendError>;

    /// Records an immutable `(tenant, name, version) -> digest`.
    async fn publish(&self, tenant: &str, record: VersionRecord)
    -> Result<Published, BackendError>;

    /// Every version of the tenant's component `name`, oldest first.
    async fn versions(&self, tenant: &str, name: &str) -> Result<Vec<VersionRecord>, BackendError>;

    /// The names of the tenant's components, sorted.
    async fn component_names(&self, tenant: &str) -> Result<Vec<String>, BackendError>;

    /// Creates a tenant; false when the name is taken.
    async fn create_tenant(&self, tenant: TenantRecord) -> Result<bool, BackendError>;

    /// The tenant called `name`.
    async fn tenant(&self, name: &str) -> Result<Option<TenantRecord>, BackendError>;

    /// The tenant holding the API key with this SHA-256 (hex).
    async fn tenant_by_key(&self, key_hash: &str) -> Result<Option<TenantRecord>, BackendError>;

    /// Replaces a tenant's limits; false when there is no such tenant.
    async fn set_limits(&self, name: &str, limits: Limits) -> Result<bool, BackendError>;

    /// Sets the tenant's secret `name` (sealed); true when it is new.
    async fn put_secret(
        &self,
        tenant: &str,
        name: &str,
        secret: SealedSecret,
    ) -> Result<bool, BackendError>;

    /// The tenant's secret `name`, sealed.
    async fn secret(&self, tenant: &str, name: &str) -> Result<Option<SealedSecret>, BackendError>;

    /// The names of the tenant's secrets and when each was set, sorted by name.
    async fn secrets(&self, tenant: &str) -> Result<Vec<SecretInfo>, BackendError>;

    /// Deletes the tenant's secret `name`; false when there was none.
    async fn delete_secret(&self, tenant: &str, name: &str) -> Result<bool, BackendError>;

    /// Sets the tenant's rate limit `limit.name`; true when it is new.
    async fn put_rate_limit(&self, tenant: &str, limit: RateLimit) -> Result<bool, BackendError>;

    /// The tenant's rate limits, by name.
    async fn rate_limits(&self, tenant: &str) -> Result<Vec<RateLimit>, BackendError>;

    /// Deletes the tenant's rate limit `name`; false when there was none.
    /// Steps waiting on it start.
    async fn delete_rate_limit(&self, tenant: &str, name: &str) -> Result<bool, BackendError>;

    /// Creates a schedule; false when the tenant has one of that name.
    async fn create_schedule(&self, tenant: &str, schedule: Schedule)
    -> Result<bool, BackendError>;

    /// The tenant's schedules, by name.
    async fn schedules(&self, tenant: &str) -> Result<Vec<Schedule>, BackendError>;

    /// One schedule of the tenant.
    async fn schedule(&self, tenant: &str, name: &str) -> Result<Option<Schedule>, BackendError> {
        Ok(self
            .schedules(tenant)
            .await?
            .into_iter()
            .find(|s| s.name == name))
    }

    /// Stores `schedule` if the stored one is still at `schedule.version - 1`;
    /// false when it changed meanwhile or was deleted.
    async fn update_schedule(&self, tenant: &str, schedule: Schedule)
    -> Result<bool, BackendError>;

    /// Deletes a schedule; its runs go on. False when there was none.
    async fn delete_schedule(&self, tenant: &str, name: &str) -> Result<bool, BackendError>;

    /// Up to `max` schedules of any tenant whose next tick is due at `now`,
    /// the most overdue first, each with its tenant.
    async fn due_schedules(
        &self,
        now: Millis,
        max: usize,
    ) -> Result<Vec<(String, Schedule)>, BackendError>;

    /// Declares the queue `name` (admin); true when it is new. `default`
    /// always exists.
    async fn declare_queue(&self, name: &str) -> Result<bool, BackendError>;

    /// The declared queues, `default` first, with their ready work.
    async fn queues(&self) -> Result<Vec<QueueStats>, BackendError>;

    /// Records that this node is alive, for [`StateStore::cluster`]; nodes
    /// not heard of for a while are left out.
    async fn heartbeat(&self, node: &NodeInfo) -> Result<(), BackendError>;

    /// The live nodes and the queues.
    async fn cluster(&self) -> Result<ClusterView, BackendError>;
}

/// Ready tasks on their way to workers.
#[async_trait::async_trait]
pub trait WorkQueue: Send + Sync + 'static {
    /// Waits until at least one task is ready and returns up to `max` of them.
    async fn next(&self, max: usize) -> Result<Vec<Delivery>, BackendError>;

    /// Marks deliveries as done so they are not delivered again.
    async fn ack(&self, deliveries: &[Delivery]) -> Result<(), BackendError>;

    /// Tasks ready and waiting for a worker.
    async fn depth(&self) -> Result<u64, BackendError>;

    /// Makes this node take work from `queues`, in this order (`weft serve
    /// --queues`); `default` unless told.
    fn serve_queues(&self, queues: &[String]);

    /// Hands back the tasks this node was given and has not finished, so that
    /// another node takes them at once; called when the node stops.
    async fn release(&self) -> Result<u64, BackendError> {
        Ok(0)
    }
}

/// A task handed to one worker, with what the queue needs to acknowledge it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub task: Task,
    pub tag: u64,
}

#[cfg(test)]
mod tests;
