//! The embedded backend's ready work: per queue and tenant, taken by the
//! rules of `scheduler::flow` (fair share between tenants, priority within
//! one, each tenant's `concurrent_steps`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::scheduler::flow::{self, Share};
use crate::scheduler::model::{Task, TaskKind};
use std::time::{Duration, Instant};

/// Where a run's tasks wait.
#[derive(Debug, Clone)]
pub(super) struct Place {
    pub tenant: Arc<str>,
    pub priority: u8,
    /// What each step names of flow control; empty when no step names any.
    steps: Arc<[StepPlace]>,
}

/// A step's queue (None: the default), rate limit and concurrency key.
#[derive(Debug, Clone, Default)]
struct StepPlace {
    queue: Option<Arc<str>>,
    rate: Option<Arc<str>>,
    key: Option<HeldKey>,
}

/// A concurrency key as resolved for a run, and how many may hold it.
pub(super) type HeldKey = (Arc<str>, u32);

impl Place {
    /// Where the tasks of the run `spec` go.
    pub fn of(spec: &crate::scheduler::model::RunSpec) -> Self {
        let steps = &spec.workflow.steps;
        let plain = |s: &crate::workflow::Step| {
            s.queue.is_none() && s.rate_limit.is_none() && s.concurrency.is_none()
        };
        let steps = if steps.iter().all(plain) {
            Arc::from(Vec::new())
        } else {
            steps
                .iter()
                .map(|s| StepPlace {
                    queue: s.queue.as_deref().map(Arc::from),
                    rate: s.rate_limit.as_deref().map(Arc::from),
                    // Checked at submission; a key that no longer resolves
                    // limits nothing.
                    key: s
                        .concurrency
                        .as_ref()
                        .and_then(|c| Some((Arc::from(c.key_for(&spec.input).ok()?), c.limit))),
                })
                .collect()
        };
        Self {
            tenant: Arc::from(spec.tenant.as_str()),
            priority: spec.priority,
            steps,
        }
    }

    /// What the step of a task names; for its rate limit and concurrency
    /// key, `own` limits it to the step's own attempts and its items'
    /// (not its compensation's).
    fn step(&self, kind: &TaskKind, own: bool) -> Option<&StepPlace> {
        let index = match kind {
            TaskKind::Step { index, .. } | TaskKind::Item { index, .. } => *index,
            TaskKind::Compensate { index, .. } if !own => *index,
            TaskKind::Compensate { .. } | TaskKind::Finalize => return None,
        };
        self.steps.get(index as usize)
    }

    /// The concurrency key a task holds while it runs, with its limit.
    fn key(&self, kind: &TaskKind) -> Option<&HeldKey> {
        self.step(kind, true)?.key.as_ref()
    }

    /// The rate limit a task waits for before it is ready.
    fn rate(&self, kind: &TaskKind) -> Option<&Arc<str>> {
        self.step(kind, true)?.rate.as_ref()
    }

    /// The queue a task waits in, unless it is the default.
    fn queue(&self, kind: &TaskKind) -> Option<&Arc<str>> {
        self.step(kind, false)?.queue.as_ref()
    }
}

/// One tenant's ready tasks in one queue, in `flow::rank` order.
#[derive(Default)]
struct TenantWork {
    vt: u64,
    tasks: BTreeMap<(std::cmp::Reverse<u8>, u64), (Task, Instant)>,
}

/// One queue's ready work.
#[derive(Default)]
struct QueueWork {
    tenants: HashMap<Arc<str>, TenantWork>,
    /// The tenants with ready work by (virtual time, name).
    rotation: BTreeSet<(u64, Arc<str>)>,
    floor: u64,
    len: usize,
}

/// A queue's figures, as an autoscaler reads them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Depth {
    pub depth: u64,
    /// How long its oldest ready task has waited.
    pub oldest: Option<Duration>,
}

/// Tasks of one tenant's rate limit waiting for tokens, and its bucket.
#[derive(Default)]
struct Rated {
    waiting: std::collections::VecDeque<Task>,
    bucket: Option<flow::Bucket>,
    /// When to look again (0: at once).
    due: crate::scheduler::clock::Millis,
}

/// The attempts holding one concurrency key of a tenant, and the tasks
/// waiting for it.
#[derive(Default)]
struct Keyed {
    holding: u32,
    waiting: std::collections::VecDeque<Task>,
}

