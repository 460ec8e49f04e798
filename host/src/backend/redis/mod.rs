//! The Redis backend: runs, steps, registry records and blobs in Redis; ready
//! steps in a Redis stream read by a consumer group (each node a consumer);
//! retries wait in a sorted set until due. Every transition of a run is one
//! Lua script (`scripts.rs`).

mod batch;
mod keys;
mod listing;
mod queue;
mod registry;
mod requests;
mod schedules;
mod scripts;
mod view;

use super::spec::{parse_json, parse_spec, store_spec};
use requests::{
    ClaimRequest, CommitRequest, FinishRequest, claim_batcher, commit_batcher, finish_batcher,
};

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use redis::aio::ConnectionManager;
use redis::{RedisError, Value};
use tokio::sync::broadcast;

use super::{
    Admission, BackendError, Cancelled, Claim, ClusterView, Committed, Delivery, Limits, NewRun,
    NodeInfo, Outcome, Published, SealedSecret, SecretInfo, Signalled, StateStore, StepWork,
    TenantRecord, VersionRecord,
};
use crate::scheduler::clock::{Clock, Millis};
use crate::scheduler::model::{
    ItemsPage, RunError, RunEvent, RunSpec, RunStatus, RunView, StepStatus, Target, Task, TaskKind,
};
use crate::scheduler::rules;

/// The index under which a finalisation's delivery is kept for its finish.
const FINALIZE: usize = usize::MAX;

/// How a node uses Redis.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub url: String,
    /// This node's name in the consumer group; unique per process.
    pub node: String,
    /// Work a node has held this long without finishing or renewing it is
    /// handed to another node.
    pub visibility: Duration,
    /// The queues this node takes work from, in order (`--queues`).
    pub queues: Vec<String>,
}

impl RedisConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            node: format!("node-{}-{:08x}", std::process::id(), rand::random::<u32>()),
            visibility: Duration::from_secs(30),
            queues: vec![crate::scheduler::flow::DEFAULT_QUEUE.to_string()],
        }
    }
}

/// The shared backend of a cluster of nodes.
pub struct RedisBackend {
    conn: ConnectionManager,
    claims: batch::Batcher<ClaimRequest, Vec<Value>>,
    commits: batch::Batcher<CommitRequest, Vec<Value>>,
    finishes: batch::Batcher<FinishRequest, i64>,
    /// A connection of its own for blocking stream reads, which would stall
    /// every other command on a shared connection.
    reader: tokio::sync::Mutex<ConnectionManager>,
    client: redis::Client,
    scripts: scripts::Scripts,
    config: RedisConfig,
    clock: Arc<dyn Clock>,
    /// Specs are immutable: each node parses a run's spec once.
    specs: Mutex<lru::LruCache<String, Arc<RunSpec>>>,
    loading_specs: tokio::sync::Mutex<()>,
    events: broadcast::Sender<RunEvent>,
    listening: AtomicBool,
    /// Runs that ended while steps of theirs ran, from `weft:cancel`.
    ended: broadcast::Sender<String>,
    watching_ended: AtomicBool,
    /// Delivery tag -> stream entry, for acknowledgement.
    entries: Mutex<HashMap<u64, queue::Entry>>,
    next_tag: AtomicU64,
    /// (run, step, lease) of a claimed attempt -> its delivery tag.
    receipts: Mutex<HashMap<(String, usize, u64), u64>>,
    /// Entries reclaimed from nodes that stopped, waiting to be handed out.
    reclaimed: Mutex<VecDeque<(queue::Entry, Task)>>,
    /// The queues this node takes work from, in order.
    queues: Mutex<Vec<String>>,
    /// Wakes this node's reader: a queue it serves got work, or an attempt
    /// of a tenant it passed over at its `concurrent_steps` ended.
    wake: Arc<tokio::sync::Notify>,
    /// The last take passed over a tenant at its `concurrent_steps`.
    capped: AtomicBool,
}

