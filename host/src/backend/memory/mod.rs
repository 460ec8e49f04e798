//! The embedded backend: every run and the queue in this process's memory,
//! behind one lock so that each transition is atomic. Over a data directory
//! (`weft serve`) it is durable: every change is written to the file store
//! (`store`) in group commits (`journal`) before anyone relies on it, and read
//! back at start; component blobs go to their own files. Without one
//! (`weft exec`, unit tests) nothing outlives the process.

mod journal;
mod listing;
mod outcomes;
mod ready;
mod registry;
mod rows;
mod runs;
pub mod store;

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::{Notify, broadcast, watch};

pub use store::Fsync;

use super::{
    Admission, BackendError, Cancelled, Claim, ClusterView, Committed, Delivery, Limits, NewRun,
    NodeInfo, Outcome, Published, QueueStats, RateLimit, Schedule, SealedSecret, SecretInfo,
    Signalled, StateStore, TenantRecord, VersionRecord, WorkQueue,
};
use crate::scheduler::clock::{Clock, Millis};
use crate::scheduler::flow;
use crate::scheduler::model::{ItemsPage, RunError, RunEvent, RunView, Target};

/// How many finished runs the in-memory backend keeps per tenant at most;
/// each run is kept for its tenant's `retention_hours` unless the count
/// pushes it out first. One tenant's runs never push out another's.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub max_finished: usize,
}

impl Retention {
    /// Finished runs kept per tenant unless told otherwise.
    pub const DEFAULT_MAX_FINISHED: u32 = 10_000;
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_finished: Self::DEFAULT_MAX_FINISHED as usize,
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
    /// The file store, when there is one.
    store: Option<Arc<Mutex<store::Store>>>,
    /// Serialises changes of tenants and registry records, so that the store
    /// and memory apply them in the same order.
    persisting: tokio::sync::Mutex<()>,
    /// Wakes the store's writer thread.
    writer: Arc<journal::Signal>,
    /// The last write to the store that is stored.
    written: watch::Sender<u64>,
    /// The writer thread, joined when the backend is dropped so that the
    /// store (and its lock) is closed when the drop returns.
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    retention: Retention,
    /// The queues this node serves, in order.
    queues: Mutex<Arc<[Arc<str>]>>,
}

struct Inner {
    runs: HashMap<Arc<str>, runs::RunState>,
    /// Finished runs by the time they are to be forgotten.
    expiry: BinaryHeap<Reverse<(Millis, Arc<str>)>>,
    /// Each tenant's finished runs, oldest first.
    finished: HashMap<String, VecDeque<Arc<str>>>,
    /// Each tenant's runs, by id (so by creation time), for listings.
    listed: HashMap<String, BTreeSet<Arc<str>>>,
    work: journal::Work,
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

impl MemoryBackend {
    /// A backend keeping everything in memory but blobs, which go to
    /// `blob_dir` if given.
    pub fn new(
        clock: Arc<dyn Clock>,
        blob_dir: Option<PathBuf>,
        retention: Retention,
    ) -> Arc<Self> {
        Self::build(clock, blob_dir, None, retention)
    }

    /// The durable backend of the data directory `dir`: the file store
    /// `dir/weft.db` (created when missing, read back when present) and blobs
    /// in `dir/blobs`. Unfinished runs go on where they were: steps that were
    /// running are delivered again, retries keep their due times.
    pub fn open(
        clock: Arc<dyn Clock>,
        dir: &std::path::Path,
        retention: Retention,
        fsync: Fsync,
    ) -> Result<Arc<Self>, BackendError> {
        let store = store::Store::open(dir, fsync)?;
        let loaded = store.load()?;
        let store = Arc::new(Mutex::new(store));
        let backend = Self::build(
            clock,
            Some(dir.join("blobs")),
            Some(store.clone()),
            retention,
        );
        backend.restore(loaded);
        let thread = journal::spawn_writer(Arc::downgrade(&backend), backend.writer.clone(), store);
        *backend
            .writer_thread
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(thread);
        Ok(backend)
    }

