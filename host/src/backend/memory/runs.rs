//! The embedded backend's run state and its transitions (create, claim,
//! commit, finish, cancel), each applied under the backend's one lock. What
//! an outcome does to the state is in `outcomes`; what it decides comes from
//! `scheduler::rules`.

use std::sync::Arc;

use super::outcomes::{Tx, apply, compensation_event, run_event, step_event};
use super::store::RowKey;
use super::{Inner, MemoryBackend};
use crate::backend::spec::{reads_of, step_roots};
use crate::backend::{
    Admission, Cancelled, Claim, Committed, NewRun, Outcome, Signalled, StepWork,
};
use crate::scheduler::clock::Millis;
use crate::scheduler::model::{
    RunError, RunSpec, RunStatus, StepRecord, StepStatus, Target, Task, TaskKind,
};
use crate::scheduler::policy;
use crate::scheduler::rules::{self, SignalGoes};

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
    /// Signals sent before a step took them, by name, oldest first.
    pub(super) signals: Signals,
}

/// A run's kept signals: by name, their payloads oldest first.
pub(super) type Signals =
    std::collections::BTreeMap<String, std::collections::VecDeque<Arc<serde_json::Value>>>;

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

    pub(super) fn queued() -> Self {
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
            // The wake-up of a waiting step: it stays waiting until its commit.
            StepStatus::Waiting if attempt == self.rec.attempts => {}
            _ => return false,
        }
        self.lease = lease;
        true
    }

    pub(super) fn end(&mut self, status: StepStatus, now: Millis) {
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

impl StepState {
    /// A step of a new run: queued when it needs nothing, else pending.
    pub(super) fn new(def: &crate::workflow::Step) -> Self {
        Self {
            slot: if def.deps.is_empty() {
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
            waiting_on: def.deps.len() as u32,
            seq: 0,
            items: None,
            compensation: None,
        }
    }
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

    pub(super) fn step_targets_open(&self) -> bool {
        matches!(
            self.status,
            RunStatus::Scheduled | RunStatus::Queued | RunStatus::Running
        )
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
        // A child run does not count against its tenant's concurrent_runs.
        if spec.parent.is_none() {
            *inner.active.entry(tenant.clone()).or_default() += 1;
        }
        let run: Arc<str> = Arc::from(spec.id.as_str());
        if let Some(idem) = &idempotency {
            inner.idempotency.insert(
                (tenant, idem.key.clone()),
                (idem.fingerprint.clone(), run.clone()),
            );
        }
        let steps: Vec<StepState> = spec.workflow.steps.iter().map(StepState::new).collect();
        let mut pushed = false;
        inner
            .work
            .ready
            .place(run.clone(), super::ready::Place::of(&spec));
        for (index, s) in steps.iter().enumerate() {
            if s.waiting_on == 0 {
                let kind = TaskKind::Step {
                    index: index as u32,
                    attempt: 1,
                };
                // A run to start later has its first steps queued at its time.
                match spec.start_at {
                    Some(due) => inner.work.delay(due, run.clone(), kind),
                    None => inner.work.enqueue(Task {
                        run: run.clone(),
                        kind,
                    }),
                }
                pushed = true;
            }
        }
        let remaining = steps.len();
        let bytes = policy::stored_input_bytes(&spec);
        inner.work.created(&run);
        inner.list(&spec.tenant, &run);
        inner.runs.insert(
            run,
            RunState {
                status: if spec.start_at.is_some() {
                    RunStatus::Scheduled
                } else {
                    RunStatus::Queued
                },
                spec,
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
                signals: Signals::new(),
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
        let woken = slot.status() == StepStatus::Waiting;
        if !slot.claim(attempt, lease, now) {
            return (Claim::Stale, None);
        }
        let over_delivered = slot.deliveries > run.spec.defaults.max_deliveries;
        run.leases = lease;
        let index = target.step();
        let run_started = matches!(run.status, RunStatus::Queued | RunStatus::Scheduled);
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
            Target::Step(_) if woken => {}
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
            woken,
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
            Some(slot)
                if matches!(slot.status(), StepStatus::Running | StepStatus::Waiting)
                    && slot.lease == lease => {}
            _ => return (Committed::default(), false, None),
        }
        if matches!(outcome, Outcome::Wait { .. }) && !matches!(target, Target::Step(_)) {
            return (Committed::default(), false, None);
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
        let mut tx = Tx::new(self, &mut inner.work, run_key.clone(), now);
        let mut committed = Committed {
            applied: true,
            ..Committed::default()
        };
        apply(&mut tx, run, target, outcome, &mut committed);
        let pushed = tx.pushed;
        committed.run_ended = self.book_if_ended(inner, run_key, now);
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
        let mut tx = Tx::new(self, &mut inner.work, run_key.clone(), now);
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
        if tx.pushed {
            self.ready.notify_one();
        }
        self.book_if_ended(inner, run_key, now);
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
        let mut tx = Tx::new(self, &mut inner.work, run_key.clone(), now);
        tx.work.touch_run(&run_key);
        let stopped = tx.stop_run(run, None);
        if tx.pushed {
            self.ready.notify_one();
        }
        let status = run.status;
        self.book_if_ended(inner, run_key, now);
        (
            Some(Cancelled::Now { stopped, status }),
            inner.work.wait_point(),
        )
    }
}

impl MemoryBackend {
    /// Sends a signal to a run (`StateStore::signal`); in the second place,
    /// whether tasks were queued; in the third, the store write to wait for.
    pub(super) fn signal_now(
        &self,
        tenant: &str,
        run_id: &str,
        name: &str,
        payload: serde_json::Value,
        now: Millis,
    ) -> (Signalled, bool, Option<u64>) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let Some((run_key, run)) = inner
            .runs
            .get_key_value(run_id)
            .filter(|(_, r)| r.spec.tenant == tenant)
        else {
            return (Signalled::Missing, false, None);
        };
        let run_key = run_key.clone();
        if run.status.is_terminal() || run.status == RunStatus::Compensating {
            return (Signalled::Finished(run.status), false, None);
        }
        let spec = run.spec.clone();
        let waiting = spec
            .workflow
            .steps
            .iter()
            .enumerate()
            .filter_map(|(i, step)| {
                let waits = step.signal() == Some(name)
                    && run.steps[i].slot.status() == StepStatus::Waiting;
                waits.then_some(i)
            });
        let buffered = run.signals.get(name).map_or(0, |q| q.len() as u32);
        let bytes = crate::workflow::json_size(&payload, usize::MAX).unwrap_or(0) as u64;
        let goes = rules::signal_goes(waiting, buffered, run.bytes, bytes, spec.defaults.run_bytes);
        let run = inner.runs.get_mut(run_id).expect("present");
        let signalled = match goes {
            SignalGoes::TooLarge => Signalled::TooLarge {
                run_bytes: spec.defaults.run_bytes,
            },
            SignalGoes::Full => Signalled::Full,
            SignalGoes::Buffer => {
                run.bytes += bytes;
                let queue = run.signals.entry(name.to_string()).or_default();
                queue.push_back(Arc::new(payload));
                let buffered = queue.len() as u32;
                inner.work.touch_row(&run_key, RowKey::Signals);
                Signalled::Buffered { buffered }
            }
            SignalGoes::To(index) => {
                run.bytes += bytes;
                let mut tx = Tx::new(self, &mut inner.work, run_key.clone(), now);
                let mut committed = Committed::default();
                let output = Outcome::Succeeded {
                    output: payload,
                    logs: Vec::new(),
                };
                apply(&mut tx, run, Target::Step(index), output, &mut committed);
                let pushed = tx.pushed;
                self.book_if_ended(inner, run_key, now);
                let step = spec.workflow.steps[index].id.clone();
                return (
                    Signalled::Delivered { step },
                    pushed,
                    inner.work.wait_point(),
                );
            }
        };
        (signalled, false, inner.work.wait_point())
    }

    /// After a transition of run `key`: when it ended, it is kept for its
    /// retention from now, its tenant has one unfinished run less, and runs
    /// past their retention are forgotten. Returns its status if it ended.
    fn book_if_ended(&self, inner: &mut Inner, key: Arc<str>, now: Millis) -> Option<RunStatus> {
        let run = inner.runs.get(&key)?;
        if !run.status.is_terminal() {
            return None;
        }
        let (status, spec) = (run.status, run.spec.clone());
        inner.ended(now, key, &spec);
        // A child run: its parent's sub-workflow step is woken to end with it.
        if let (Some(parent), Some(index)) = (&spec.parent, spec.parent_step)
            && let Some((parent, _)) = inner.runs.get_key_value(parent.as_str())
        {
            let wake = Task {
                run: parent.clone(),
                kind: TaskKind::Step { index, attempt: 1 },
            };
            inner.work.enqueue(wake);
            self.ready.notify_one();
        }
        self.expire(inner, now);
        Some(status)
    }
}
