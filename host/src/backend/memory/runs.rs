//! Run and step transitions of the embedded backend, each applied under the
//! backend's one lock.

use std::sync::Arc;

use indexmap::IndexMap;

use super::store::{Batch, Loaded, RunRow, StepRow};
use super::{Inner, MemoryBackend, journal};
use crate::backend::{Admission, Cancelled, Claim, Committed, NewRun, Outcome, StepWork};
use crate::engine::Failure;
use crate::scheduler::clock::{Millis, rfc3339};
use crate::scheduler::model::{
    RunError, RunEvent, RunSpec, RunStatus, RunView, StepRecord, StepStatus, StepView, Task,
    TaskKind,
};
use crate::scheduler::policy;
use crate::workflow::Root;

pub(super) struct RunState {
    spec: Arc<RunSpec>,
    status: RunStatus,
    output: serde_json::Value,
    error: Option<RunError>,
    started_at: Option<Millis>,
    finished_at: Option<Millis>,
    steps: Vec<StepState>,
    /// Steps that have not succeeded yet; finalisation is due at zero.
    remaining: usize,
    /// The `Idempotency-Key` that created the run, forgotten with the run.
    idempotency_key: Option<String>,
    /// Bytes of input, outputs, errors and logs stored, counted against `run_bytes`.
    bytes: u64,
}

struct StepState {
    rec: StepRecord,
    /// Dependencies that have not succeeded yet; the step is ready at zero.
    waiting_on: u32,
    lease: u64,
    /// Deliveries of the attempt now holding the step.
    deliveries: u32,
    /// When the next attempt is due, while the step waits for a retry.
    retry_due: Option<Millis>,
}

impl RunState {
    /// Steps of this run running now.
    pub(super) fn running(&self) -> usize {
        if self.status.is_terminal() {
            return 0;
        }
        self.steps
            .iter()
            .filter(|s| s.status() == StepStatus::Running)
            .count()
    }
}

impl StepState {
    fn status(&self) -> StepStatus {
        self.rec.status.unwrap_or(StepStatus::Pending)
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
                rec: StepRecord {
                    status: Some(if s.deps.is_empty() {
                        StepStatus::Queued
                    } else {
                        StepStatus::Pending
                    }),
                    ..StepRecord::default()
                },
                waiting_on: s.deps.len() as u32,
                lease: 0,
                deliveries: 0,
                retry_due: None,
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
        if run.status.is_terminal() {
            return (Claim::Stale, None);
        }
        let (index, attempt) = match task.kind {
            TaskKind::Finalize if run.remaining == 0 => {
                let claim = Claim::Finalize {
                    spec: run.spec.clone(),
                    outputs: run.steps.iter().map(|s| s.rec.output.clone()).collect(),
                };
                return (claim, None);
            }
            TaskKind::Finalize => return (Claim::Stale, None),
            TaskKind::Step { index, attempt } => (index as usize, attempt),
        };
        let Some(step) = run.steps.get_mut(index) else {
            return (Claim::Stale, None);
        };
        match step.status() {
            StepStatus::Queued if attempt == step.rec.attempts + 1 => {
                step.rec.status = Some(StepStatus::Running);
                step.rec.attempts = attempt;
                step.rec.started_at.get_or_insert(now);
                step.deliveries = 1;
                step.retry_due = None;
            }
            // Delivered again while running: the new holder supersedes the old one.
            StepStatus::Running if attempt == step.rec.attempts => step.deliveries += 1,
            _ => return (Claim::Stale, None),
        }
        let over_delivered = step.deliveries > run.spec.defaults.max_deliveries;
        step.lease += 1;
        let lease = step.lease;
        let run_started = run.status == RunStatus::Queued;
        if run_started {
            run.status = RunStatus::Running;
            run.started_at = Some(now);
        }
        let spec = run.spec.clone();
        let deps = spec.workflow.steps[index]
            .input
            .roots()
            .filter_map(|root| match root {
                Root::Step(d) => run.steps[d].rec.output.clone().map(|o| (d, o)),
                Root::Input => None,
            })
            .collect();
        inner.work.touch_step(&run_key, index);
        let point = inner.work.wait_point();
        if run_started {
            self.emit(|| run_event(&spec.id, RunStatus::Running, now));
        }
        self.emit(|| step_event(&spec, index, StepStatus::Running, attempt, None, now));
        let claim = Claim::Step(StepWork {
            spec,
            index,
            attempt,
            lease,
            deps,
            over_delivered,
        });
        (claim, point)
    }

