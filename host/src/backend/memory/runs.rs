//! Run and step transitions of the embedded backend, each applied under the
//! backend's one lock. What a transition decides comes from
//! `scheduler::rules`; this file applies it to the state in memory and marks
//! what changed for the file store.

use std::sync::Arc;

use super::MemoryBackend;
use super::journal::Work;
use super::store::RowKey;
use crate::backend::spec::{reads_of, step_roots};
use crate::backend::{Admission, Cancelled, Claim, Committed, NewRun, Outcome, StepWork};
use crate::engine::Failure;
use crate::scheduler::clock::{Millis, rfc3339};
use crate::scheduler::model::{
    RunError, RunEvent, RunSpec, RunStatus, StepRecord, StepStatus, Target, Task, TaskKind,
};
use crate::scheduler::{policy, rules};

pub(super) struct RunState {
    pub(super) spec: Arc<RunSpec>,
    pub(super) status: RunStatus,
    pub(super) output: serde_json::Value,
    pub(super) error: Option<RunError>,
    pub(super) started_at: Option<Millis>,
    pub(super) finished_at: Option<Millis>,
    pub(super) steps: Vec<StepState>,
    /// Steps that have not ended yet; finalisation is due at zero.
    pub(super) remaining: usize,
    /// The `Idempotency-Key` that created the run, forgotten with the run.
    pub(super) idempotency_key: Option<String>,
    /// Bytes of input, outputs, errors and logs stored, counted against `run_bytes`.
    pub(super) bytes: u64,
    /// The last lease given to an attempt of the run: leases are unique in a run.
    pub(super) leases: u64,
    /// Steps ended so far, which numbers them in the order they ended.
    pub(super) ended: u64,
    /// Items of for_each steps expanded so far beyond one per step
    /// (`rules::extra_items`), counted against `steps_per_run`.
    pub(super) items: u64,
}

/// The attempts of a step, of one item, or of a compensation.
#[derive(Debug, Clone, Default)]
pub(super) struct Slot {
    pub(super) rec: StepRecord,
    pub(super) lease: u64,
    /// Deliveries of the attempt now holding it.
    pub(super) deliveries: u32,
    /// When the next attempt is due, while it waits for a retry.
    pub(super) retry_due: Option<Millis>,
}

impl Slot {
    pub(super) fn status(&self) -> StepStatus {
        self.rec.status.unwrap_or(StepStatus::Pending)
    }

    fn queued() -> Self {
        Self {
            rec: StepRecord {
                status: Some(StepStatus::Queued),
                ..StepRecord::default()
            },
            ..Self::default()
        }
    }

    /// Takes attempt `attempt` if it is the current one: true and the
    /// delivery count when it is.
    fn claim(&mut self, attempt: u32, lease: u64, now: Millis) -> bool {
        match self.status() {
            StepStatus::Queued if attempt == self.rec.attempts + 1 => {
                self.rec.status = Some(StepStatus::Running);
                self.rec.attempts = attempt;
                self.rec.started_at.get_or_insert(now);
                self.deliveries = 1;
                self.retry_due = None;
            }
            // Delivered again while running: the new holder supersedes the old one.
            StepStatus::Running if attempt == self.rec.attempts => self.deliveries += 1,
            _ => return false,
        }
        self.lease = lease;
        true
    }

    fn end(&mut self, status: StepStatus, now: Millis) {
        self.rec.status = Some(status);
        self.rec.finished_at = Some(now);
    }
}

pub(super) struct StepState {
    pub(super) slot: Slot,
    /// Dependencies that have not ended yet; the step is ready at zero.
    pub(super) waiting_on: u32,
    /// When the step ended among the run's steps (1, 2, ...); 0 while it has not.
    pub(super) seq: u64,
    /// A for_each step's items, once its list is read.
    pub(super) items: Option<Box<Items>>,
    /// The step's compensation, once it started.
    pub(super) compensation: Option<Slot>,
}

/// The items of a for_each step: the list, and a slot per started item
/// (items start in order, so the started ones are `slots`).
pub(super) struct Items {
    pub(super) values: Vec<Arc<serde_json::Value>>,
    pub(super) slots: Vec<Slot>,
    /// Items that ended.
    pub(super) ended: u32,
    /// When the last progress event went.
    pub(super) last_event: Millis,
}