    fn build(
        clock: Arc<dyn Clock>,
        blob_dir: Option<PathBuf>,
        store: Option<Arc<Mutex<store::Store>>>,
        retention: Retention,
    ) -> Arc<Self> {
        let (events, _) = broadcast::channel(4096);
        let mut work = journal::Work::default();
        work.journal = store.is_some().then(journal::Journal::new);
        Arc::new(Self {
            inner: Mutex::new(Inner {
                runs: HashMap::new(),
                expiry: BinaryHeap::new(),
                finished: HashMap::new(),
                listed: HashMap::new(),
                work,
                next_tag: 0,
                blobs: HashMap::new(),
                registry: registry::Registry::default(),
                active: HashMap::new(),
                idempotency: HashMap::new(),
                node: None,
            }),
            ready: Notify::new(),
            events,
            clock,
            blob_dir,
            store,
            persisting: tokio::sync::Mutex::new(()),
            writer: Arc::new(journal::Signal::default()),
            written: watch::Sender::new(0),
            writer_thread: Mutex::new(None),
            retention,
            queues: Mutex::new(Arc::from([Arc::from(flow::DEFAULT_QUEUE)])),
        })
    }

    /// The size of the file store on disk, in bytes; 0 without one.
    pub fn store_bytes(&self) -> u64 {
        self.store
            .as_ref()
            .map_or(0, |s| s.lock().unwrap_or_else(|e| e.into_inner()).size())
    }

    /// Waits until what this backend changed so far is stored (at once
    /// without a file store, or when nothing is left to write).
    async fn stored(&self, point: Option<u64>) {
        let Some(point) = point else {
            return;
        };
        self.writer.want();
        let mut written = self.written.subscribe();
        // The sender lives as long as `self`.
        let _ = written.wait_for(|w| *w >= point).await;
    }

