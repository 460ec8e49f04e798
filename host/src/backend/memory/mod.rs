//! The embedded backend: every run and the queue in this process's memory,
//! behind one lock so that each transition is atomic; component blobs go to the
//! data directory when there is one.

mod registry;
mod runs;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::{Notify, broadcast};

use super::{
    Admission, BackendError, Cancelled, Claim, ClusterView, Committed, Delivery, Limits, NewRun,
    NodeInfo, Outcome, Published, QueueInfo, StateStore, TenantRecord, VersionRecord, WorkQueue,
};
use crate::scheduler::clock::{Clock, Millis};
use crate::scheduler::model::{RunError, RunEvent, RunView, Task};

/// How many finished runs the in-memory backend keeps per tenant at most;
/// each run is kept for its tenant's `retention_hours` unless the count
/// pushes it out first. One tenant's runs never push out another's.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub max_finished: usize,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_finished: 10_000,
        }
    }
}

/// The embedded, single-process backend.
pub struct MemoryBackend {
    inner: Mutex<Inner>,
    ready: Notify,
    events: broadcast::Sender<RunEvent>,
    clock: Arc<dyn Clock>,
    blob_dir: Option<PathBuf>,
    /// Where tenants and registry records are kept across restarts, if anywhere.
    state_file: Option<PathBuf>,
    /// Serialises writes of `state_file`.
    persisting: tokio::sync::Mutex<()>,
    retention: Retention,
}

struct Inner {
    runs: HashMap<Arc<str>, runs::RunState>,
    /// Finished runs by the time they are to be forgotten.
    expiry: BinaryHeap<Reverse<(Millis, Arc<str>)>>,
    /// Each tenant's finished runs, oldest first.
    finished: HashMap<String, VecDeque<Arc<str>>>,
    queue: VecDeque<Task>,
    delayed: BinaryHeap<Reverse<Delayed>>,
    seq: u64,
    next_tag: u64,
    blobs: HashMap<String, Bytes>,
    registry: registry::Registry,
    /// Unfinished runs per tenant.
    active: HashMap<String, u32>,
    /// `(tenant, Idempotency-Key)` -> (request fingerprint, run).
    idempotency: HashMap<(String, String), (String, Arc<str>)>,
    /// The one node of this backend, as its last heartbeat described it.
    node: Option<NodeInfo>,
}

/// A retry waiting for its due time; ordered by time, then by insertion.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Delayed {
    due: Millis,
    seq: u64,
    task: TaskKey,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct TaskKey {
    run: Arc<str>,
    index: u32,
    attempt: u32,
}

impl MemoryBackend {
    /// A backend keeping everything in memory but blobs, which go to
    /// `blob_dir` if given.
    pub fn new(
        clock: Arc<dyn Clock>,
        blob_dir: Option<PathBuf>,
        retention: Retention,
    ) -> Arc<Self> {
        Self::build(
            clock,
            blob_dir,
            None,
            registry::Registry::default(),
            retention,
        )
    }