impl Items {
    pub(super) fn total(&self) -> u32 {
        self.values.len() as u32
    }
}

impl RunState {
    /// Attempts of this run running now.
    pub(super) fn running(&self) -> usize {
        if self.status.is_terminal() {
            return 0;
        }
        let mut n = 0;
        for s in &self.steps {
            match &s.items {
                Some(items) => {
                    n += items
                        .slots
                        .iter()
                        .filter(|i| i.status() == StepStatus::Running)
                        .count()
                }
                None => n += usize::from(s.slot.status() == StepStatus::Running),
            }
            n += usize::from(
                s.compensation
                    .as_ref()
                    .is_some_and(|c| c.status() == StepStatus::Running),
            );
        }
        n
    }

    fn step_targets_open(&self) -> bool {
        matches!(self.status, RunStatus::Queued | RunStatus::Running)
    }

    /// The slot of `target`, if it exists.
    fn slot_mut(&mut self, target: Target) -> Option<&mut Slot> {
        let step = self.steps.get_mut(target.step())?;
        match target {
            Target::Step(_) => Some(&mut step.slot),
            Target::Item(_, k) => step.items.as_mut()?.slots.get_mut(k as usize),
            Target::Compensation(_) => step.compensation.as_mut(),
        }
    }
}

/// One transition: the backend, the queue and journal, the run's key, the time.
struct Tx<'a> {
    backend: &'a MemoryBackend,
    work: &'a mut Work,
    key: Arc<str>,
    now: Millis,
    pushed: bool,
}

impl Tx<'_> {
    fn enqueue(&mut self, kind: TaskKind) {
        self.work.enqueue(Task {
            run: self.key.clone(),
            kind,
        });
        self.pushed = true;
    }

    fn delay(&mut self, due: Millis, kind: TaskKind) {
        self.work.delay(due, self.key.clone(), kind);
        self.pushed = true;
    }

    fn touch(&mut self, key: RowKey) {
        self.work.touch_row(&self.key, key);
    }

    fn step_event(
        &self,
        spec: &RunSpec,
        index: usize,
        status: StepStatus,
        attempt: u32,
        error: Option<Failure>,
    ) {
        let now = self.now;
        self.backend
            .emit(|| step_event(spec, index, status, attempt, error, now));
    }

    /// Step `index` ended with `status`: numbered, its dependents that wait on
    /// nothing more queued (their gate decides at their claim), and the run's
    /// finalisation queued after its last step.
    fn step_ended(&mut self, run: &mut RunState, index: usize) {
        run.ended += 1;
        run.steps[index].seq = run.ended;
        run.remaining -= 1;
        let spec = run.spec.clone();
        for &d in spec.workflow.dependents(index) {
            let dep = &mut run.steps[d];
            dep.waiting_on -= 1;
            if dep.waiting_on == 0 && dep.slot.status() == StepStatus::Pending {
                dep.slot.rec.status = Some(StepStatus::Queued);
                self.touch(RowKey::Step(d as u32));
                self.enqueue(TaskKind::Step {
                    index: d as u32,
                    attempt: 1,
                });
                self.step_event(&spec, d, StepStatus::Queued, 0, None);
            }
        }
        if run.remaining == 0 {
            self.enqueue(TaskKind::Finalize);
        }
    }

    /// Stops a run that failed (with `error`) or was cancelled: steps not
    /// started are skipped, running ones cancelled; then its compensations
    /// run, or it ends. Returns the steps that were running.
    fn stop_run(&mut self, run: &mut RunState, error: Option<RunError>) -> Vec<usize> {
        let stopped = self.stop_steps(run);
        run.error = error;
        match next_compensation(run) {
            Some(index) => {
                run.status = RunStatus::Compensating;
                self.start_compensation(run, index);
                let (id, now) = (run.spec.id.clone(), self.now);
                self.backend
                    .emit(|| run_event(&id, RunStatus::Compensating, now));
            }
            None => {
                let status = rules::after_compensation(run.error.as_ref());
                self.end_run(run, status);
            }
        }
        stopped
    }

    fn stop_steps(&mut self, run: &mut RunState) -> Vec<usize> {
        let mut stopped = Vec::new();
        let now = self.now;
        let spec = run.spec.clone();
        for (i, step) in run.steps.iter_mut().enumerate() {
            if let Some(items) = &mut step.items {
                for (k, item) in items.slots.iter_mut().enumerate() {
                    let next = match item.status() {
                        StepStatus::Running | StepStatus::Queued => StepStatus::Cancelled,
                        _ => continue,
                    };
                    item.end(next, now);
                    self.work
                        .touch_row(&self.key, RowKey::Item(i as u32, k as u32));
                }
            }
            let running = step.slot.status() == StepStatus::Running;
            let next = match step.slot.status() {
                // A step waiting for its retry has run before: it is stopped, not skipped.
                StepStatus::Queued if step.slot.rec.attempts > 0 => StepStatus::Cancelled,
                StepStatus::Pending | StepStatus::Queued => StepStatus::Skipped,
                StepStatus::Running => StepStatus::Cancelled,
                _ => continue,
            };
            if running {
                stopped.push(i);
            }
            step.slot.end(next, now);
            self.work.touch_row(&self.key, RowKey::Step(i as u32));
            let attempts = step.slot.rec.attempts;
            self.backend
                .emit(|| step_event(&spec, i, next, attempts, None, now));
        }
        stopped
    }

    fn start_compensation(&mut self, run: &mut RunState, index: usize) {
        run.steps[index].compensation = Some(Slot::queued());
        self.touch(RowKey::Compensation(index as u32));
        self.enqueue(TaskKind::Compensate {
            index: index as u32,
            attempt: 1,
        });
        let (spec, now) = (run.spec.clone(), self.now);
        self.backend
            .emit(|| compensation_event(&spec, index, StepStatus::Queued, 0, None, now));
    }

    /// Ends the run with `status`; it is kept for its retention from now.
    fn end_run(&mut self, run: &mut RunState, status: RunStatus) {
        run.status = status;
        run.finished_at = Some(self.now);
        self.work.touch_run(&self.key);
        let (id, now) = (run.spec.id.clone(), self.now);
        self.backend.emit(|| run_event(&id, status, now));
    }
}