/// Every error Redis gives is "unavailable", to retry with backoff: an I/O
/// error (refused, reset, timed out) means unreachable, and an error reply
/// (`OOM`, `READONLY`, `MISCONF`, `LOADING`, `BUSY`, `TRYAGAIN`,
/// `CLUSTERDOWN`, `MASTERDOWN`, any other) means it refuses for now. Work is
/// never dropped because Redis said no. A reply that does not parse is
/// [`corrupt`], reported by the caller.
fn unavailable(e: RedisError) -> BackendError {
    if matches!(
        e.kind(),
        redis::ErrorKind::UnexpectedReturnType | redis::ErrorKind::Parse
    ) {
        return corrupt(format!("unexpected reply from Redis: {e}"));
    }
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        BackendError::Unavailable(format!("Redis unreachable: {e}"))
    } else {
        BackendError::Unavailable(format!("Redis refused: {e}"))
    }
}

/// A value as JSON for a script.
fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("JSON")
}

fn corrupt(what: impl std::fmt::Display) -> BackendError {
    BackendError::Corrupt(what.to_string())
}

/// A reply element as text.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        other => text(other)?.parse().ok(),
    }
}

/// The steps of a new run as the create script takes them, built here so
/// that the script does no work per step: the field/value pairs of the
/// steps hash, then the first steps' tasks per queue (`run|s|i|1||now`),
/// or for a run to start later the delayed set's score/member pairs.
fn create_steps(invocation: &mut redis::ScriptInvocation<'_>, spec: &RunSpec) {
    let mut fields: Vec<String> = Vec::with_capacity(spec.workflow.steps.len() * 12);
    let mut queues: Vec<(&str, Vec<String>)> = Vec::new();
    // First steps with a rate limit or a concurrency key: (rate limit or
    // '', step index) pairs.
    let mut gated: Vec<String> = Vec::new();
    for (i, step) in spec.workflow.steps.iter().enumerate() {
        let dependents: Vec<String> = spec
            .workflow
            .dependents(i)
            .iter()
            .map(usize::to_string)
            .collect();
        let status = if step.deps.is_empty() {
            "queued"
        } else {
            "pending"
        };
        fields.extend([
            format!("s{i}"),
            status.to_string(),
            format!("a{i}"),
            "0".into(),
            format!("l{i}"),
            "0".into(),
            format!("w{i}"),
            step.deps.len().to_string(),
            format!("d{i}"),
            dependents.join(","),
            format!("i{i}"),
            step.id.clone(),
        ]);
        if let Some(f) = &step.for_each {
            fields.extend([format!("k{i}"), f.max_concurrency.to_string()]);
        }
        if spec.compensation_pin(i).is_some() {
            fields.extend([format!("cp{i}"), "1".into()]);
        }
        if let Some(queue) = &step.queue {
            fields.extend([format!("qu{i}"), queue.clone()]);
        }
        if let Some(limit) = &step.rate_limit {
            fields.extend([format!("rl{i}"), limit.clone()]);
        }
        // Checked at submission; a key that no longer resolves limits nothing.
        let key = step
            .concurrency
            .as_ref()
            .and_then(|c| Some((c.key_for(&spec.input).ok()?, c.limit)));
        if let Some((key, limit)) = &key {
            fields.extend([
                format!("ck{i}"),
                key.clone(),
                format!("cl{i}"),
                limit.to_string(),
            ]);
        }
        if !step.deps.is_empty() {
            continue;
        }
        if step.rate_limit.is_some() || key.is_some() {
            gated.extend([step.rate_limit.clone().unwrap_or_default(), i.to_string()]);
            continue;
        }
        let queue = step
            .queue
            .as_deref()
            .unwrap_or(crate::scheduler::flow::DEFAULT_QUEUE);
        let at = match queues.iter().position(|(q, _)| *q == queue) {
            Some(at) => at,
            None => {
                queues.push((queue, Vec::new()));
                queues.len() - 1
            }
        };
        let tasks = &mut queues[at].1;
        match spec.start_at {
            Some(due) => tasks.extend([due.to_string(), format!("{}|{i}|1", spec.id)]),
            None => tasks.push(format!("{}|s|{i}|1||{}", spec.id, spec.created_at)),
        }
    }
    invocation.arg(fields.len()).arg(fields).arg(queues.len());
    for (queue, tasks) in queues {
        invocation.arg(queue).arg(tasks.len()).arg(tasks);
    }
    let steps = &spec.workflow.steps;
    invocation
        .arg(u8::from(steps.iter().any(|s| s.rate_limit.is_some())))
        .arg(u8::from(steps.iter().any(|s| s.concurrency.is_some())))
        .arg(gated.len() / 2)
        .arg(gated);
}