/// All ready work, the place of every run that has some, and the attempts
/// running per tenant.
pub(super) struct Ready {
    /// `default` and "", kept so that queueing a task allocates neither.
    default_queue: Arc<str>,
    no_tenant: Arc<str>,
    /// (tenant, concurrency key) -> who holds it and who waits.
    keyed: HashMap<(Arc<str>, Arc<str>), Keyed>,
    /// (tenant, rate limit) -> its waiting tasks and bucket.
    rated: HashMap<(Arc<str>, Arc<str>), Rated>,
    queues: HashMap<Arc<str>, QueueWork>,
    places: HashMap<Arc<str>, Place>,
    running: HashMap<Arc<str>, u32>,
    /// Delivery tag -> the tenant whose attempt it carries, and the
    /// concurrency key it holds.
    held: HashMap<u64, (Arc<str>, Option<Arc<str>>)>,
    seq: u64,
}

impl Default for Ready {
    fn default() -> Self {
        Self {
            default_queue: Arc::from(flow::DEFAULT_QUEUE),
            no_tenant: Arc::from(""),
            keyed: HashMap::new(),
            rated: HashMap::new(),
            queues: HashMap::new(),
            places: HashMap::new(),
            running: HashMap::new(),
            held: HashMap::new(),
            seq: 0,
        }
    }
}

impl Ready {
    /// Records where the tasks of `run` go.
    pub fn place(&mut self, run: Arc<str>, place: Place) {
        self.places.insert(run, place);
    }

    /// Forgets where the tasks of an ended run go; any still queued are
    /// stale and go to the default queue of no tenant.
    pub fn unplace(&mut self, run: &str) {
        self.places.remove(run);
    }

    /// A task is ready: into its tenant's ready work, or to wait for its
    /// rate limit's tokens.
    pub fn push(&mut self, task: Task) {
        if let Some(place) = self.places.get(&task.run)
            && let Some(name) = place.rate(&task.kind)
        {
            let key = (place.tenant.clone(), name.clone());
            self.rated.entry(key).or_default().waiting.push_back(task);
            return;
        }
        self.admit(task);
    }

    /// Lets go the rate-limited tasks whose tokens have come by `now`
    /// (`flow::release`; `rate` gives a tenant's declared limit, and a
    /// limit no longer declared lets every task go); returns when to look
    /// again, if any still wait.
    pub fn release_rated(
        &mut self,
        now: crate::scheduler::clock::Millis,
        rate: impl Fn(&str, &str) -> Option<flow::Rate>,
    ) -> Option<crate::scheduler::clock::Millis> {
        let mut go = Vec::new();
        let mut next: Option<crate::scheduler::clock::Millis> = None;
        for ((tenant, name), rated) in &mut self.rated {
            if rated.waiting.is_empty() {
                continue;
            }
            if rated.due > now {
                next = Some(next.map_or(rated.due, |n| n.min(rated.due)));
                continue;
            }
            let n = match rate(tenant, name) {
                None => rated.waiting.len(),
                Some(r) => {
                    let (n, bucket, due) = flow::release(rated.bucket, r, rated.waiting.len(), now);
                    rated.bucket = Some(bucket);
                    rated.due = due.unwrap_or(0);
                    if let Some(due) = due {
                        next = Some(next.map_or(due, |n| n.min(due)));
                    }
                    n
                }
            };
            go.extend(rated.waiting.drain(..n));
        }
        for task in go {
            self.admit(task);
        }
        next
    }

    /// A task past its rate limit: it takes a slot of its concurrency key
    /// (`flow::may_hold`) and is ready, or waits for one.
    fn admit(&mut self, task: Task) {
        if let Some(place) = self.places.get(&task.run)
            && let Some((key, limit)) = place.key(&task.kind)
        {
            let limit = *limit;
            let keyed = self
                .keyed
                .entry((place.tenant.clone(), key.clone()))
                .or_default();
            if !flow::may_hold(keyed.holding, limit) {
                keyed.waiting.push_back(task);
                return;
            }
            keyed.holding += 1;
        }
        self.push_ready(task);
    }

    /// The tenant's rate limit `name` was set or deleted: its waiting tasks
    /// are looked at again at once.
    pub fn rate_changed(&mut self, tenant: &str, name: &str) {
        if let Some(rated) = self.rated.get_mut(&(Arc::from(tenant), Arc::from(name))) {
            rated.due = 0;
        }
    }

    fn push_ready(&mut self, task: Task) {
        let (tenant, priority, queue) = match self.places.get(&task.run) {
            Some(place) => (
                place.tenant.clone(),
                place.priority,
                place
                    .queue(&task.kind)
                    .unwrap_or(&self.default_queue)
                    .clone(),
            ),
            None => (
                self.no_tenant.clone(),
                flow::DEFAULT_PRIORITY,
                self.default_queue.clone(),
            ),
        };
        self.seq += 1;
        let queue = self.queues.entry(queue).or_default();
        let work = queue.tenants.entry(tenant.clone()).or_default();
        if work.tasks.is_empty() {
            queue.rotation.insert((work.vt, tenant));
        }
        work.tasks
            .insert(flow::rank(priority, self.seq), (task, Instant::now()));
        queue.len += 1;
    }