/// The compensation to run next in `run`, by `rules::next_compensation`.
fn next_compensation(run: &RunState) -> Option<usize> {
    rules::next_compensation(run.steps.iter().enumerate().map(|(index, s)| rules::Done {
        index,
        status: s.slot.status(),
        seq: s.seq,
        compensable: run.spec.compensation_pin(index).is_some(),
        compensated: s.compensation.is_some(),
    }))
}

impl MemoryBackend {
    /// Admits and stores a run; true in the second place when tasks were
    /// queued; in the third, the store write to wait for.
    pub(super) fn create_run_now(&self, new: NewRun) -> (Admission, bool, Option<u64>) {
        let NewRun {
            spec,
            idempotency,
            max_active,
        } = new;
        let mut inner = self.lock();
        let tenant = spec.tenant.clone();
        if let Some(idem) = &idempotency
            && let Some((fingerprint, run)) =
                inner.idempotency.get(&(tenant.clone(), idem.key.clone()))
        {
            let existing = Admission::Existing {
                run: run.to_string(),
                same_request: *fingerprint == idem.fingerprint,
            };
            // The run may have been created a moment ago, not stored yet.
            return (existing, false, inner.work.wait_point());
        }
        let active = inner.active.get(&tenant).copied().unwrap_or(0);
        if active >= max_active {
            return (Admission::AtLimit { active }, false, None);
        }
        *inner.active.entry(tenant.clone()).or_default() += 1;
        let run: Arc<str> = Arc::from(spec.id.as_str());
        if let Some(idem) = &idempotency {
            inner.idempotency.insert(
                (tenant, idem.key.clone()),
                (idem.fingerprint.clone(), run.clone()),
            );
        }
        let steps: Vec<StepState> = spec
            .workflow
            .steps
            .iter()
            .map(|s| StepState {
                slot: if s.deps.is_empty() {
                    Slot::queued()
                } else {
                    Slot {
                        rec: StepRecord {
                            status: Some(StepStatus::Pending),
                            ..StepRecord::default()
                        },
                        ..Slot::default()
                    }
                },
                waiting_on: s.deps.len() as u32,
                seq: 0,
                items: None,
                compensation: None,
            })
            .collect();
        let mut pushed = false;
        for (index, s) in steps.iter().enumerate() {
            if s.waiting_on == 0 {
                inner.work.enqueue(Task {
                    run: run.clone(),
                    kind: TaskKind::Step {
                        index: index as u32,
                        attempt: 1,
                    },
                });
                pushed = true;
            }
        }
        let remaining = steps.len();
        let bytes = policy::stored_input_bytes(&spec);
        inner.work.created(&run);
        inner.runs.insert(
            run,
            RunState {
                spec,
                status: RunStatus::Queued,
                output: serde_json::Value::Null,
                error: None,
                started_at: None,
                finished_at: None,
                steps,
                remaining,
                idempotency_key: idempotency.map(|i| i.key),
                bytes,
                leases: 0,
                ended: 0,
                items: 0,
            },
        );
        let point = inner.work.wait_point();
        (Admission::Created, pushed, point)
    }

