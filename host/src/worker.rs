//! Pulls ready tasks from the queue, runs steps through engine and cache, and
//! commits their results through the scheduler.

use crate::telemetry::AttemptSpan;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::backend::{
    BackendError, Claim, Delivery, Idempotency, NewRun, Outcome, StateStore, StepWork,
};
use crate::cache::ComponentCache;
pub use crate::capability::Capabilities;
use crate::engine::{Failure, Invocation};
use crate::scheduler::Scheduler;
use crate::scheduler::clock::Millis;
use crate::scheduler::model::{RunSpec, RunStatus, StepStatus, Target};
use crate::scheduler::policy::{self, resolve_failure};
use crate::scheduler::rules::{self, Gate};
use crate::workflow::{
    ABSENT, Action, ConditionInput, ResolveError, Root, Sleep, Step, StepFacts, Template, json_size,
};

/// Runs steps of any run on this node, up to `concurrency` at once.
pub struct Worker {
    scheduler: Arc<Scheduler>,
    cache: Arc<ComponentCache>,
    capabilities: Capabilities,
    slots: Arc<Semaphore>,
    concurrency: usize,
}

impl Worker {
    pub fn new(
        scheduler: Arc<Scheduler>,
        cache: Arc<ComponentCache>,
        concurrency: usize,
        capabilities: Capabilities,
    ) -> Arc<Self> {
        let concurrency = concurrency.max(1);
        Arc::new(Self {
            scheduler,
            cache,
            capabilities,
            slots: Arc::new(Semaphore::new(concurrency)),
            concurrency,
        })
    }