impl RedisBackend {
    /// Connects and prepares the stream's consumer group.
    pub async fn connect(
        config: RedisConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, BackendError> {
        let client = redis::Client::open(config.url.as_str())
            .map_err(|e| BackendError::Unavailable(format!("invalid Redis URL: {e}")))?;
        let manager = |response: Duration| {
            redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_response_timeout(Some(response))
                .set_min_delay(Duration::from_millis(50))
                .set_max_delay(Duration::from_secs(2))
                .set_number_of_retries(usize::MAX)
        };
        let conn = client
            .get_connection_manager_with_config(manager(Duration::from_secs(5)))
            .await
            .map_err(unavailable)?;
        let reader = client
            .get_connection_manager_with_config(manager(Duration::from_secs(10)))
            .await
            .map_err(unavailable)?;
        let (events, _) = broadcast::channel(4096);
        let scripts = scripts::Scripts::new();
        let backend = Arc::new(Self {
            claims: claim_batcher(conn.clone(), scripts.claim.clone()),
            commits: commit_batcher(conn.clone(), scripts.commit.clone()),
            finishes: finish_batcher(conn.clone(), scripts.finish.clone()),
            conn,
            reader: tokio::sync::Mutex::new(reader),
            client,
            scripts,
            config: config.clone(),
            clock,
            specs: Mutex::new(lru::LruCache::new(NonZeroUsize::new(4096).unwrap())),
            loading_specs: tokio::sync::Mutex::new(()),
            events,
            listening: AtomicBool::new(false),
            ended: broadcast::channel(1024).0,
            watching_ended: AtomicBool::new(false),
            entries: Mutex::new(HashMap::new()),
            next_tag: AtomicU64::new(1),
            receipts: Mutex::new(HashMap::new()),
            reclaimed: Mutex::new(VecDeque::new()),
            queues: Mutex::new(config.queues.clone()),
            wake: Arc::new(tokio::sync::Notify::new()),
            capped: AtomicBool::new(false),
        });
        backend.ensure_group().await?;
        backend.watch_wakes();
        Ok(backend)
    }

    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// The delivery tag of the claimed attempt (run, step, lease), if this
    /// node claimed it, and its stream entry as the scripts take it.
    fn receipt(&self, run: &str, index: usize, lease: u64) -> (Option<u64>, Option<String>) {
        let receipt = self
            .receipts
            .lock()
            .unwrap()
            .remove(&(run.to_string(), index, lease));
        let entry = receipt.and_then(|tag| {
            self.entries
                .lock()
                .unwrap()
                .get(&tag)
                .map(queue::Entry::arg)
        });
        (receipt, entry)
    }

    /// The spec of a run, from this node's cache or from Redis.
    async fn spec(&self, run: &str) -> Result<Option<Arc<RunSpec>>, BackendError> {
        if let Some(spec) = self.specs.lock().unwrap().get(run) {
            return Ok(Some(spec.clone()));
        }
        // One parse per run: the claims of a batch for a run this node has not
        // seen would otherwise each parse the same (possibly large) document.
        let _one_at_a_time = self.loading_specs.lock().await;
        if let Some(spec) = self.specs.lock().unwrap().get(run) {
            return Ok(Some(spec.clone()));
        }
        let stored: Option<String> = redis::cmd("HGET")
            .arg(keys::run(run))
            .arg("spec")
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let Some(stored) = stored else {
            return Ok(None);
        };
        let spec = Arc::new(parse_spec(&stored)?);
        self.specs
            .lock()
            .unwrap()
            .put(run.to_string(), spec.clone());
        Ok(Some(spec))
    }
}

#[async_trait::async_trait]
impl StateStore for RedisBackend {
    async fn ping(&self) -> Result<(), BackendError> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn create_run(&self, new: NewRun) -> Result<Admission, BackendError> {
        let spec = &new.spec;
        // Cached before the script runs: its first task may reach this node's
        // worker before the script's answer reaches this call.
        self.specs
            .lock()
            .unwrap()
            .put(spec.id.clone(), new.spec.clone());
        let mut invocation = self.scripts.create.prepare_invoke();
        invocation
            .key(keys::run(&spec.id))
            .key(keys::steps(&spec.id))
            .key(keys::READY)
            .key(keys::active(&spec.tenant))
            .key(match &new.idempotency {
                Some(i) => keys::idempotency(&spec.tenant, &i.key),
                None => keys::idempotency(&spec.tenant, ""),
            })
            .key(keys::tenant_runs(&spec.tenant))
            .key(keys::DELAYED)
            .arg(&spec.id)
            .arg(store_spec(spec))
            .arg(&spec.tenant)
            .arg(spec.created_at)
            .arg(new.max_active)
            .arg(if new.idempotency.is_some() { "1" } else { "0" })
            .arg(
                new.idempotency
                    .as_ref()
                    .map_or("", |i| i.fingerprint.as_str()),
            )
            .arg(spec.defaults.retention_ms)
            .arg(spec.workflow.steps.len())
            .arg(crate::scheduler::policy::stored_input_bytes(spec))
            .arg(spec.defaults.steps_per_run)
            .arg(
                if (0..spec.workflow.steps.len()).any(|i| spec.compensation_pin(i).is_some()) {
                    "1"
                } else {
                    "0"
                },
            )
            .arg(spec.workflow_name())
            .arg(spec.parent.as_deref().unwrap_or(""))
            .arg(spec.defaults.run_bytes)
            .arg(spec.parent_step.unwrap_or(0))
            .arg(spec.priority)
            .arg(u8::from(
                spec.workflow.steps.iter().any(|s| s.queue.is_some()),
            ))
            .arg(spec.start_at.unwrap_or(0));
        create_steps(&mut invocation, spec);
        let reply: Vec<Value> = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        match reply.first().and_then(text).as_deref() {
            Some("created") => Ok(Admission::Created),
            Some("existing") => {
                self.specs.lock().unwrap().pop(&spec.id);
                let seen = reply.get(1).and_then(text).unwrap_or_default();
                let (fingerprint, run) = seen.split_once(' ').unwrap_or(("", &seen));
                let same = new
                    .idempotency
                    .as_ref()
                    .is_some_and(|i| i.fingerprint == fingerprint);
                Ok(Admission::Existing {
                    run: run.to_string(),
                    same_request: same,
                })
            }
            Some("limit") => {
                self.specs.lock().unwrap().pop(&spec.id);
                Ok(Admission::AtLimit {
                    active: reply.get(1).and_then(int).unwrap_or(0) as u32,
                })
            }
            _ => Err(corrupt(format!("create: unexpected reply {reply:?}"))),
        }
    }