    /// Takes up to `max` tasks from `queues`, in their order, fairly between
    /// tenants; `share` gives a tenant's limits. Each task is handed out with
    /// its tenant, whose running count it raises until [`Ready::done`].
    pub fn take(
        &mut self,
        queues: &[Arc<str>],
        max: usize,
        share: impl Fn(&str) -> Share,
    ) -> Vec<(Task, Arc<str>)> {
        let mut out = Vec::new();
        for name in queues {
            let Some(queue) = self.queues.get_mut(name) else {
                continue;
            };
            while out.len() < max {
                let running = &self.running;
                let candidates = queue.rotation.iter().map(|entry| {
                    let t = &entry.1;
                    (
                        entry,
                        entry.0,
                        share(t),
                        running.get(t).copied().unwrap_or(0),
                    )
                });
                let Some(visit) = flow::visit(candidates, queue.floor, max - out.len()) else {
                    break;
                };
                let entry: (u64, Arc<str>) = visit.tenant.clone();
                let (at, n, weight) = (visit.at, visit.n, visit.share.weight);
                let tenant = entry.1.clone();
                queue.floor = at;
                queue.rotation.remove(&entry);
                let work = queue.tenants.get_mut(&tenant).expect("in the rotation");
                for _ in 0..n {
                    let Some((_, (task, _))) = work.tasks.pop_first() else {
                        break;
                    };
                    out.push((task, tenant.clone()));
                    queue.len -= 1;
                    *self.running.entry(tenant.clone()).or_default() += 1;
                }
                work.vt = flow::charge(at, n, weight);
                if work.tasks.is_empty() {
                    queue.tenants.remove(&tenant);
                } else {
                    queue.rotation.insert((work.vt, tenant));
                }
                if queue.rotation.is_empty() {
                    queue.floor = 0;
                }
            }
        }
        out
    }

    /// Remembers which tenant the delivery `tag` of `task` runs for, and
    /// the concurrency key it holds.
    pub fn hand_out(&mut self, tag: u64, tenant: Arc<str>, task: &Task) {
        let key = self
            .places
            .get(&task.run)
            .and_then(|p| p.key(&task.kind))
            .map(|(k, _)| k.clone());
        self.held.insert(tag, (tenant, key));
    }

    /// The delivery `tag` is done: its tenant runs one attempt fewer, and
    /// its concurrency key goes to the next task waiting for it.
    pub fn done(&mut self, tag: u64) {
        let Some((tenant, key)) = self.held.remove(&tag) else {
            return;
        };
        if let Some(n) = self.running.get_mut(&tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.running.remove(&tenant);
            }
        }
        let Some(key) = key else { return };
        let slot = (tenant, key);
        let Some(keyed) = self.keyed.get_mut(&slot) else {
            return;
        };
        match keyed.waiting.pop_front() {
            // The slot passes to it.
            Some(next) => self.push_ready(next),
            None => {
                keyed.holding = keyed.holding.saturating_sub(1);
                if keyed.holding == 0 {
                    self.keyed.remove(&slot);
                }
            }
        }
    }

    /// Ready tasks in every queue.
    pub fn len(&self) -> usize {
        self.queues.values().map(|q| q.len).sum()
    }

    /// Whether any of `queues` has a task some tenant may run now.
    pub fn any_for(&self, queues: &[Arc<str>], share: impl Fn(&str) -> Share) -> bool {
        queues.iter().any(|q| {
            self.queues.get(q).is_some_and(|queue| {
                queue.rotation.iter().any(|(_, t)| {
                    flow::may_run(share(t), self.running.get(t).copied().unwrap_or(0))
                })
            })
        })
    }

    /// The figures of queue `name`.
    pub fn depth(&self, name: &str) -> Depth {
        let Some(queue) = self.queues.get(name) else {
            return Depth::default();
        };
        // Within a tenant and priority the first task is the oldest.
        let oldest = queue
            .tenants
            .values()
            .flat_map(|w| {
                (0..=flow::MAX_PRIORITY).filter_map(|p| {
                    let band = flow::rank(p, 0)..=flow::rank(p, u64::MAX);
                    w.tasks.range(band).next().map(|(_, (_, at))| *at)
                })
            })
            .min();
        Depth {
            depth: queue.len as u64,
            oldest: oldest.map(|at| at.elapsed()),
        }
    }
}