    /// Pulls and runs tasks until `shutdown` is cancelled.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        self.scheduler.watch_ended_runs(shutdown.clone());
        loop {
            // Take as many tasks as there are free slots, so a busy queue is
            // drained in batches.
            let first = tokio::select! {
                p = self.slots.clone().acquire_owned() => p.expect("semaphore never closed"),
                _ = shutdown.cancelled() => return,
            };
            let mut permits = vec![first];
            while permits.len() < self.concurrency {
                match self.slots.clone().try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
            let deliveries = tokio::select! {
                d = self.scheduler.queue().next(permits.len()) => d,
                _ = shutdown.cancelled() => return,
            };
            let deliveries = match deliveries {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the work queue; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            for delivery in deliveries {
                let permit = permits.pop().expect("no more deliveries than permits");
                let this = self.clone();
                tokio::spawn(async move {
                    let task = delivery.task.clone();
                    if AssertUnwindSafe(this.handle(delivery))
                        .catch_unwind()
                        .await
                        .is_err()
                    {
                        tracing::error!(?task, "the host failed while handling a task");
                    }
                    drop(permit);
                });
            }
        }
    }

    /// Waits until the steps running on this node have finished and committed,
    /// for at most `timeout`; true when they all did. Call after `run` returned.
    pub async fn drain(&self, timeout: Duration) -> bool {
        let all = u32::try_from(self.concurrency).unwrap_or(u32::MAX);
        tokio::time::timeout(timeout, self.slots.acquire_many(all))
            .await
            .is_ok()
    }

    async fn handle(&self, delivery: Delivery) {
        let now = self.scheduler.clock().now();
        let store = self.scheduler.store();
        let done = match retry_backend("claim", || store.claim(&delivery, now)).await {
            // Not acknowledged: the task is delivered again after the
            // visibility timeout, and `max_deliveries` bounds how often.
            Err(_) => false,
            Ok(Claim::Stale) => true,
            Ok(Claim::Finalize { spec, outputs }) => {
                let result = Scheduler::resolve_output(spec.clone(), outputs).await;
                retry_backend("finalize", || {
                    self.scheduler.finalize(&spec, result.clone())
                })
                .await
                .is_ok()
            }
            Ok(Claim::Step(work)) => {
                let run_span =
                    tracing::info_span!("run", run = %work.spec.id, tenant = %work.spec.tenant);
                let step_span = tracing::info_span!(
                    parent: &run_span,
                    "step",
                    step = %work.spec.workflow.steps[work.index].id,
                    attempt = work.attempt
                );
                self.step(work).instrument(step_span).await
            }
        };
        if done {
            let acked = std::slice::from_ref(&delivery);
            let _ = retry_backend("ack", || self.scheduler.queue().ack(acked)).await;
        }
    }

    /// Cancels the child a sub-workflow step started when its run ended
    /// meanwhile (cancelled, or failed by another step): nothing waits for
    /// it. (A wait superseded by another delivery of the step keeps it.)
    async fn drop_unwanted_child(&self, work: &StepWork) {
        let (spec, store) = (&work.spec, self.scheduler.store());
        let ended = match store.run(&spec.tenant, &spec.id).await {
            Ok(run) => {
                run.is_none_or(|r| r.status.is_terminal() || r.status == RunStatus::Compensating)
            }
            Err(_) => false,
        };
        if ended
            && let Err(e) = self
                .scheduler
                .cancel(&spec.tenant, &spec.child_id(work.index))
                .await
        {
            tracing::warn!(run = %spec.id, error = %e, "cannot cancel a child run nothing waits for");
        }
    }

    /// Runs one attempt and commits its result; false when the commit could
    /// not be made (the task is then left to be delivered again).
    async fn step(&self, work: StepWork) -> bool {
        let now = self.scheduler.clock().now();
        if let Target::Step(_) = work.target
            && !work.over_delivered
            && work.spec.workflow.steps[work.index]
                .sub_workflow()
                .is_some()
        {
            let store = self.scheduler.store();
            let Ok(outcome) =
                retry_backend("start a child run", || sub_workflow(&**store, &work, now)).await
            else {
                return false;
            };
            let waits = matches!(outcome, Outcome::Wait { .. });
            let committed =
                retry_backend("commit", || self.scheduler.commit(&work, outcome.clone())).await;
            if committed.as_ref().is_ok_and(|c| !c.applied) && waits {
                self.drop_unwanted_child(&work).await;
            }
            return committed.is_ok();
        }
        if let Target::Step(_) = work.target
            && !work.over_delivered
            && let Some(outcome) = decide_without_running(&work, now).await
        {
            let committed =
                retry_backend("commit", || self.scheduler.commit(&work, outcome.clone())).await;
            return committed.is_ok();
        }
        let (run, index, lease) = (&work.spec.id, work.index, work.lease);
        let token = self.scheduler.track(run, index, lease);
        let started = Instant::now();
        let started_at = std::time::SystemTime::now();
        let attempt = if work.over_delivered {
            // A poison pill: every node that ran it died. It is not run again.
            let failure = policy::delivery_limit(work.spec.defaults.max_deliveries);
            Ok((Err(failure), Vec::new()))
        } else {
            AssertUnwindSafe(self.attempt(&work, &token))
                .catch_unwind()
                .await
        };
        let elapsed = started.elapsed();
        self.scheduler.untrack(run, index, lease);
        let (result, logs) = attempt.unwrap_or_else(|_| {
            let failure = Failure::host("trap", "the host failed while running this step");
            (Err(failure), Vec::new())
        });
        let committed = retry_backend("commit", || {
            self.scheduler.record(&work, result.clone(), logs.clone())
        })
        .await;
        match committed {
            Ok(c) if c.applied => {
                metrics::histogram!("weft_step_duration_seconds").record(elapsed.as_secs_f64());
                let (status, code) = match &result {
                    Ok(_) => ("succeeded", ""),
                    Err(f) if c.retrying => ("retried", policy::code_label(&f.code)),
                    Err(f) => ("failed", policy::code_label(&f.code)),
                };
                metrics::counter!("weft_steps_total", "status" => status, "code" => code)
                    .increment(1);
                if let Some(tracer) = self.scheduler.tracer() {
                    tracer.attempt(AttemptSpan {
                        spec: &work.spec,
                        target: work.target,
                        attempt: work.attempt,
                        digest: match work.target {
                            Target::Compensation(i) => {
                                work.spec.compensation_pin(i).unwrap_or_default()
                            }
                            _ => &work.spec.pins[work.index],
                        },
                        started: started_at,
                        ended: started_at + elapsed,
                        outcome: status,
                        error: result.as_ref().err(),
                    });
                }
                match &result {
                    Ok(_) => tracing::debug!(?elapsed, "step succeeded"),
                    Err(f) => {
                        tracing::info!(code = %f.code, message = %f.message, ?elapsed, "step attempt failed")
                    }
                }
            }
            Ok(_) => tracing::debug!("late commit ignored"),
            Err(_) => return false,
        }
        true
    }

    async fn attempt(
        &self,
        work: &StepWork,
        cancel: &CancellationToken,
    ) -> (
        Result<serde_json::Value, Failure>,
        Vec<crate::engine::LogLine>,
    ) {
        let spec = &work.spec;
        let step = &spec.workflow.steps[work.index];
        let input = match resolve_input(work).await {
            Ok(v) => v,
            Err(e) => return (Err(resolve_failure("the step's input", e)), Vec::new()),
        };
        let compensation = matches!(work.target, Target::Compensation(_));
        let digest = match work.target {
            Target::Compensation(i) => spec.compensation_pin(i).unwrap_or_default(),
            _ => &spec.pins[work.index],
        };
        let store = self.scheduler.store().clone();
        let linked = match self.cache.get(digest, store.blob(digest)).await {
            Ok(l) => l,
            Err(e) => {
                return (
                    Err(Failure::host("component_unavailable", e.to_string())),
                    Vec::new(),
                );
            }
        };
        let grants = match self.capabilities.grants(&spec.tenant, step).await {
            Ok(g) => g,
            Err(failure) => return (Err(failure), Vec::new()),
        };
        let input = serde_json::to_string(&input).expect("a JSON value serialises");
        let step_id = match work.target {
            Target::Step(_) => step.id.clone(),
            Target::Item(_, k) => format!("{}[{k}]", step.id),
            Target::Compensation(_) => format!("{}.compensate", step.id),
        };
        let invocation = Invocation {
            tenant: spec.tenant.clone(),
            run_id: spec.id.clone(),
            step_id,
            attempt: work.attempt,
        };
        let execution = self
            .cache
            .engine()
            .run(
                &linked,
                invocation,
                &input,
                &spec.limits(work.index, compensation),
                grants,
                cancel,
            )
            .await;
        (execution.result, execution.logs)
    }
}

/// How a step that ran no component ends with `result`: it succeeded with
/// its output, or failed (the run goes on if the step says `on_error: continue`).
fn ended(step: &Step, result: Result<serde_json::Value, Failure>) -> Outcome {
    match result {
        Ok(output) => Outcome::Succeeded {
            output,
            logs: Vec::new(),
        },
        Err(failure) => Outcome::Failed {
            failure,
            logs: Vec::new(),
            continues: rules::continues(step),
        },
    }
}

/// What an attempt of a sub-workflow step decides: skipped by its gate;
/// else, once its child run ended, the child's output or `child_failed`;
/// else it waits for the child, which it starts first if nothing did yet
/// (the child's id is the same on every delivery, so it starts once).
async fn sub_workflow(
    store: &dyn StateStore,
    work: &StepWork,
    now: Millis,
) -> Result<Outcome, BackendError> {
    let spec = &work.spec;
    let step = &spec.workflow.steps[work.index];
    let failed = |failure: Failure| ended(step, Err(failure));
    let child_id = spec.child_id(work.index);
    match store.run(&spec.tenant, &child_id).await? {
        Some(child) if child.status.is_terminal() => {
            let result =
                rules::child_ended(&child_id, child.status, child.output, child.error.as_ref());
            return Ok(ended(step, result));
        }
        Some(_) => {
            return Ok(Outcome::Wait {
                due: None,
                signal: None,
            });
        }
        None => {}
    }
    if !work.woken
        && let Some(outcome) = gate(work).await
    {
        return Ok(outcome);
    }
    let input = match resolve(work, &step.input, spec.defaults.input_bytes).await {
        Ok(input) => input,
        Err(e) => return Ok(failed(resolve_failure("the step's input", e))),
    };
    let child = match spec.child(work.index, input, now) {
        Ok(child) => child,
        Err(message) => {
            return Ok(failed(Failure {
                code: "child_failed".into(),
                message,
                retryable: false,
            }));
        }
    };
    // Keyed by its id, with a key no client can send (it has a space).
    let new = NewRun {
        spec: Arc::new(child),
        idempotency: Some(Idempotency {
            key: format!("child {child_id}"),
            fingerprint: child_id,
        }),
        max_active: u32::MAX,
    };
    store.create_run(new).await?;
    Ok(Outcome::Wait {
        due: None,
        signal: None,
    })
}

/// What a step's attempt decides without running anything: skipped by its
/// gate (a first attempt), for a step that waits its wait or what its
/// wake-up ends it with, for a for_each step its list (or why it has none).
async fn decide_without_running(work: &StepWork, now: Millis) -> Option<Outcome> {
    let spec = &work.spec;
    let step = &spec.workflow.steps[work.index];
    let ended = |result| ended(step, result);
    if work.woken {
        return Some(ended(rules::woken(step)));
    }
    if work.attempt == 1
        && let Some(outcome) = gate(work).await
    {
        return Some(outcome);
    }
    match &step.action {
        Action::Run(_) | Action::Workflow(_) => {}
        Action::Signal(name) => {
            return Some(Outcome::Wait {
                due: rules::signal_due(step, now),
                signal: Some(name.clone()),
            });
        }
        Action::Sleep(sleep) => {
            let due = match sleep {
                Sleep::For(ms) => rules::sleep_due(rules::SleepFor::Ms(*ms), now),
                Sleep::Until(until) => {
                    match resolve(work, until, spec.defaults.input_bytes).await {
                        Ok(at) => rules::sleep_due(rules::SleepFor::Until(&at), now),
                        Err(e) => Err(resolve_failure("the step's sleep_until", e)),
                    }
                }
            };
            return Some(match due {
                Ok(due) => Outcome::Wait {
                    due: Some(due),
                    signal: None,
                },
                Err(failure) => ended(Err(failure)),
            });
        }
    }
    let list = &step.for_each.as_ref()?.list;
    let resolved = resolve(work, list, usize::MAX).await;
    Some(match resolved {
        Ok(serde_json::Value::Array(items)) => Outcome::Expand { items },
        Ok(other) => ended(Err(rules::not_a_list(&other))),
        Err(e) => ended(Err(resolve_failure("the step's for_each", e))),
    })
}

/// The skip a step's gate decides (`rules::gate`), if it decides one. A
/// condition is evaluated on the blocking pool: its cost grows with the
/// input and outputs it reads.
async fn gate(work: &StepWork) -> Option<Outcome> {
    let decided = if work.spec.workflow.steps[work.index].when.is_none() {
        decide_gate(&work.spec, work.index, &work.deps, &work.facts)
    } else {
        let (spec, deps, facts) = (work.spec.clone(), work.deps.clone(), work.facts.clone());
        let index = work.index;
        crate::budget::offload(move || decide_gate(&spec, index, &deps, &facts)).await
    };
    match decided {
        Gate::Skip { reason, error } => Some(Outcome::Skipped { reason, error }),
        Gate::Run => None,
    }
}

/// The gate of step `index`, from how its dependencies ended.
fn decide_gate(
    spec: &RunSpec,
    index: usize,
    deps: &[(usize, Arc<serde_json::Value>)],
    facts: &[(usize, StepStatus, Option<Failure>)],
) -> Gate {
    let statuses: Vec<StepStatus> = facts.iter().map(|(_, s, _)| *s).collect();
    rules::gate(&spec.workflow.steps[index], &statuses, |condition| {
        let steps = condition
            .steps()
            .iter()
            .filter_map(|&d| {
                let (_, status, error) = facts.iter().find(|(i, _, _)| *i == d)?;
                let facts = StepFacts {
                    output: root_value(spec, deps, None, Root::Step(d))?,
                    status: status.as_str(),
                    error: error.as_ref().and_then(|e| serde_json::to_value(e).ok()),
                };
                Some((spec.workflow.steps[d].id.as_str(), facts))
            })
            .collect();
        condition.evaluate(&ConditionInput {
            input: &spec.input,
            steps,
        })
    })
}

/// The input of the attempt with its references resolved, within the run's
/// `input_bytes`.
async fn resolve_input(work: &StepWork) -> Result<serde_json::Value, ResolveError> {
    let step = &work.spec.workflow.steps[work.index];
    let template = match (&work.target, &step.compensate) {
        (Target::Compensation(_), Some(c)) => &c.input,
        _ => &step.input,
    };
    resolve(work, template, work.spec.defaults.input_bytes).await
}

/// `template` resolved for the attempt, within `limit` bytes. When what it
/// refers to is large, the work goes to the blocking pool.
async fn resolve(
    work: &StepWork,
    template: &Template,
    limit: usize,
) -> Result<serde_json::Value, ResolveError> {
    let index = match work.target {
        Target::Item(_, k) => Some(serde_json::Value::from(k)),
        _ => None,
    };
    let item = work.item.as_deref().zip(index.as_ref());
    // What the input refers to, counted only up to the size worth moving off the executor.
    let large = template
        .roots()
        .filter_map(|root| root_value(&work.spec, &work.deps, item, root))
        .try_fold(crate::budget::SMALL_WORK_BYTES, |left, value| {
            json_size(value, left).map(|n| left - n)
        })
        .is_none();
    if !large {
        let lookup = |root| root_value(&work.spec, &work.deps, item, root);
        return template.resolve_within(&lookup, limit);
    }
    let (spec, deps, template) = (work.spec.clone(), work.deps.clone(), template.clone());
    let owned = work.item.clone().zip(index);
    crate::budget::offload(move || {
        let item = owned.as_ref().map(|(i, k)| (&**i, k));
        let lookup = |root| root_value(&spec, &deps, item, root);
        template.resolve_within(&lookup, limit)
    })
    .await
}

/// The value a reference's root names: the run's input, a dependency's
/// output (`null` for one that ended without an output), or the item and
/// its index.
fn root_value<'a>(
    spec: &'a RunSpec,
    deps: &'a [(usize, Arc<serde_json::Value>)],
    item: Option<(&'a serde_json::Value, &'a serde_json::Value)>,
    root: Root,
) -> Option<&'a serde_json::Value> {
    match root {
        Root::Input => Some(&spec.input),
        Root::Step(d) => Some(
            deps.iter()
                .find(|(i, _)| *i == d)
                .map_or(&ABSENT, |(_, v)| &**v),
        ),
        Root::Item => item.map(|(i, _)| i),
        Root::Index => item.map(|(_, k)| k),
    }
}

/// Backend calls are retried while the backend is unavailable, so that no
/// finished work is lost while it is briefly away; corrupt data is not retried.
async fn retry_backend<T, F, Fut>(what: &str, mut call: F) -> Result<T, BackendError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, BackendError>>,
{
    let mut delay = Duration::from_millis(50);
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e @ BackendError::Corrupt(_)) => {
                tracing::error!(error = %e, "{what} failed on unreadable data; the task is left to be delivered again");
                return Err(e);
            }
            Err(e) => {
                tracing::warn!(error = %e, "{what} failed; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}
