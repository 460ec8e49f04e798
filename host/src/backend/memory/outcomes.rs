//! What each outcome of an attempt does to a run of the embedded backend:
//! a step's, an item's or a compensation's, applied within one transition
//! (`Tx`) under the backend's lock, with the events it sends and the rows it
//! marks for the file store.

use std::sync::Arc;

use super::MemoryBackend;
use super::journal::Work;
use super::runs::{Items, RunState, Signals, Slot};
use super::store::RowKey;
use crate::backend::{Committed, Outcome};
use crate::engine::Failure;
use crate::scheduler::clock::{Millis, rfc3339};
use crate::scheduler::model::{
    RunError, RunEvent, RunSpec, RunStatus, StepStatus, Target, Task, TaskKind,
};
use crate::scheduler::rules;

/// One transition: the backend, the queue and journal, the run's key, the time.
pub(super) struct Tx<'a> {
    backend: &'a MemoryBackend,
    pub(super) work: &'a mut Work,
    key: Arc<str>,
    now: Millis,
    pub(super) pushed: bool,
}

impl<'a> Tx<'a> {
    pub(super) fn new(
        backend: &'a MemoryBackend,
        work: &'a mut Work,
        key: Arc<str>,
        now: Millis,
    ) -> Self {
        Self {
            backend,
            work,
            key,
            now,
            pushed: false,
        }
    }

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
    pub(super) fn stop_run(&mut self, run: &mut RunState, error: Option<RunError>) -> Vec<usize> {
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
                StepStatus::Running | StepStatus::Waiting => StepStatus::Cancelled,
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
    pub(super) fn end_run(&mut self, run: &mut RunState, status: RunStatus) {
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

/// Applies the outcome of an attempt of `target`, marking its row.
pub(super) fn apply(
    tx: &mut Tx<'_>,
    run: &mut RunState,
    target: Target,
    outcome: Outcome,
    committed: &mut Committed,
) {
    match target {
        Target::Step(index) => {
            tx.touch(RowKey::Step(index as u32));
            commit_step(tx, run, index, outcome, committed);
        }
        Target::Item(index, item) => {
            tx.touch(RowKey::Item(index as u32, item));
            commit_item(tx, run, index, item, outcome, committed);
        }
        Target::Compensation(index) => {
            tx.touch(RowKey::Compensation(index as u32));
            commit_compensation(tx, run, index, outcome, committed);
        }
    }
}

/// Takes the oldest kept signal `name`, if any.
fn take_signal(signals: &mut Signals, name: &str) -> Option<Arc<serde_json::Value>> {
    let queue = signals.get_mut(name)?;
    let payload = queue.pop_front();
    if queue.is_empty() {
        signals.remove(name);
    }
    payload
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
    // A signal step reached after its signal was sent takes the oldest kept
    // one at once: it succeeds with it.
    let outcome = match outcome {
        Outcome::Wait {
            signal: Some(name), ..
        } if let Some(payload) = take_signal(&mut run.signals, &name) => {
            tx.touch(RowKey::Signals);
            Outcome::Succeeded {
                output: Arc::unwrap_or_clone(payload),
                logs: Vec::new(),
            }
        }
        other => other,
    };
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
        Outcome::Wait { due, signal: _ } => {
            // It holds no worker: its wake-up is a delayed task of the same
            // attempt, and a signal ends it before that.
            step.slot.rec.status = Some(StepStatus::Waiting);
            step.slot.retry_due = due;
            if let Some(due) = due {
                tx.delay(
                    due,
                    TaskKind::Step {
                        index: index as u32,
                        attempt,
                    },
                );
            }
            tx.step_event(&spec, index, StepStatus::Waiting, attempt, None);
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
        // Only a step's own attempt waits; `commit_now` passes no other.
        Outcome::Wait { .. } => {}
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
        // Only a step's own attempt waits; `commit_now` passes no other.
        Outcome::Wait { .. } => return,
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

pub(super) fn step_event(
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

pub(super) fn compensation_event(
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