    /// Claims a task; in the second place, the store write to wait for.
    pub(super) fn claim_now(&self, task: &Task, now: Millis) -> (Claim, Option<u64>) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let Some(run_key) = inner.runs.get_key_value(&task.run).map(|(k, _)| k.clone()) else {
            return (Claim::Stale, None);
        };
        let run = inner.runs.get_mut(&task.run).expect("present");
        let (target, attempt) = match task.kind {
            TaskKind::Finalize if run.step_targets_open() && run.remaining == 0 => {
                let claim = Claim::Finalize {
                    spec: run.spec.clone(),
                    outputs: run
                        .steps
                        .iter()
                        .map(|s| s.slot.rec.output.clone())
                        .collect(),
                };
                return (claim, None);
            }
            TaskKind::Finalize => return (Claim::Stale, None),
            TaskKind::Step { index, attempt } => (Target::Step(index as usize), attempt),
            TaskKind::Item {
                index,
                item,
                attempt,
            } => (Target::Item(index as usize, item), attempt),
            TaskKind::Compensate { index, attempt } => {
                (Target::Compensation(index as usize), attempt)
            }
        };
        let open = match target {
            Target::Compensation(_) => run.status == RunStatus::Compensating,
            _ => run.step_targets_open(),
        };
        if !open || target.step() >= run.steps.len() {
            return (Claim::Stale, None);
        }
        let lease = run.leases + 1;
        let Some(slot) = run.slot_mut(target) else {
            return (Claim::Stale, None);
        };
        if !slot.claim(attempt, lease, now) {
            return (Claim::Stale, None);
        }
        let over_delivered = slot.deliveries > run.spec.defaults.max_deliveries;
        run.leases = lease;
        let index = target.step();
        let run_started = run.status == RunStatus::Queued;
        if run_started {
            run.status = RunStatus::Running;
            run.started_at = Some(now);
        }
        let spec = run.spec.clone();
        let step = &spec.workflow.steps[index];
        let reads: Vec<usize> = match target {
            Target::Compensation(_) => step
                .compensate
                .as_ref()
                .map(|c| step_roots(&c.input))
                .unwrap_or_default(),
            _ => reads_of(step, target, attempt),
        };
        let deps = reads
            .into_iter()
            .filter_map(|d| run.steps[d].slot.rec.output.clone().map(|o| (d, o)))
            .collect();
        let facts = match target {
            Target::Step(_) if attempt == 1 => step
                .deps
                .iter()
                .map(|&d| {
                    let s = &run.steps[d].slot;
                    (d, s.status(), s.rec.error.clone())
                })
                .collect(),
            _ => Vec::new(),
        };
        let item = match target {
            Target::Item(i, k) => run.steps[i]
                .items
                .as_ref()
                .and_then(|items| items.values.get(k as usize).cloned()),
            _ => None,
        };
        let row = match target {
            Target::Step(i) => RowKey::Step(i as u32),
            Target::Item(i, k) => RowKey::Item(i as u32, k),
            Target::Compensation(i) => RowKey::Compensation(i as u32),
        };
        inner.work.touch_row(&run_key, row);
        let point = inner.work.wait_point();
        if run_started {
            self.emit(|| run_event(&spec.id, RunStatus::Running, now));
        }
        match target {
            Target::Step(_) => {
                self.emit(|| step_event(&spec, index, StepStatus::Running, attempt, None, now))
            }
            Target::Compensation(_) => self
                .emit(|| compensation_event(&spec, index, StepStatus::Running, attempt, None, now)),
            Target::Item(..) => {}
        }
        let claim = Claim::Step(StepWork {
            spec,
            index,
            target,
            attempt,
            lease,
            deps,
            facts,
            item,
            over_delivered,
        });
        (claim, point)
    }

    pub(super) fn commit_now(
        &self,
        run_id: &str,
        target: Target,
        lease: u64,
        outcome: Outcome,
        now: Millis,
    ) -> (Committed, bool, Option<u64>) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let Some(run_key) = inner.runs.get_key_value(run_id).map(|(k, _)| k.clone()) else {
            return (Committed::default(), false, None);
        };
        let run = inner.runs.get_mut(run_id).expect("present");
        let open = match target {
            Target::Compensation(_) => run.status == RunStatus::Compensating,
            _ => run.step_targets_open(),
        };
        if !open {
            return (Committed::default(), false, None);
        }
        match run.slot_mut(target) {
            Some(slot) if slot.status() == StepStatus::Running && slot.lease == lease => {}
            _ => return (Committed::default(), false, None),
        }
        let spec = run.spec.clone();
        let adding = outcome.stored_bytes();
        let outcome = if policy::over_run_bytes(run.bytes, adding, spec.defaults.run_bytes) {
            Outcome::Failed {
                failure: policy::run_too_large(spec.defaults.run_bytes),
                logs: Vec::new(),
                continues: false,
            }
        } else {
            run.bytes += adding;
            outcome
        };
        let mut tx = Tx {
            backend: self,
            work: &mut inner.work,
            key: run_key.clone(),
            now,
            pushed: false,
        };
        let mut committed = Committed {
            applied: true,
            ..Committed::default()
        };
        match target {
            Target::Step(index) => {
                tx.touch(RowKey::Step(index as u32));
                commit_step(&mut tx, run, index, outcome, &mut committed);
            }
            Target::Item(index, item) => {
                tx.touch(RowKey::Item(index as u32, item));
                commit_item(&mut tx, run, index, item, outcome, &mut committed);
            }
            Target::Compensation(index) => {
                tx.touch(RowKey::Compensation(index as u32));
                commit_compensation(&mut tx, run, index, outcome, &mut committed);
            }
        }
        let pushed = tx.pushed;
        if run.status.is_terminal() {
            committed.run_ended = Some(run.status);
            inner.work.touch_all(&run_key);
            inner.ended(now, run_key, &spec);
            self.expire(inner, now);
        }
        let point = inner.work.wait_point();
        (committed, pushed, point)
    }

    pub(super) fn finish_now(
        &self,
        run_id: &str,
        result: Result<serde_json::Value, RunError>,
        now: Millis,
    ) -> (bool, Option<u64>) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let Some(run_key) = inner.runs.get_key_value(run_id).map(|(k, _)| k.clone()) else {
            return (false, None);
        };
        let run = inner.runs.get_mut(run_id).expect("present");
        if !run.step_targets_open() || run.remaining != 0 {
            return (false, None);
        }
        let mut tx = Tx {
            backend: self,
            work: &mut inner.work,
            key: run_key.clone(),
            now,
            pushed: false,
        };
        tx.work.touch_run(&run_key);
        match result {
            Ok(output) => {
                run.output = output;
                tx.end_run(run, RunStatus::Succeeded);
            }
            Err(error) => {
                tx.stop_run(run, Some(error));
            }
        }
        let pushed = tx.pushed;
        if pushed {
            self.ready.notify_one();
        }
        if run.status.is_terminal() {
            let spec = run.spec.clone();
            inner.ended(now, run_key, &spec);
            self.expire(inner, now);
        }
        (true, inner.work.wait_point())
    }

    pub(super) fn cancel_now(
        &self,
        tenant: &str,
        run_id: &str,
        now: Millis,
    ) -> (Option<Cancelled>, Option<u64>) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let Some((run_key, run)) = inner
            .runs
            .get_key_value(run_id)
            .filter(|(_, r)| r.spec.tenant == tenant)
        else {
            return (None, None);
        };
        let run_key = run_key.clone();
        if run.status.is_terminal() {
            let ended = Cancelled::AlreadyEnded(run.status);
            return (Some(ended), inner.work.wait_point());
        }
        if run.status == RunStatus::Compensating {
            // Already being undone: its compensations run to their end.
            let now_cancelled = Cancelled::Now {
                stopped: Vec::new(),
                status: RunStatus::Compensating,
            };
            return (Some(now_cancelled), inner.work.wait_point());
        }
        let run = inner.runs.get_mut(run_id).expect("present");
        let mut tx = Tx {
            backend: self,
            work: &mut inner.work,
            key: run_key.clone(),
            now,
            pushed: false,
        };
        tx.work.touch_run(&run_key);
        let stopped = tx.stop_run(run, None);
        if tx.pushed {
            self.ready.notify_one();
        }
        let status = run.status;
        if run.status.is_terminal() {
            let spec = run.spec.clone();
            inner.ended(now, run_key, &spec);
            self.expire(inner, now);
        }
        (
            Some(Cancelled::Now { stopped, status }),
            inner.work.wait_point(),
        )
    }
}

