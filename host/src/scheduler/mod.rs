//! Run and step state machines: what is ready, retries, deadlines and
//! cancellation. Talks to storage only through [`StateStore`] and [`WorkQueue`].

pub mod clock;
pub mod flow;
pub mod model;
pub mod policy;
pub mod rules;
pub mod schedule;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::backend::{
    Admission, BackendError, Cancelled, Committed, NewRun, Outcome, Signalled, StateStore,
    StepWork, WorkQueue,
};
use crate::engine::{Failure, LogLine};
use crate::telemetry::Tracer;
use crate::workflow::Root;
use clock::Clock;
use model::{RunError, RunEvent, RunSpec, RunStatus, RunView, StepStatus, Target};
use policy::Decision;

/// The scheduler of one node.
pub struct Scheduler {
    store: Arc<dyn StateStore>,
    queue: Arc<dyn WorkQueue>,
    clock: Arc<dyn Clock>,
    /// Attempts running on this node, by (run, step, lease).
    running: Mutex<HashMap<(String, usize, u64), CancellationToken>>,
    /// Where the spans of runs go, when they are exported.
    tracer: std::sync::OnceLock<Arc<Tracer>>,
}

impl Scheduler {
    pub fn new(
        store: Arc<dyn StateStore>,
        queue: Arc<dyn WorkQueue>,
        clock: Arc<dyn Clock>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            queue,
            clock,
            running: Mutex::new(HashMap::new()),
            tracer: std::sync::OnceLock::new(),
        })
    }

    /// Exports the spans of runs and attempts through `tracer` from now on
    /// (once; later calls change nothing).
    pub fn trace_with(&self, tracer: Arc<Tracer>) {
        let _ = self.tracer.set(tracer);
    }

    /// The tracer spans go to, if they are exported.
    pub fn tracer(&self) -> Option<&Arc<Tracer>> {
        self.tracer.get()
    }

    /// What every end of a run is followed by, on the node that ended it.
    fn run_finished(&self, tenant: &str, run: &str, status: RunStatus) {
        metrics::counter!("weft_runs_finished_total", "status" => status.as_str()).increment(1);
        if let Some(tracer) = self.tracer.get() {
            tracer.run_ended(self.store.clone(), tenant, run);
        }
    }

    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.store
    }

    pub fn queue(&self) -> &Arc<dyn WorkQueue> {
        &self.queue
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Starts a validated run unconditionally: stores it and enqueues its root steps.
    pub async fn start(&self, spec: RunSpec) -> Result<String, BackendError> {
        let id = spec.id.clone();
        self.submit(NewRun::new(spec)).await?;
        Ok(id)
    }

    /// Admits a validated run (idempotency key, the tenant's limit of
    /// unfinished runs) and, when admitted, stores it and enqueues its root steps.
    pub async fn submit(&self, new: NewRun) -> Result<Admission, BackendError> {
        let tenant = new.spec.tenant.clone();
        let id = new.spec.id.clone();
        let admission = self.store.create_run(new).await?;
        if admission == Admission::Created {
            metrics::counter!("weft_runs_submitted_total").increment(1);
            tracing::info!(run = %id, %tenant, "run submitted");
        }
        Ok(admission)
    }

    /// Cancels a run: steps not started are skipped, running ones are stopped at
    /// their next epoch tick. `None` when the tenant has no such run.
    pub async fn cancel(&self, tenant: &str, run: &str) -> Result<Option<Cancelled>, BackendError> {
        let cancelled = self.store.cancel(tenant, run, self.clock.now()).await?;
        if let Some(Cancelled::Now { stopped, status }) = &cancelled {
            self.stop_local(run, stopped);
            if status.is_terminal() {
                self.run_finished(tenant, run, *status);
            }
            tracing::info!(%run, %tenant, "run cancelled");
            self.cancel_children(tenant, run).await?;
        }
        Ok(cancelled)
    }

    /// Cancels the child runs of a run that was stopped (cancelled, or
    /// failed by a step): those its sub-workflow steps started and that
    /// have not ended, and theirs in turn.
    pub fn cancel_children<'a>(
        &'a self,
        tenant: &'a str,
        run: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let Some(view) = self.store.run(tenant, run).await? else {
                return Ok(());
            };
            for step in view.steps.values() {
                if let Some(child) = &step.run
                    && step.status == StepStatus::Cancelled
                {
                    self.cancel(tenant, child).await?;
                }
            }
            Ok(())
        })
    }

    /// Sends the signal `name` with `payload` to the tenant's run
    /// (`StateStore::signal`).
    pub async fn signal(
        &self,
        tenant: &str,
        run: &str,
        name: &str,
        payload: serde_json::Value,
    ) -> Result<Signalled, BackendError> {
        let signalled = self
            .store
            .signal(tenant, run, name, payload, self.clock.now())
            .await?;
        match &signalled {
            Signalled::Delivered { step } => {
                tracing::info!(%run, %tenant, signal = name, %step, "signal taken by its step");
            }
            Signalled::Buffered { buffered } => {
                tracing::info!(%run, %tenant, signal = name, buffered, "signal kept for a later step");
            }
            _ => {}
        }
        Ok(signalled)
    }

    /// Waits until the run ends and returns it; `None` when it does not exist.
    pub async fn wait(&self, tenant: &str, run: &str) -> Result<Option<RunView>, BackendError> {
        let mut events = self.store.subscribe();
        loop {
            let Some(view) = self.store.run(tenant, run).await? else {
                return Ok(None);
            };
            if view.status.is_terminal() {
                return Ok(Some(view));
            }
            // Wake on this run's end, and re-read now and then in case events were missed.
            let ended = async {
                loop {
                    match events.recv().await {
                        Ok(RunEvent::Run { run: r, status, .. })
                            if r == run && status.is_terminal() =>
                        {
                            break;
                        }
                        Ok(_) => continue,
                        Err(RecvError::Lagged(_)) => break,
                        Err(RecvError::Closed) => std::future::pending::<()>().await,
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), ended).await;
        }
    }

    /// Registers a running attempt so that cancellation and fail-fast can stop it.
    pub fn track(&self, run: &str, index: usize, lease: u64) -> CancellationToken {
        let token = CancellationToken::new();
        let mut running = self.running.lock().unwrap();
        running.insert((run.to_string(), index, lease), token.clone());
        metrics::gauge!("weft_steps_running").set(running.len() as f64);
        token
    }

    /// Step attempts running on this node now.
    pub fn running(&self) -> usize {
        self.running.lock().unwrap().len()
    }

    /// Forgets an attempt registered with [`Scheduler::track`].
    pub fn untrack(&self, run: &str, index: usize, lease: u64) {
        let mut running = self.running.lock().unwrap();
        running.remove(&(run.to_string(), index, lease));
        metrics::gauge!("weft_steps_running").set(running.len() as f64);
    }

    /// Stops this node's attempts of runs that other nodes ended, for as
    /// long as `shutdown` is not cancelled.
    pub fn watch_ended_runs(self: &Arc<Self>, shutdown: CancellationToken) {
        let Some(mut ended) = self.store.ended_runs() else {
            return;
        };
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let run = tokio::select! {
                    r = ended.recv() => r,
                    _ = shutdown.cancelled() => return,
                };
                let Some(this) = this.upgrade() else { return };
                match run {
                    Ok(run) => this.stop_run_local(&run),
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(
                            missed = n,
                            "missed notices of ended runs; their late commits are ignored"
                        )
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
    }

    fn stop_run_local(&self, run: &str) {
        let running = self.running.lock().unwrap();
        for ((r, _, _), token) in running.iter() {
            if r == run {
                token.cancel();
            }
        }
    }

    fn stop_local(&self, run: &str, steps: &[usize]) {
        let running = self.running.lock().unwrap();
        for ((r, index, _), token) in running.iter() {
            if r == run && steps.contains(index) {
                token.cancel();
            }
        }
    }

    /// Decides what follows an attempt and commits it atomically.
    pub async fn record(
        &self,
        work: &StepWork,
        result: Result<serde_json::Value, Failure>,
        logs: Vec<LogLine>,
    ) -> Result<Committed, BackendError> {
        let step = &work.spec.workflow.steps[work.index];
        let now = self.clock.now();
        let (retry, continues) = match (work.target, &step.compensate) {
            (Target::Compensation(_), Some(c)) => (c.retry, false),
            _ => (step.retry, rules::continues(step)),
        };
        let outcome = match policy::decide(result, work.attempt, &retry, &mut rand::rng()) {
            Decision::Succeed(output) => Outcome::Succeeded { output, logs },
            Decision::Retry { failure, delay_ms } => Outcome::Retry {
                failure,
                logs,
                due: now.saturating_add(delay_ms),
            },
            Decision::Fail(failure) => Outcome::Failed {
                failure,
                logs,
                continues,
            },
        };
        self.commit(work, outcome).await
    }

    /// Commits an outcome the scheduler decided for an attempt (a gate's
    /// skip, a for_each list) or that [`Scheduler::record`] decided.
    pub async fn commit(
        &self,
        work: &StepWork,
        outcome: Outcome,
    ) -> Result<Committed, BackendError> {
        let now = self.clock.now();
        let stops_run = matches!(
            outcome,
            Outcome::Failed {
                continues: false,
                ..
            }
        );
        let committed = self
            .store
            .commit(&work.spec.id, work.target, work.lease, outcome, now)
            .await?;
        if !committed.cancelled.is_empty() {
            self.stop_local(&work.spec.id, &committed.cancelled);
        }
        if let Some(status) = committed.run_ended.filter(|s| s.is_terminal()) {
            self.run_finished(&work.spec.tenant, &work.spec.id, status);
        }
        if committed.applied
            && stops_run
            && !work.spec.children.is_empty()
            && let Err(e) = self.cancel_children(&work.spec.tenant, &work.spec.id).await
        {
            tracing::warn!(run = %work.spec.id, error = %e, "cannot cancel the run's child runs");
        }
        Ok(committed)
    }

    /// Resolves the run's output from its steps' outputs, within the run's
    /// `input_bytes`; large outputs are resolved off the async executor.
    pub async fn resolve_output(
        spec: Arc<RunSpec>,
        outputs: Vec<Option<Arc<serde_json::Value>>>,
    ) -> Result<serde_json::Value, RunError> {
        let Some(template) = &spec.workflow.output else {
            return Ok(serde_json::Value::Null);
        };
        if template.is_literal() {
            return Ok(template
                .resolve_within(&|_| None, usize::MAX)
                .unwrap_or_default());
        }
        let resolve = move || {
            // Every step has ended: one without an output reads as null.
            let lookup = |root| match root {
                Root::Input => Some(&spec.input),
                Root::Step(i) => Some(
                    outputs
                        .get(i)
                        .and_then(Option::as_deref)
                        .unwrap_or(&crate::workflow::ABSENT),
                ),
                Root::Item | Root::Index => None,
            };
            let template = spec.workflow.output.as_ref().expect("checked above");
            template
                .resolve_within(&lookup, spec.defaults.input_bytes)
                .map_err(|e| {
                    let failure = policy::resolve_failure("the run's output", e);
                    RunError {
                        code: failure.code,
                        message: format!("output: {}", failure.message),
                        step: None,
                    }
                })
        };
        crate::budget::offload(resolve).await
    }

    /// Ends a run whose steps all ended, with its resolved output or the
    /// error that resolving it gave.
    pub async fn finalize(
        &self,
        spec: &RunSpec,
        result: Result<serde_json::Value, RunError>,
    ) -> Result<bool, BackendError> {
        let run = spec.id.as_str();
        let status = if result.is_ok() {
            RunStatus::Succeeded
        } else {
            RunStatus::Failed
        };
        let finished = self.store.finish(run, result, self.clock.now()).await?;
        if finished {
            self.run_finished(&spec.tenant, run, status);
        }
        Ok(finished)
    }
}

/// A new run id: time-ordered, unguessable, and increasing within this
/// process even for runs created in the same millisecond, so that a listing
/// (newest first, by id) shows them in the order they were created.
pub fn new_run_id(now: clock::Millis) -> String {
    static LAST: std::sync::Mutex<(clock::Millis, u64)> = std::sync::Mutex::new((0, 0));
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    // A fresh random start each millisecond, with room above it for the
    // runs that follow within the same one.
    *last = if now > last.0 {
        (now, rand::random::<u64>() >> 1)
    } else {
        (last.0, last.1 + 1 + u64::from(rand::random::<u16>()))
    };
    let (at, suffix) = *last;
    format!("run_{at:012x}{suffix:016x}")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    #[test]
    fn run_ids_created_in_one_millisecond_increase() {
        let ids: Vec<String> = (0..1_000).map(|_| super::new_run_id(5_000)).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        assert!(
            ids.iter()
                .all(|id| id.len() == 32 && id.starts_with("run_"))
        );
        // A clock that steps back does not reorder them either.
        assert!(super::new_run_id(4_000) > ids[999]);
    }

    use serde_json::json;

    use super::Scheduler;
    use crate::backend::memory::{MemoryBackend, Retention};
    use crate::backend::{Claim, StateStore, WorkQueue};
    use crate::engine::Failure;
    use crate::scheduler::clock::ManualClock;
    use crate::scheduler::model::{RunSpec, StepDefaults};
    use crate::workflow;

    #[tokio::test]
    async fn a_failure_stops_the_attempts_still_running_on_this_node() {
        let clock = Arc::new(ManualClock::new(1_000));
        let backend = MemoryBackend::new(clock.clone(), None, Retention::default());
        let scheduler = Scheduler::new(backend.clone(), backend.clone(), clock);
        let doc = json!({ "steps": [
            { "id": "bad", "component": "x@1" },
            { "id": "busy", "component": "x@1" }
        ] });
        let resolver = |_: &str, _: &semver::VersionReq| Ok::<_, String>("sha256:00".into());
        let v = workflow::validate(&doc, &resolver).unwrap();
        scheduler
            .start(RunSpec {
                id: "run_1".into(),
                tenant: "t".into(),
                document: doc,
                workflow: v.workflow,
                pins: v.pins,
                input: json!({}),
                defaults: StepDefaults::default(),
                created_at: 1_000,
                template: None,
                parent: None,
                parent_step: None,
                children: Default::default(),
                priority: crate::scheduler::flow::DEFAULT_PRIORITY,
                start_at: None,
                schedule: None,
                trace: None,
            })
            .await
            .unwrap();
        let mut works = Vec::new();
        for d in backend.next(2).await.unwrap() {
            let Claim::Step(w) = backend.claim(&d, 1_000).await.unwrap() else {
                panic!("expected a step");
            };
            works.push(w);
        }
        let (bad, busy) = (&works[0], &works[1]);
        let busy_token = scheduler.track(&busy.spec.id, busy.index, busy.lease);
        let bad_token = scheduler.track(&bad.spec.id, bad.index, bad.lease);
        let failure = Failure {
            code: "boom".into(),
            message: "x".into(),
            retryable: false,
        };
        scheduler.record(bad, Err(failure), vec![]).await.unwrap();
        assert!(
            busy_token.is_cancelled(),
            "the running sibling was not stopped"
        );
        assert!(!bad_token.is_cancelled());

        // Cancelling a run stops what runs; an unknown run is None.
        assert!(scheduler.cancel("t", "nope").await.unwrap().is_none());
        assert_eq!(
            scheduler.cancel("t", "run_1").await.unwrap(),
            Some(crate::backend::Cancelled::AlreadyEnded(
                crate::scheduler::model::RunStatus::Failed
            ))
        );
    }
}