    /// Runs a write of tenants or registry records on the store, off the
    /// async executor; `Ok(None)` without a file store.
    async fn with_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut store::Store) -> Result<T, BackendError> + Send + 'static,
    ) -> Result<Option<T>, BackendError> {
        let Some(store) = self.store.clone() else {
            return Ok(None);
        };
        tokio::task::spawn_blocking(move || f(&mut store.lock().unwrap_or_else(|e| e.into_inner())))
            .await
            .map_err(|e| BackendError::Unavailable(format!("store write: {e}")))?
            .map(Some)
    }

    /// Writes a schedule to the file store, then here; the caller holds
    /// `persisting`.
    async fn store_schedule(&self, tenant: &str, schedule: Schedule) -> Result<(), BackendError> {
        let (owner, name) = (tenant.to_string(), schedule.name.clone());
        let record = serde_json::to_string(&schedule).expect("a schedule serialises");
        self.with_store(move |s| s.put_flow("schedule", &owner, &name, &record))
            .await?;
        self.lock().registry.put_schedule(tenant, schedule);
        Ok(())
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
        let (admission, pushed, point) = self.create_run_now(new);
        if pushed {
            self.ready.notify_one();
        }
        self.stored(point).await;
        Ok(admission)
    }

    async fn claim(&self, delivery: &Delivery, now: Millis) -> Result<Claim, BackendError> {
        // The delivery is written while the attempt runs, within a few
        // milliseconds or with the next commit (so that a step which keeps
        // killing the process is not delivered without end); the attempt's
        // own commit is written with it or after it.
        let (claim, point) = self.claim_now(&delivery.task, now);
        if point.is_some() {
            self.writer.want_soon();
        }
        Ok(claim)
    }

    async fn commit(
        &self,
        run: &str,
        target: Target,
        lease: u64,
        outcome: Outcome,
        now: Millis,
    ) -> Result<Committed, BackendError> {
        let (committed, pushed, point) = self.commit_now(run, target, lease, outcome, now);
        if pushed {
            self.ready.notify_one();
        }
        self.stored(point).await;
        Ok(committed)
    }

    async fn finish(
        &self,
        run: &str,
        result: Result<serde_json::Value, RunError>,
        now: Millis,
    ) -> Result<bool, BackendError> {
        let (finished, point) = self.finish_now(run, result, now);
        self.stored(point).await;
        Ok(finished)
    }

    async fn cancel(
        &self,
        tenant: &str,
        run: &str,
        now: Millis,
    ) -> Result<Option<Cancelled>, BackendError> {
        let (cancelled, point) = self.cancel_now(tenant, run, now);
        self.stored(point).await;
        Ok(cancelled)
    }

    async fn signal(
        &self,
        tenant: &str,
        run: &str,
        name: &str,
        payload: serde_json::Value,
        now: Millis,
    ) -> Result<Signalled, BackendError> {
        let (signalled, pushed, point) = self.signal_now(tenant, run, name, payload, now);
        if pushed {
            self.ready.notify_one();
        }
        self.stored(point).await;
        Ok(signalled)
    }

    async fn run(&self, tenant: &str, run: &str) -> Result<Option<RunView>, BackendError> {
        Ok(self.view(tenant, run))
    }

    async fn list_runs(
        &self,
        tenant: &str,
        query: &super::listing::RunQuery,
    ) -> Result<super::listing::RunsPage, BackendError> {
        Ok(MemoryBackend::list_runs(self, tenant, query))
    }

    async fn items(
        &self,
        tenant: &str,
        run: &str,
        step: &str,
        cursor: u32,
        limit: u32,
    ) -> Result<Option<ItemsPage>, BackendError> {
        Ok(self.items_page(tenant, run, step, cursor, limit))
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
        let _order = self.persisting.lock().await;
        if let Some(existing) = self.lock().registry.existing(tenant, &record) {
            return Ok(existing);
        }
        let owner = tenant.to_string();
        let stored = record.clone();
        self.with_store(move |s| s.insert_version(&owner, &stored))
            .await?;
        Ok(self.lock().registry.publish(tenant, record))
    }

    async fn versions(&self, tenant: &str, name: &str) -> Result<Vec<VersionRecord>, BackendError> {
        Ok(self.lock().registry.versions(tenant, name))
    }

    async fn component_names(&self, tenant: &str) -> Result<Vec<String>, BackendError> {
        Ok(self.lock().registry.names(tenant))
    }

    async fn create_tenant(&self, tenant: TenantRecord) -> Result<bool, BackendError> {
        let _order = self.persisting.lock().await;
        if self.lock().registry.tenant(&tenant.name).is_some() {
            return Ok(false);
        }
        let stored = tenant.clone();
        if self.with_store(move |s| s.insert_tenant(&stored)).await? == Some(false) {
            return Ok(false);
        }
        Ok(self.lock().registry.create_tenant(tenant))
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
        let queues = self.queues().await?;
        let inner = self.lock();
        Ok(ClusterView {
            backend: "memory".into(),
            nodes: inner.node.iter().cloned().collect(),
            queues,
            pending: inner.runs.values().map(|r| r.running() as u64).sum(),
            delayed: inner.work.delayed.len() as u64,
        })
    }

    async fn put_rate_limit(&self, tenant: &str, limit: RateLimit) -> Result<bool, BackendError> {
        let _order = self.persisting.lock().await;
        let (owner, name) = (tenant.to_string(), limit.name.clone());
        let record = serde_json::to_string(&limit).expect("a rate limit serialises");
        self.with_store(move |s| s.put_flow("rate_limit", &owner, &name, &record))
            .await?;
        let mut inner = self.lock();
        inner.work.ready.rate_changed(tenant, &limit.name);
        let new = inner.registry.put_rate_limit(tenant, limit);
        drop(inner);
        self.ready.notify_one();
        Ok(new)
    }

    async fn rate_limits(&self, tenant: &str) -> Result<Vec<RateLimit>, BackendError> {
        Ok(self.lock().registry.rate_limits(tenant))
    }

    async fn delete_rate_limit(&self, tenant: &str, name: &str) -> Result<bool, BackendError> {
        let _order = self.persisting.lock().await;
        if self.lock().registry.rate(tenant, name).is_none() {
            return Ok(false);
        }
        let (owner, key) = (tenant.to_string(), name.to_string());
        self.with_store(move |s| s.delete_flow("rate_limit", &owner, &key))
            .await?;
        let mut inner = self.lock();
        inner.work.ready.rate_changed(tenant, name);
        let deleted = inner.registry.delete_rate_limit(tenant, name);
        drop(inner);
        self.ready.notify_one();
        Ok(deleted)
    }

    async fn create_schedule(
        &self,
        tenant: &str,
        schedule: Schedule,
    ) -> Result<bool, BackendError> {
        let _order = self.persisting.lock().await;
        if self
            .lock()
            .registry
            .schedule(tenant, &schedule.name)
            .is_some()
        {
            return Ok(false);
        }
        self.store_schedule(tenant, schedule).await?;
        Ok(true)
    }

    async fn schedules(&self, tenant: &str) -> Result<Vec<Schedule>, BackendError> {
        Ok(self.lock().registry.schedules(tenant))
    }

    async fn schedule(&self, tenant: &str, name: &str) -> Result<Option<Schedule>, BackendError> {
        Ok(self.lock().registry.schedule(tenant, name).cloned())
    }

    async fn update_schedule(
        &self,
        tenant: &str,
        schedule: Schedule,
    ) -> Result<bool, BackendError> {
        let _order = self.persisting.lock().await;
        let stored = self
            .lock()
            .registry
            .schedule(tenant, &schedule.name)
            .map(|s| s.version);
        if stored != schedule.version.checked_sub(1) {
            return Ok(false);
        }
        self.store_schedule(tenant, schedule).await?;
        Ok(true)
    }

    async fn delete_schedule(&self, tenant: &str, name: &str) -> Result<bool, BackendError> {
        let _order = self.persisting.lock().await;
        if self.lock().registry.schedule(tenant, name).is_none() {
            return Ok(false);
        }
        let (owner, key) = (tenant.to_string(), name.to_string());
        self.with_store(move |s| s.delete_flow("schedule", &owner, &key))
            .await?;
        Ok(self.lock().registry.delete_schedule(tenant, name))
    }

    async fn due_schedules(
        &self,
        now: Millis,
        max: usize,
    ) -> Result<Vec<(String, Schedule)>, BackendError> {
        Ok(self.lock().registry.due_schedules(now, max))
    }

    async fn declare_queue(&self, name: &str) -> Result<bool, BackendError> {
        let _order = self.persisting.lock().await;
        if self.lock().registry.queues().iter().any(|q| q == name) {
            return Ok(false);
        }
        let queue = name.to_string();
        self.with_store(move |s| s.put_flow("queue", "", &queue, "{}"))
            .await?;
        Ok(self.lock().registry.declare_queue(name))
    }

    async fn queues(&self) -> Result<Vec<QueueStats>, BackendError> {
        let inner = self.lock();
        Ok(inner
            .registry
            .queues()
            .into_iter()
            .map(|name| {
                let depth = inner.work.ready.depth(&name);
                QueueStats {
                    depth: depth.depth,
                    oldest_age_seconds: depth.oldest.map_or(0.0, |d| d.as_secs_f64()),
                    name,
                }
            })
            .collect())
    }

    async fn put_secret(
        &self,
        tenant: &str,
        name: &str,
        secret: SealedSecret,
    ) -> Result<bool, BackendError> {
        let _order = self.persisting.lock().await;
        let (owner, key, stored) = (tenant.to_string(), name.to_string(), secret.clone());
        self.with_store(move |s| s.put_secret(&owner, &key, &stored))
            .await?;
        Ok(self.lock().registry.put_secret(tenant, name, secret))
    }

    async fn secret(&self, tenant: &str, name: &str) -> Result<Option<SealedSecret>, BackendError> {
        Ok(self.lock().registry.secret(tenant, name))
    }

    async fn secrets(&self, tenant: &str) -> Result<Vec<SecretInfo>, BackendError> {
        Ok(self.lock().registry.secrets(tenant))
    }

    async fn delete_secret(&self, tenant: &str, name: &str) -> Result<bool, BackendError> {
        let _order = self.persisting.lock().await;
        if !self.lock().registry.has_secret(tenant, name) {
            return Ok(false);
        }
        let (owner, key) = (tenant.to_string(), name.to_string());
        self.with_store(move |s| s.delete_secret(&owner, &key))
            .await?;
        Ok(self.lock().registry.delete_secret(tenant, name))
    }

    async fn set_limits(&self, name: &str, limits: Limits) -> Result<bool, BackendError> {
        let _order = self.persisting.lock().await;
        let Some(mut tenant) = self.lock().registry.tenant(name) else {
            return Ok(false);
        };
        tenant.limits = limits.clone();
        self.with_store(move |s| s.update_tenant(&tenant)).await?;
        Ok(self.lock().registry.set_limits(name, limits))
    }
}