/// Applies an outcome of a step's own attempt.
fn commit_step(
    tx: &mut Tx<'_>,
    run: &mut RunState,
    index: usize,
    outcome: Outcome,
    committed: &mut Committed,
) {
    let spec = run.spec.clone();
    let now = tx.now;
    let step = &mut run.steps[index];
    let attempt = step.slot.rec.attempts;
    match outcome {
        Outcome::Succeeded { output, logs } => {
            let rec = &mut step.slot.rec;
            rec.output = Some(Arc::new(output));
            rec.error = None;
            rec.logs = logs;
            step.slot.end(StepStatus::Succeeded, now);
            tx.step_event(&spec, index, StepStatus::Succeeded, attempt, None);
            tx.step_ended(run, index);
        }
        Outcome::Retry { failure, logs, due } => {
            step.slot.rec.status = Some(StepStatus::Queued);
            step.slot.rec.logs = logs;
            step.slot.rec.error = Some(failure.clone());
            step.slot.retry_due = Some(due);
            tx.delay(
                due,
                TaskKind::Step {
                    index: index as u32,
                    attempt: attempt + 1,
                },
            );
            committed.retrying = true;
            tx.step_event(&spec, index, StepStatus::Queued, attempt, Some(failure));
        }
        Outcome::Failed {
            failure,
            logs,
            continues,
        } => {
            step.slot.rec.logs = logs;
            step.slot.rec.error = Some(failure.clone());
            step.slot.end(StepStatus::Failed, now);
            tx.step_event(
                &spec,
                index,
                StepStatus::Failed,
                attempt,
                Some(failure.clone()),
            );
            if continues {
                tx.step_ended(run, index);
            } else {
                let error = step_failed(&spec, index, &failure);
                committed.cancelled = tx.stop_run(run, Some(error));
            }
        }
        Outcome::Skipped { reason, error } => {
            let rec = &mut step.slot.rec;
            rec.attempts = 0;
            rec.started_at = None;
            rec.reason = Some(reason);
            rec.error = error;
            step.slot.end(StepStatus::Skipped, now);
            tx.step_event(&spec, index, StepStatus::Skipped, 0, None);
            tx.step_ended(run, index);
        }
        Outcome::Expand { items } => {
            let steps_per_run = spec.defaults.steps_per_run;
            if !rules::items_fit(
                spec.workflow.steps.len(),
                run.items,
                items.len(),
                steps_per_run,
            ) {
                let failure = rules::too_many_items(items.len(), steps_per_run);
                let outcome = Outcome::Failed {
                    failure,
                    logs: Vec::new(),
                    continues: false,
                };
                return commit_step(tx, run, index, outcome, committed);
            }
            if items.is_empty() {
                let outcome = Outcome::Succeeded {
                    output: serde_json::Value::Array(Vec::new()),
                    logs: Vec::new(),
                };
                return commit_step(tx, run, index, outcome, committed);
            }
            run.items += rules::extra_items(items.len());
            run.steps[index].items = Some(Box::new(Items {
                values: items.into_iter().map(Arc::new).collect(),
                slots: Vec::new(),
                ended: 0,
                last_event: 0,
            }));
            tx.touch(RowKey::List(index as u32));
            start_items(tx, run, index);
        }
    }
}