    /// A backend over the data directory `dir`: blobs in `dir/blobs`, tenants
    /// and registry records in `dir/state/registry.json` (read back here), runs
    /// in memory.
    pub fn open(
        clock: Arc<dyn Clock>,
        dir: &std::path::Path,
        retention: Retention,
    ) -> Result<Arc<Self>, BackendError> {
        let state_file = dir.join("state").join("registry.json");
        let registry = match std::fs::read(&state_file) {
            Ok(bytes) => registry::Registry::from_json(&bytes)
                .map_err(|e| BackendError::Corrupt(format!("{}: {e}", state_file.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => registry::Registry::default(),
            Err(e) => {
                return Err(BackendError::Unavailable(format!(
                    "{}: {e}",
                    state_file.display()
                )));
            }
        };
        Ok(Self::build(
            clock,
            Some(dir.join("blobs")),
            Some(state_file),
            registry,
            retention,
        ))
    }

    fn build(
        clock: Arc<dyn Clock>,
        blob_dir: Option<PathBuf>,
        state_file: Option<PathBuf>,
        registry: registry::Registry,
        retention: Retention,
    ) -> Arc<Self> {
        let (events, _) = broadcast::channel(4096);
        Arc::new(Self {
            inner: Mutex::new(Inner {
                runs: HashMap::new(),
                expiry: BinaryHeap::new(),
                finished: HashMap::new(),
                queue: VecDeque::new(),
                delayed: BinaryHeap::new(),
                seq: 0,
                next_tag: 0,
                blobs: HashMap::new(),
                registry,
                active: HashMap::new(),
                idempotency: HashMap::new(),
                node: None,
            }),
            ready: Notify::new(),
            events,
            clock,
            blob_dir,
            state_file,
            persisting: tokio::sync::Mutex::new(()),
            retention,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a transition half done
        // (each one is computed before it is applied), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn emit(&self, make: impl FnOnce() -> RunEvent) {
        if self.events.receiver_count() > 0 {
            let _ = self.events.send(make());
        }
    }
}

#[async_trait::async_trait]
impl StateStore for MemoryBackend {
    async fn create_run(&self, new: NewRun) -> Result<Admission, BackendError> {
        let (admission, pushed) = self.create_run_now(new);
        if pushed {
            self.ready.notify_one();
        }
        Ok(admission)
    }

    async fn claim(&self, delivery: &Delivery, now: Millis) -> Result<Claim, BackendError> {
        Ok(self.claim_now(&delivery.task, now))
    }

    async fn commit(
        &self,
        run: &str,
        index: usize,
        lease: u64,
        outcome: Outcome,
        now: Millis,
    ) -> Result<Committed, BackendError> {
        let (committed, pushed) = self.commit_now(run, index, lease, outcome, now);
        if pushed {
            self.ready.notify_one();
        }
        Ok(committed)
    }

    async fn finish(
        &self,
        run: &str,
        result: Result<serde_json::Value, RunError>,
        now: Millis,
    ) -> Result<bool, BackendError> {
        Ok(self.finish_now(run, result, now))
    }

    async fn cancel(
        &self,
        tenant: &str,
        run: &str,
        now: Millis,
    ) -> Result<Option<Cancelled>, BackendError> {
        Ok(self.cancel_now(tenant, run, now))
    }

    async fn run(&self, tenant: &str, run: &str) -> Result<Option<RunView>, BackendError> {
        Ok(self.view(tenant, run))
    }

    fn subscribe(&self) -> broadcast::Receiver<RunEvent> {
        self.events.subscribe()
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
        let published = self.lock().registry.publish(tenant, record);
        if matches!(published, Published::Created(_)) {
            self.persist().await?;
        }
        Ok(published)
    }

    async fn versions(&self, tenant: &str, name: &str) -> Result<Vec<VersionRecord>, BackendError> {
        Ok(self.lock().registry.versions(tenant, name))
    }

    async fn component_names(&self, tenant: &str) -> Result<Vec<String>, BackendError> {
        Ok(self.lock().registry.names(tenant))
    }

    async fn create_tenant(&self, tenant: TenantRecord) -> Result<bool, BackendError> {
        let created = self.lock().registry.create_tenant(tenant);
        if created {
            self.persist().await?;
        }
        Ok(created)
    }

    async fn tenant(&self, name: &str) -> Result<Option<TenantRecord>, BackendError> {
        Ok(self.lock().registry.tenant(name))
    }

    async fn tenant_by_key(&self, key_hash: &str) -> Result<Option<TenantRecord>, BackendError> {
        Ok(self.lock().registry.tenant_by_key(key_hash))
    }

    async fn heartbeat(&self, node: &NodeInfo) -> Result<(), BackendError> {
        self.lock().node = Some(node.clone());
        Ok(())
    }

    async fn cluster(&self) -> Result<ClusterView, BackendError> {
        let inner = self.lock();
        Ok(ClusterView {
            backend: "memory".into(),
            nodes: inner.node.iter().cloned().collect(),
            queues: vec![QueueInfo {
                name: "ready".into(),
                depth: inner.queue.len() as u64,
                pending: inner.runs.values().map(|r| r.running() as u64).sum(),
                delayed: inner.delayed.len() as u64,
            }],
        })
    }

    async fn set_limits(&self, name: &str, limits: Limits) -> Result<bool, BackendError> {
        let changed = self.lock().registry.set_limits(name, limits);
        if changed {
            self.persist().await?;
        }
        Ok(changed)
    }
}

#[async_trait::async_trait]
impl WorkQueue for MemoryBackend {
    async fn next(&self, max: usize) -> Result<Vec<Delivery>, BackendError> {
        loop {
            let ready = self.ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            let next_due = {
                let mut inner = self.lock();
                inner.promote_due(self.clock.now());
                let take = max.min(inner.queue.len());
                if take > 0 {
                    let mut out = Vec::with_capacity(take);
                    for task in inner.queue.drain(..take) {
                        out.push(Delivery { task, tag: 0 });
                    }
                    for d in &mut out {
                        inner.next_tag += 1;
                        d.tag = inner.next_tag;
                    }
                    if !inner.queue.is_empty() {
                        // Someone else may take the rest.
                        self.ready.notify_one();
                    }
                    return Ok(out);
                }
                inner.delayed.peek().map(|Reverse(d)| d.due)
            };
            match next_due {
                Some(due) => {
                    tokio::select! {
                        _ = &mut ready => {}
                        _ = self.clock.sleep_until(due) => {}
                    }
                }
                None => ready.await,
            }
        }
    }

    async fn ack(&self, _deliveries: &[Delivery]) -> Result<(), BackendError> {
        // Nothing is redelivered within one process: a claimed task is the worker's.
        Ok(())
    }

    async fn depth(&self) -> Result<u64, BackendError> {
        Ok(self.lock().queue.len() as u64)
    }
}

impl Inner {
    /// Books a run that just ended: retention and the tenant's active count.
    fn ended(&mut self, now: Millis, run: Arc<str>, spec: &crate::scheduler::model::RunSpec) {
        let due = now.saturating_add(spec.defaults.retention_ms);
        self.expiry.push(Reverse((due, run.clone())));
        self.finished
            .entry(spec.tenant.clone())
            .or_default()
            .push_back(run);
        if let Some(n) = self.active.get_mut(&spec.tenant) {
            *n = n.saturating_sub(1);
        }
    }

    fn push_delayed(&mut self, due: Millis, run: Arc<str>, index: u32, attempt: u32) {
        self.seq += 1;
        self.delayed.push(Reverse(Delayed {
            due,
            seq: self.seq,
            task: TaskKey {
                run,
                index,
                attempt,
            },
        }));
    }

    fn promote_due(&mut self, now: Millis) {
        while let Some(Reverse(d)) = self.delayed.peek() {
            if d.due > now {
                break;
            }
            let Reverse(d) = self.delayed.pop().expect("peeked");
            self.queue.push_back(Task {
                run: d.task.run,
                kind: crate::scheduler::model::TaskKind::Step {
                    index: d.task.index,
                    attempt: d.task.attempt,
                },
            });
        }
    }
}