    pub(super) fn commit_now(
        &self,
        run_id: &str,
        index: usize,
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
        if run.status.is_terminal() {
            return (Committed::default(), false, None);
        }
        let Some(step) = run.steps.get_mut(index) else {
            return (Committed::default(), false, None);
        };
        if step.status() != StepStatus::Running || step.lease != lease {
            return (Committed::default(), false, None);
        }
        inner.work.touch_step(&run_key, index);
        let spec = run.spec.clone();
        let attempt = step.rec.attempts;
        let mut committed = Committed {
            applied: true,
            ..Committed::default()
        };
        let adding = outcome.stored_bytes();
        let outcome = if policy::over_run_bytes(run.bytes, adding, spec.defaults.run_bytes) {
            Outcome::Failed {
                failure: policy::run_too_large(spec.defaults.run_bytes),
                logs: Vec::new(),
            }
        } else {
            run.bytes += adding;
            outcome
        };
        let mut pushed = false;
        match outcome {
            Outcome::Succeeded { output, logs } => {
                step.rec.status = Some(StepStatus::Succeeded);
                step.rec.output = Some(Arc::new(output));
                step.rec.error = None;
                step.rec.logs = logs;
                step.rec.finished_at = Some(now);
                run.remaining -= 1;
                self.emit(|| step_event(&spec, index, StepStatus::Succeeded, attempt, None, now));
                for &d in spec.workflow.dependents(index) {
                    let dep = &mut run.steps[d];
                    dep.waiting_on -= 1;
                    if dep.waiting_on == 0 && dep.status() == StepStatus::Pending {
                        dep.rec.status = Some(StepStatus::Queued);
                        inner.work.touch_step(&run_key, d);
                        inner.work.enqueue(Task {
                            run: run_key.clone(),
                            kind: TaskKind::Step {
                                index: d as u32,
                                attempt: 1,
                            },
                        });
                        pushed = true;
                        self.emit(|| step_event(&spec, d, StepStatus::Queued, 0, None, now));
                    }
                }
                if run.remaining == 0 {
                    inner.work.enqueue(Task {
                        run: run_key,
                        kind: TaskKind::Finalize,
                    });
                    pushed = true;
                }
            }
            Outcome::Retry { failure, logs, due } => {
                step.rec.status = Some(StepStatus::Queued);
                step.rec.logs = logs;
                let shown = failure.clone();
                step.rec.error = Some(failure);
                step.retry_due = Some(due);
                inner.work.delay(due, run_key, index as u32, attempt + 1);
                pushed = true;
                committed.retrying = true;
                self.emit(|| {
                    step_event(&spec, index, StepStatus::Queued, attempt, Some(shown), now)
                });
            }
            Outcome::Failed { failure, logs } => {
                step.rec.status = Some(StepStatus::Failed);
                step.rec.logs = logs;
                step.rec.finished_at = Some(now);
                let error = RunError {
                    code: failure.code.clone(),
                    message: format!(
                        "step `{}` failed: {}",
                        spec.workflow.steps[index].id, failure.message
                    ),
                    step: Some(spec.workflow.steps[index].id.clone()),
                };
                let shown = failure.clone();
                step.rec.error = Some(failure);
                self.emit(|| {
                    step_event(&spec, index, StepStatus::Failed, attempt, Some(shown), now)
                });
                committed.cancelled = self.end_run(run, RunStatus::Failed, Some(error), now);
                committed.run_ended = Some(RunStatus::Failed);
                inner.work.touch_all(&run_key);
                inner.ended(now, run_key, &spec);
                self.expire(inner, now);
            }
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
        if run.status.is_terminal() || run.remaining != 0 {
            return (false, None);
        }
        // Every step has succeeded: only the run's record changes.
        inner.work.touch_run(&run_key);
        match result {
            Ok(output) => {
                run.output = output;
                self.end_run(run, RunStatus::Succeeded, None, now);
            }
            Err(error) => {
                self.end_run(run, RunStatus::Failed, Some(error), now);
            }
        }
        let spec = run.spec.clone();
        inner.ended(now, run_key, &spec);
        self.expire(inner, now);
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
        let run = inner.runs.get_mut(run_id).expect("present");
        let stopped = self.end_run(run, RunStatus::Cancelled, None, now);
        let spec = run.spec.clone();
        inner.work.touch_all(&run_key);
        inner.ended(now, run_key, &spec);
        self.expire(inner, now);
        (Some(Cancelled::Now { stopped }), inner.work.wait_point())
    }

    /// Ends a run: steps not started are skipped, running ones cancelled.
    /// Returns the steps that were running.
    fn end_run(
        &self,
        run: &mut RunState,
        status: RunStatus,
        error: Option<RunError>,
        now: Millis,
    ) -> Vec<usize> {
        let mut stopped = Vec::new();
        for (i, step) in run.steps.iter_mut().enumerate() {
            let next = match step.status() {
                // A step waiting for its retry has run before: it is stopped, not skipped.
                StepStatus::Queued if step.rec.attempts > 0 => StepStatus::Cancelled,
                StepStatus::Pending | StepStatus::Queued => StepStatus::Skipped,
                StepStatus::Running => {
                    stopped.push(i);
                    StepStatus::Cancelled
                }
                _ => continue,
            };
            step.rec.status = Some(next);
            step.rec.finished_at = Some(now);
            let spec = &run.spec;
            self.emit(|| step_event(spec, i, next, step.rec.attempts, None, now));
        }
        run.status = status;
        run.error = error;
        run.finished_at = Some(now);
        let id = &run.spec.id;
        self.emit(|| run_event(id, status, now));
        stopped
    }

    /// Forgets finished runs past their retention, and each tenant's oldest
    /// ones past the count this backend keeps per tenant.
    fn expire(&self, inner: &mut Inner, now: Millis) {
        let mut gone: Vec<Arc<str>> = Vec::new();
        while let Some(std::cmp::Reverse((due, _))) = inner.expiry.peek() {
            if *due > now {
                break;
            }
            let std::cmp::Reverse((_, id)) = inner.expiry.pop().expect("peeked");
            gone.push(id);
        }
        for finished in inner.finished.values_mut() {
            while finished.len() > self.retention.max_finished {
                gone.extend(finished.pop_front());
            }
        }
        for id in gone {
            if let Some(run) = inner.runs.remove(&id)
                && let Some(key) = run.idempotency_key
            {
                inner.idempotency.remove(&(run.spec.tenant.clone(), key));
            }
            inner.work.forget(id);
        }
    }

    pub(super) fn view(&self, tenant: &str, run_id: &str) -> Option<RunView> {
        let inner = self.lock();
        let run = inner.runs.get(run_id).filter(|r| r.spec.tenant == tenant)?;
        let spec = &run.spec;
        let steps: IndexMap<String, StepView> = run
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                (
                    spec.workflow.steps[i].id.clone(),
                    StepView::new(spec, i, &s.rec),
                )
            })
            .collect();
        Some(RunView {
            id: spec.id.clone(),
            tenant: spec.tenant.clone(),
            workflow: spec.workflow.name.clone(),
            status: run.status,
            input: spec.input.clone(),
            output: run.output.clone(),
            error: run.error.clone(),
            created_at: rfc3339(spec.created_at),
            started_at: run.started_at.map(rfc3339),
            finished_at: run.finished_at.map(rfc3339),
            steps,
        })
    }
}