/// Starts as many items of for_each step `index` as its window allows.
fn start_items(tx: &mut Tx<'_>, run: &mut RunState, index: usize) {
    let max = run.spec.workflow.steps[index]
        .for_each
        .as_ref()
        .map_or(1, |f| f.max_concurrency);
    let Some(items) = run.steps[index].items.as_mut() else {
        return;
    };
    let start = rules::items_to_start(max, items.total(), items.slots.len() as u32, items.ended);
    for _ in 0..start {
        let item = items.slots.len() as u32;
        items.slots.push(Slot::queued());
        tx.work.touch_row(&tx.key, RowKey::Item(index as u32, item));
        tx.work.enqueue(Task {
            run: tx.key.clone(),
            kind: TaskKind::Item {
                index: index as u32,
                item,
                attempt: 1,
            },
        });
        tx.pushed = true;
    }
}

/// Applies an outcome of an item's attempt.
fn commit_item(
    tx: &mut Tx<'_>,
    run: &mut RunState,
    index: usize,
    item: u32,
    outcome: Outcome,
    committed: &mut Committed,
) {
    let spec = run.spec.clone();
    let now = tx.now;
    let items = run.steps[index].items.as_mut().expect("an item has a list");
    let slot = &mut items.slots[item as usize];
    let attempt = slot.rec.attempts;
    match outcome {
        Outcome::Succeeded { output, logs } => {
            slot.rec.output = Some(Arc::new(output));
            slot.rec.error = None;
            slot.rec.logs = logs;
            slot.end(StepStatus::Succeeded, now);
        }
        Outcome::Retry { failure, logs, due } => {
            slot.rec.status = Some(StepStatus::Queued);
            slot.rec.logs = logs;
            slot.rec.error = Some(failure);
            slot.retry_due = Some(due);
            tx.delay(
                due,
                TaskKind::Item {
                    index: index as u32,
                    item,
                    attempt: attempt + 1,
                },
            );
            committed.retrying = true;
            return;
        }
        Outcome::Failed {
            failure,
            logs,
            continues,
        } => {
            slot.rec.logs = logs;
            slot.rec.error = Some(failure.clone());
            slot.end(StepStatus::Failed, now);
            if !continues {
                // The step fails with its item's failure; the other items stop.
                let failure = rules::item_failure(item, &failure);
                let step = &mut run.steps[index];
                step.slot.rec.error = Some(failure.clone());
                step.slot.end(StepStatus::Failed, now);
                tx.step_event(&spec, index, StepStatus::Failed, 1, Some(failure.clone()));
                let error = step_failed(&spec, index, &failure);
                let mut stopped = tx.stop_run(run, Some(error));
                stopped.push(index);
                committed.cancelled = stopped;
                return;
            }
        }
        // Items have no gate and no list of their own.
        Outcome::Skipped { .. } | Outcome::Expand { .. } => return,
    }
    items.ended += 1;
    let (total, ended) = (items.total(), items.ended);
    if ended == total {
        let due = rules::progress_event_due(items.last_event, now);
        let output = serde_json::Value::Array(
            items
                .slots
                .iter()
                .map(|s| s.rec.output.as_deref().cloned().unwrap_or_default())
                .collect(),
        );
        let step = &mut run.steps[index];
        step.slot.rec.output = Some(Arc::new(output));
        step.slot.end(StepStatus::Succeeded, now);
        tx.touch(RowKey::Step(index as u32));
        if due {
            emit_progress(tx, &spec, index, items_of(run, index));
        }
        tx.step_event(&spec, index, StepStatus::Succeeded, 1, None);
        tx.step_ended(run, index);
        return;
    }
    if rules::progress_event_due(items.last_event, now) {
        items.last_event = now;
        let counts = items_of(run, index);
        emit_progress(tx, &spec, index, counts);
    }
    start_items(tx, run, index);
}