    async fn claim(&self, delivery: &Delivery, now: Millis) -> Result<Claim, BackendError> {
        let task = &delivery.task;
        let Some(spec) = self.spec(&task.run).await? else {
            return Ok(Claim::Stale);
        };
        let (kind, target, attempt) = match task.kind {
            TaskKind::Step { index, attempt } => ("s", Target::Step(index as usize), attempt),
            TaskKind::Item {
                index,
                item,
                attempt,
            } => ("e", Target::Item(index as usize, item), attempt),
            TaskKind::Compensate { index, attempt } => {
                ("c", Target::Compensation(index as usize), attempt)
            }
            TaskKind::Finalize => ("f", Target::Step(0), 0),
        };
        let index = target.step();
        if kind != "f" && index >= spec.workflow.steps.len() {
            return Ok(Claim::Stale);
        }
        let step = &spec.workflow.steps[index];
        let reads: Vec<usize> = match target {
            _ if kind == "f" => Vec::new(),
            Target::Compensation(_) => step
                .compensate
                .as_ref()
                .map(|c| super::spec::step_roots(&c.input))
                .unwrap_or_default(),
            _ => super::spec::reads_of(step, target, attempt),
        };
        let facts: Vec<usize> = match target {
            Target::Step(_) if kind == "s" && attempt == 1 => step.deps.clone(),
            _ => Vec::new(),
        };
        let reply = self
            .claims
            .call(ClaimRequest {
                run: spec.id.clone(),
                kind,
                index,
                item: match target {
                    Target::Item(_, k) => k,
                    _ => 0,
                },
                attempt,
                max_deliveries: spec.defaults.max_deliveries,
                now,
                reads: reads.clone(),
                facts: facts.clone(),
            })
            .await?;
        match reply.first().and_then(text).as_deref() {
            Some("stale") => Ok(Claim::Stale),
            Some("finalize") => {
                let outputs = reply[2..]
                    .iter()
                    .map(|v| match text(v).as_deref() {
                        None | Some("") => Ok(None),
                        Some(s) => parse_json(s, "step output").map(|v| Some(Arc::new(v))),
                    })
                    .collect::<Result<_, _>>()?;
                // The finish of this run acknowledges its delivery too.
                self.receipts
                    .lock()
                    .unwrap()
                    .insert((spec.id.clone(), FINALIZE, 0), delivery.tag);
                Ok(Claim::Finalize { spec, outputs })
            }
            Some("step") => {
                let lease = reply.get(1).and_then(int).unwrap_or(0) as u64;
                // The commit of this attempt acknowledges its delivery too.
                self.receipts
                    .lock()
                    .unwrap()
                    .insert((spec.id.clone(), index, lease), delivery.tag);
                let item = match reply.get(4).and_then(text) {
                    Some(s) if !s.is_empty() => Some(Arc::new(parse_json(&s, "item")?)),
                    _ => None,
                };
                let mut deps = Vec::with_capacity(reads.len());
                for (d, v) in reads.iter().zip(&reply[5..]) {
                    if let Some(s) = text(v).filter(|s| !s.is_empty()) {
                        deps.push((*d, Arc::new(parse_json(&s, "step output")?)));
                    }
                }
                let mut dep_facts = Vec::with_capacity(facts.len());
                let rest = reply.get(5 + reads.len()..).unwrap_or_default();
                if rest.is_empty() {
                    // Nothing told: every dependency succeeded.
                    dep_facts.extend(facts.iter().map(|&d| (d, StepStatus::Succeeded, None)));
                }
                for (d, pair) in facts.iter().zip(rest.chunks(2)) {
                    let status = pair.first().and_then(text).unwrap_or_default();
                    let status: StepStatus = view::status(&status)?;
                    let error = match pair.get(1).and_then(text) {
                        Some(e) if !e.is_empty() => Some(
                            serde_json::from_str(&e)
                                .map_err(|e| corrupt(format!("step error: {e}")))?,
                        ),
                        _ => None,
                    };
                    dep_facts.push((*d, status, error));
                }
                Ok(Claim::Step(StepWork {
                    spec,
                    index,
                    target,
                    attempt,
                    lease,
                    deps,
                    facts: dep_facts,
                    item,
                    over_delivered: reply.get(2).and_then(text).as_deref() == Some("over"),
                    woken: reply.get(2).and_then(text).as_deref() == Some("woken"),
                }))
            }
            _ => Err(corrupt(format!("claim: unexpected reply {reply:?}"))),
        }
    }