#[async_trait::async_trait]
impl WorkQueue for MemoryBackend {
    async fn next(&self, max: usize) -> Result<Vec<Delivery>, BackendError> {
        loop {
            let ready = self.ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            let queues = self
                .queues
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let next_due = {
                let mut inner = self.lock();
                let now = self.clock.now();
                inner.work.promote_due(now);
                let Inner { work, registry, .. } = &mut *inner;
                let rated = work.ready.release_rated(now, |t, n| registry.rate(t, n));
                let taken = work.ready.take(&queues, max, |t| registry.share(t));
                if !taken.is_empty() {
                    let mut out = Vec::with_capacity(taken.len());
                    for (task, tenant) in taken {
                        inner.next_tag += 1;
                        let tag = inner.next_tag;
                        inner.work.ready.hand_out(tag, tenant, &task);
                        out.push(Delivery { task, tag });
                    }
                    let Inner { work, registry, .. } = &*inner;
                    if work.ready.any_for(&queues, |t| registry.share(t)) {
                        // Someone else may take the rest.
                        self.ready.notify_one();
                    }
                    return Ok(out);
                }
                let delayed = inner.work.delayed.peek().map(|Reverse(d)| d.due);
                match (delayed, rated) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
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

    async fn ack(&self, deliveries: &[Delivery]) -> Result<(), BackendError> {
        // Nothing is redelivered within one process: a claimed task is the
        // worker's. Its tenant runs one attempt fewer, which may let more of
        // its work go.
        let mut inner = self.lock();
        for d in deliveries {
            inner.work.ready.done(d.tag);
        }
        drop(inner);
        self.ready.notify_one();
        Ok(())
    }

    async fn depth(&self) -> Result<u64, BackendError> {
        Ok(self.lock().work.ready.len() as u64)
    }

    fn serve_queues(&self, queues: &[String]) {
        let queues: Vec<Arc<str>> = queues.iter().map(|q| Arc::from(q.as_str())).collect();
        *self.queues.lock().unwrap_or_else(|e| e.into_inner()) = Arc::from(queues);
        self.ready.notify_one();
    }
}

impl Inner {
    /// Books a run that just ended: retention and the tenant's active count.
    fn ended(&mut self, now: Millis, run: Arc<str>, spec: &crate::scheduler::model::RunSpec) {
        self.work.ready.unplace(&run);
        self.retain(now, run, spec);
        if spec.parent.is_none()
            && let Some(n) = self.active.get_mut(&spec.tenant)
        {
            *n = n.saturating_sub(1);
        }
    }

    /// Keeps a run that ended at `at` for its retention.
    fn retain(&mut self, at: Millis, run: Arc<str>, spec: &crate::scheduler::model::RunSpec) {
        let due = at.saturating_add(spec.defaults.retention_ms);
        self.expiry.push(Reverse((due, run.clone())));
        self.finished
            .entry(spec.tenant.clone())
            .or_default()
            .push_back(run);
    }
}

impl Drop for MemoryBackend {
    fn drop(&mut self) {
        self.writer.stop();
        let thread = self
            .writer_thread
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        // The writer thread itself may hold the last handle; it ends by itself.
        if let Some(thread) = thread
            && thread.thread().id() != std::thread::current().id()
        {
            let _ = thread.join();
        }
    }
}