/// (total, succeeded, failed) of a for_each step's items.
fn items_of(run: &RunState, index: usize) -> (u32, u32, u32) {
    let Some(items) = &run.steps[index].items else {
        return (0, 0, 0);
    };
    let count = |status| items.slots.iter().filter(|s| s.status() == status).count() as u32;
    (
        items.total(),
        count(StepStatus::Succeeded),
        count(StepStatus::Failed),
    )
}

fn emit_progress(
    tx: &Tx<'_>,
    spec: &RunSpec,
    index: usize,
    (total, succeeded, failed): (u32, u32, u32),
) {
    let now = tx.now;
    tx.backend.emit(|| RunEvent::Items {
        run: spec.id.clone(),
        step: spec.workflow.steps[index].id.clone(),
        total,
        succeeded,
        failed,
        at: rfc3339(now),
    });
}

/// Applies an outcome of a compensation's attempt; after its last one, the
/// next compensation starts, or the run ends.
fn commit_compensation(
    tx: &mut Tx<'_>,
    run: &mut RunState,
    index: usize,
    outcome: Outcome,
    committed: &mut Committed,
) {
    let spec = run.spec.clone();
    let now = tx.now;
    let slot = run.steps[index]
        .compensation
        .as_mut()
        .expect("a running compensation");
    let attempt = slot.rec.attempts;
    let (status, error) = match outcome {
        Outcome::Succeeded { output, logs } => {
            slot.rec.output = Some(Arc::new(output));
            slot.rec.error = None;
            slot.rec.logs = logs;
            (StepStatus::Succeeded, None)
        }
        Outcome::Retry { failure, logs, due } => {
            slot.rec.status = Some(StepStatus::Queued);
            slot.rec.logs = logs;
            slot.rec.error = Some(failure.clone());
            slot.retry_due = Some(due);
            tx.delay(
                due,
                TaskKind::Compensate {
                    index: index as u32,
                    attempt: attempt + 1,
                },
            );
            committed.retrying = true;
            tx.backend.emit(|| {
                compensation_event(
                    &spec,
                    index,
                    StepStatus::Queued,
                    attempt,
                    Some(failure),
                    now,
                )
            });
            return;
        }
        Outcome::Failed { failure, logs, .. } => {
            slot.rec.logs = logs;
            slot.rec.error = Some(failure.clone());
            (StepStatus::Failed, Some(failure))
        }
        Outcome::Skipped { .. } | Outcome::Expand { .. } => return,
    };
    slot.end(status, now);
    tx.backend
        .emit(|| compensation_event(&spec, index, status, attempt, error, now));
    match next_compensation(run) {
        Some(next) => tx.start_compensation(run, next),
        None => {
            let status = rules::after_compensation(run.error.as_ref());
            tx.end_run(run, status);
        }
    }
}