    async fn commit(
        &self,
        run: &str,
        target: Target,
        lease: u64,
        outcome: Outcome,
        now: Millis,
    ) -> Result<Committed, BackendError> {
        let Some(spec) = self.spec(run).await? else {
            return Ok(Committed::default());
        };
        let index = target.step();
        let step = spec.workflow.steps[index].id.clone();
        let run_error = |failure: &crate::engine::Failure| {
            json(&RunError {
                code: failure.code.clone(),
                message: format!("step `{step}` failed: {}", failure.message),
                step: Some(step.clone()),
            })
        };
        let bytes = outcome.stored_bytes();
        let (kind, payload, logs, due, run_error, second, extras) = match outcome {
            Outcome::Succeeded { output, logs } => (
                "ok",
                output.to_string(),
                logs,
                0,
                String::new(),
                String::new(),
                Vec::new(),
            ),
            Outcome::Retry { failure, logs, due } => (
                "retry",
                json(&failure),
                logs,
                due,
                String::new(),
                String::new(),
                Vec::new(),
            ),
            Outcome::Failed {
                failure,
                logs,
                continues,
            } => {
                let kind = if continues { "cont" } else { "fail" };
                let (second, error) = match target {
                    Target::Item(_, k) => {
                        let step_failure = rules::item_failure(k, &failure);
                        (json(&step_failure), run_error(&step_failure))
                    }
                    _ => (String::new(), run_error(&failure)),
                };
                (kind, json(&failure), logs, 0, error, second, Vec::new())
            }
            Outcome::Skipped { reason, error } => (
                "skip",
                reason,
                Vec::new(),
                0,
                String::new(),
                error.map(|e| json(&e)).unwrap_or_default(),
                Vec::new(),
            ),
            // The Lua commit accepts a wait for a step's own attempt only.
            Outcome::Wait { due, signal } => (
                "wait",
                signal.unwrap_or_default(),
                Vec::new(),
                due.unwrap_or(0),
                String::new(),
                String::new(),
                Vec::new(),
            ),
            Outcome::Expand { items } => {
                let too_many = rules::too_many_items(items.len(), spec.defaults.steps_per_run);
                (
                    "expand",
                    String::new(),
                    Vec::new(),
                    0,
                    run_error(&too_many),
                    json(&too_many),
                    items.iter().map(|i| i.to_string()).collect(),
                )
            }
        };
        let (receipt, entry) = self.receipt(run, index, lease);
        let reply = self
            .commits
            .call(CommitRequest {
                run: run.to_string(),
                tenant: spec.tenant.clone(),
                target: match target {
                    Target::Step(_) => "s",
                    Target::Item(..) => "e",
                    Target::Compensation(_) => "c",
                },
                index,
                item: match target {
                    Target::Item(_, k) => k,
                    _ => 0,
                },
                lease,
                kind,
                payload,
                logs: serde_json::to_string(&logs).expect("JSON"),
                now,
                due,
                bytes,
                run_bytes: spec.defaults.run_bytes,
                run_error,
                entry: entry.unwrap_or_default(),
                second,
                extras,
            })
            .await?;
        let applied = reply.first().and_then(int) == Some(1);
        if reply.get(3).and_then(int) == Some(1)
            && let Some(tag) = receipt
        {
            self.entries.lock().unwrap().remove(&tag);
            self.attempt_ended();
        }
        let retrying = reply.get(1).and_then(int) == Some(1);
        let run_ended = match reply.get(2).and_then(text).as_deref() {
            Some(s) if !s.is_empty() => Some(view::status(s)?),
            _ => None,
        };
        let cancelled = reply
            .iter()
            .skip(4)
            .filter_map(|v| int(v).map(|i| i as usize))
            .collect();
        Ok(Committed {
            applied,
            retrying,
            cancelled,
            run_ended,
        })
    }