fn run_event(run: &str, status: RunStatus, now: Millis) -> RunEvent {
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

impl Inner {
    /// Takes what changed since the last write, as one batch to write, with
    /// the work it holds back; `None` without a file store or when nothing
    /// changed.
    pub(super) fn take_batch(&mut self) -> Option<journal::TakenBatch> {
        let journal = self.work.journal.as_mut()?;
        if journal.touched.is_empty() && journal.gone.is_empty() {
            return None;
        }
        let generation = journal.generation;
        journal.generation += 1;
        let touched = std::mem::take(&mut journal.touched);
        let held = std::mem::take(&mut journal.held);
        let mut batch = Batch {
            gone: std::mem::take(&mut journal.gone),
            ..Batch::default()
        };
        for (id, mut touched) in touched {
            let Some(run) = self.runs.get(&id) else {
                continue;
            };
            let created = touched.created;
            let idempotency = if created {
                run.idempotency_key.as_ref().and_then(|key| {
                    let (fingerprint, _) = self
                        .idempotency
                        .get(&(run.spec.tenant.clone(), key.clone()))?;
                    Some((key.clone(), fingerprint.clone()))
                })
            } else {
                None
            };
            batch.runs.push(RunRow {
                id: id.clone(),
                spec: created.then(|| run.spec.clone()),
                status: run.status,
                output: (!run.output.is_null()).then(|| run.output.clone()),
                error: run.error.clone(),
                started_at: run.started_at,
                finished_at: run.finished_at,
                bytes: run.bytes,
                idempotency,
            });
            let step_row = |index: usize| {
                let s = &run.steps[index];
                StepRow {
                    run: id.clone(),
                    index: index as u32,
                    rec: s.rec.clone(),
                    lease: s.lease,
                    deliveries: s.deliveries,
                    retry_due: s.retry_due,
                }
            };
            if created || touched.all_steps {
                batch.steps.extend((0..run.steps.len()).map(step_row));
            } else {
                touched.steps.sort_unstable();
                touched.steps.dedup();
                batch
                    .steps
                    .extend(touched.steps.iter().map(|&i| step_row(i as usize)));
            }
        }
        Some((generation, batch, held))
    }
}

impl MemoryBackend {
    /// Rebuilds the runs read back from the file store: finished ones as
    /// they were, unfinished ones with their work queued again.
    pub(super) fn restore(&self, loaded: Loaded) {
        let now = self.clock.now();
        let mut inner = self.lock();
        let inner = &mut *inner;
        inner.registry = super::registry::Registry::from_records(loaded.tenants, loaded.versions);
        // What is read back is stored already: the work it implies is not held.
        let journal = inner.work.journal.take();
        let mut ended = Vec::new();
        for (row, rows) in loaded.runs {
            let Some(spec) = row.spec else { continue };
            let mut steps: Vec<StepState> = spec
                .workflow
                .steps
                .iter()
                .map(|_| StepState {
                    rec: StepRecord {
                        status: Some(StepStatus::Pending),
                        ..StepRecord::default()
                    },
                    waiting_on: 0,
                    lease: 0,
                    deliveries: 0,
                    retry_due: None,
                })
                .collect();
            for r in rows {
                if let Some(step) = steps.get_mut(r.index as usize) {
                    step.rec = r.rec;
                    step.lease = r.lease;
                    step.deliveries = r.deliveries;
                    step.retry_due = r.retry_due;
                }
            }
            let succeeded: Vec<bool> = steps
                .iter()
                .map(|s| s.status() == StepStatus::Succeeded)
                .collect();
            for (step, def) in steps.iter_mut().zip(&spec.workflow.steps) {
                step.waiting_on = def.deps.iter().filter(|&&d| !succeeded[d]).count() as u32;
            }
            let remaining = succeeded.iter().filter(|s| !**s).count();
            let id = row.id;
            let tenant = spec.tenant.clone();
            if let Some((key, fingerprint)) = &row.idempotency {
                inner.idempotency.insert(
                    (tenant.clone(), key.clone()),
                    (fingerprint.clone(), id.clone()),
                );
            }
            if row.status.is_terminal() {
                ended.push((row.finished_at.unwrap_or(now), id.clone(), spec.clone()));
            } else {
                *inner.active.entry(tenant).or_default() += 1;
                for (index, step) in steps.iter().enumerate() {
                    let index = index as u32;
                    match step.status() {
                        StepStatus::Queued if step.rec.attempts == 0 => inner.work.enqueue(Task {
                            run: id.clone(),
                            kind: TaskKind::Step { index, attempt: 1 },
                        }),
                        StepStatus::Queued => inner.work.delay(
                            step.retry_due.unwrap_or(now),
                            id.clone(),
                            index,
                            step.rec.attempts + 1,
                        ),
                        // Its process is gone: delivered again at once.
                        StepStatus::Running => inner.work.enqueue(Task {
                            run: id.clone(),
                            kind: TaskKind::Step {
                                index,
                                attempt: step.rec.attempts,
                            },
                        }),
                        _ => {}
                    }
                }
                if remaining == 0 {
                    inner.work.enqueue(Task {
                        run: id.clone(),
                        kind: TaskKind::Finalize,
                    });
                }
            }
            inner.runs.insert(
                id,
                RunState {
                    idempotency_key: row.idempotency.map(|(key, _)| key),
                    spec,
                    status: row.status,
                    output: row.output.unwrap_or(serde_json::Value::Null),
                    error: row.error,
                    started_at: row.started_at,
                    finished_at: row.finished_at,
                    steps,
                    remaining,
                    bytes: row.bytes,
                },
            );
        }
        ended.sort_by_key(|(at, _, _)| *at);
        for (at, id, spec) in ended {
            inner.retain(at, id, &spec);
        }
        inner.work.journal = journal;
        // Runs whose retention ended while the node was down are forgotten now.
        self.expire(inner, now);
        self.ready.notify_one();
    }
}