/// The run's error when step `index` failed with `failure`.
fn step_failed(spec: &RunSpec, index: usize, failure: &Failure) -> RunError {
    let id = &spec.workflow.steps[index].id;
    RunError {
        code: failure.code.clone(),
        message: format!("step `{id}` failed: {}", failure.message),
        step: Some(id.clone()),
    }
}

pub(super) fn run_event(run: &str, status: RunStatus, now: Millis) -> RunEvent {
    RunEvent::Run {
        run: run.to_string(),
        status,
        at: rfc3339(now),
    }
}

fn step_event(
    spec: &RunSpec,
    index: usize,
    status: StepStatus,
    attempt: u32,
    error: Option<Failure>,
    now: Millis,
) -> RunEvent {
    RunEvent::Step {
        run: spec.id.clone(),
        step: spec.workflow.steps[index].id.clone(),
        status,
        attempt,
        error,
        at: rfc3339(now),
    }
}

fn compensation_event(
    spec: &RunSpec,
    index: usize,
    status: StepStatus,
    attempt: u32,
    error: Option<Failure>,
    now: Millis,
) -> RunEvent {
    RunEvent::Compensation {
        run: spec.id.clone(),
        step: spec.workflow.steps[index].id.clone(),
        status,
        attempt,
        error,
        at: rfc3339(now),
    }
}