    async fn finish(
        &self,
        run: &str,
        result: Result<serde_json::Value, RunError>,
        now: Millis,
    ) -> Result<bool, BackendError> {
        let Some(spec) = self.spec(run).await? else {
            return Ok(false);
        };
        let (kind, payload) = match result {
            Ok(output) => ("ok", output.to_string()),
            Err(error) => ("err", serde_json::to_string(&error).expect("JSON")),
        };
        let (receipt, entry) = self.receipt(run, FINALIZE, 0);
        // Should the call fail, the worker's own acknowledgement of the
        // delivery follows the finish it tries again.
        let ended = self
            .finishes
            .call(FinishRequest {
                run: run.to_string(),
                tenant: spec.tenant.clone(),
                kind,
                payload,
                now,
                entry: entry.unwrap_or_default(),
            })
            .await?;
        if let Some(tag) = receipt {
            self.entries.lock().unwrap().remove(&tag);
            self.attempt_ended();
        }
        Ok(ended == 1)
    }

    async fn cancel(
        &self,
        tenant: &str,
        run: &str,
        now: Millis,
    ) -> Result<Option<Cancelled>, BackendError> {
        let reply: Vec<Value> = self
            .scripts
            .cancel
            .key(keys::run(run))
            .key(keys::steps(run))
            .key(keys::active(tenant))
            .key(keys::items(run))
            .key(keys::READY)
            .arg(tenant)
            .arg(now)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        match reply.first().and_then(text).as_deref() {
            Some("missing") => Ok(None),
            Some("ended") => {
                let status = reply.get(1).and_then(text).unwrap_or_default();
                let status: RunStatus = serde_json::from_value(serde_json::Value::String(status))
                    .map_err(|e| corrupt(format!("run status: {e}")))?;
                Ok(Some(Cancelled::AlreadyEnded(status)))
            }
            Some("cancelled") => Ok(Some(Cancelled::Now {
                status: view::status(&reply.get(1).and_then(text).unwrap_or_default())?,
                stopped: reply[2..]
                    .iter()
                    .filter_map(|v| int(v).map(|i| i as usize))
                    .collect(),
            })),
            _ => Err(corrupt(format!("cancel: unexpected reply {reply:?}"))),
        }
    }

    async fn signal(
        &self,
        tenant: &str,
        run: &str,
        name: &str,
        payload: serde_json::Value,
        now: Millis,
    ) -> Result<Signalled, BackendError> {
        let payload = payload.to_string();
        let reply: Vec<Value> = self
            .scripts
            .signal
            .key(keys::run(run))
            .key(keys::steps(run))
            .key(keys::active(tenant))
            .key(keys::items(run))
            .key(keys::READY)
            .key(keys::DELAYED)
            .arg(tenant)
            .arg(name)
            .arg(&payload)
            .arg(payload.len())
            .arg(now)
            .arg(rules::MAX_BUFFERED_SIGNALS)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let field = |k: usize| reply.get(k).and_then(text).unwrap_or_default();
        match field(0).as_str() {
            "missing" => Ok(Signalled::Missing),
            "finished" => Ok(Signalled::Finished(view::status(&field(1))?)),
            "too_large" => Ok(Signalled::TooLarge {
                run_bytes: field(1).parse().unwrap_or_default(),
            }),
            "full" => Ok(Signalled::Full),
            "delivered" => Ok(Signalled::Delivered { step: field(1) }),
            "kept" => Ok(Signalled::Buffered {
                buffered: field(1).parse().unwrap_or_default(),
            }),
            _ => Err(corrupt(format!("signal: unexpected reply {reply:?}"))),
        }
    }

    async fn run(&self, tenant: &str, run: &str) -> Result<Option<RunView>, BackendError> {
        self.view(tenant, run).await
    }

    async fn list_runs(
        &self,
        tenant: &str,
        query: &crate::backend::listing::RunQuery,
    ) -> Result<crate::backend::listing::RunsPage, BackendError> {
        RedisBackend::list_runs(self, tenant, query).await
    }

    async fn items(
        &self,
        tenant: &str,
        run: &str,
        step: &str,
        cursor: u32,
        limit: u32,
    ) -> Result<Option<ItemsPage>, BackendError> {
        self.items_page(tenant, run, step, cursor, limit).await
    }

    fn subscribe(&self) -> broadcast::Receiver<RunEvent> {
        self.listen();
        self.events.subscribe()
    }

    fn ended_runs(&self) -> Option<broadcast::Receiver<String>> {
        Some(self.watch_ended())
    }

    async fn put_blob(&self, digest: &str, bytes: Bytes) -> Result<(), BackendError> {
        self.put_blob_now(digest, bytes).await
    }

    async fn blob(&self, digest: &str) -> Result<Option<Bytes>, BackendError> {
        self.blob_now(digest).await
    }

    async fn publish(
        &self,
        tenant: &str,
        record: VersionRecord,
    ) -> Result<Published, BackendError> {
        self.publish_now(tenant, record).await
    }

    async fn versions(&self, tenant: &str, name: &str) -> Result<Vec<VersionRecord>, BackendError> {
        self.versions_now(tenant, name).await
    }

    async fn component_names(&self, tenant: &str) -> Result<Vec<String>, BackendError> {
        self.component_names_now(tenant).await
    }

    async fn create_tenant(&self, tenant: TenantRecord) -> Result<bool, BackendError> {
        self.create_tenant_now(tenant).await
    }

    async fn tenant(&self, name: &str) -> Result<Option<TenantRecord>, BackendError> {
        self.tenant_now(name).await
    }

    async fn tenant_by_key(&self, key_hash: &str) -> Result<Option<TenantRecord>, BackendError> {
        self.tenant_by_key_now(key_hash).await
    }

    async fn set_limits(&self, name: &str, limits: Limits) -> Result<bool, BackendError> {
        self.set_limits_now(name, limits).await
    }

    async fn put_secret(
        &self,
        tenant: &str,
        name: &str,
        secret: SealedSecret,
    ) -> Result<bool, BackendError> {
        self.put_secret_now(tenant, name, secret).await
    }

    async fn secret(&self, tenant: &str, name: &str) -> Result<Option<SealedSecret>, BackendError> {
        self.secret_now(tenant, name).await
    }

    async fn secrets(&self, tenant: &str) -> Result<Vec<SecretInfo>, BackendError> {
        self.secrets_now(tenant).await
    }

    async fn delete_secret(&self, tenant: &str, name: &str) -> Result<bool, BackendError> {
        self.delete_secret_now(tenant, name).await
    }

    async fn declare_queue(&self, name: &str) -> Result<bool, BackendError> {
        self.declare_queue_now(name).await
    }

    async fn put_rate_limit(
        &self,
        tenant: &str,
        limit: super::RateLimit,
    ) -> Result<bool, BackendError> {
        // Its waiting tasks, if any, are looked at again at once.
        let (added, _): (i64, i64) = redis::pipe()
            .atomic()
            .hset(keys::rate_limits(tenant), &limit.name, json(&limit))
            .cmd("ZADD")
            .arg(keys::RATE_DUE)
            .arg("XX")
            .arg(0)
            .arg(format!("{tenant}|{}", limit.name))
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(added == 1)
    }

    async fn rate_limits(&self, tenant: &str) -> Result<Vec<super::RateLimit>, BackendError> {
        let all: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(keys::rate_limits(tenant))
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let mut limits: Vec<super::RateLimit> = all
            .values()
            .map(|v| {
                parse_json(v, "rate limit").and_then(|v| serde_json::from_value(v).map_err(corrupt))
            })
            .collect::<Result<_, _>>()?;
        limits.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(limits)
    }

    async fn delete_rate_limit(&self, tenant: &str, name: &str) -> Result<bool, BackendError> {
        let (deleted, _): (i64, i64) = redis::pipe()
            .atomic()
            .hdel(keys::rate_limits(tenant), name)
            .cmd("ZADD")
            .arg(keys::RATE_DUE)
            .arg("XX")
            .arg(0)
            .arg(format!("{tenant}|{name}"))
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(deleted == 1)
    }

    async fn create_schedule(
        &self,
        tenant: &str,
        schedule: super::Schedule,
    ) -> Result<bool, BackendError> {
        self.put_schedule_now(tenant, &schedule, None).await
    }

    async fn schedules(&self, tenant: &str) -> Result<Vec<super::Schedule>, BackendError> {
        self.schedules_now(tenant).await
    }

    async fn schedule(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Option<super::Schedule>, BackendError> {
        self.schedule_now(tenant, name).await
    }

    async fn update_schedule(
        &self,
        tenant: &str,
        schedule: super::Schedule,
    ) -> Result<bool, BackendError> {
        let Some(expected) = schedule.version.checked_sub(1) else {
            return Ok(false);
        };
        self.put_schedule_now(tenant, &schedule, Some(expected))
            .await
    }

    async fn delete_schedule(&self, tenant: &str, name: &str) -> Result<bool, BackendError> {
        self.delete_schedule_now(tenant, name).await
    }

    async fn due_schedules(
        &self,
        now: Millis,
        max: usize,
    ) -> Result<Vec<(String, super::Schedule)>, BackendError> {
        self.due_schedules_now(now, max).await
    }

    async fn queues(&self) -> Result<Vec<super::QueueStats>, BackendError> {
        self.queues_now().await
    }

    async fn heartbeat(&self, node: &NodeInfo) -> Result<(), BackendError> {
        self.heartbeat_now(node).await
    }

    async fn cluster(&self) -> Result<ClusterView, BackendError> {
        self.cluster_now().await
    }
}
