//! Run and step state machines: what is ready, retries, deadlines and
//! cancellation. Talks to storage only through [`StateStore`] and [`WorkQueue`].

pub mod clock;
pub mod model;
pub mod policy;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::backend::{BackendError, Committed, Outcome, StateStore, StepWork, WorkQueue};
use crate::engine::{Failure, LogLine};
use crate::workflow::Root;
use clock::Clock;
use model::{RunError, RunEvent, RunSpec, RunStatus, RunView};
use policy::Decision;

/// The scheduler of one node.
pub struct Scheduler {
    store: Arc<dyn StateStore>,
    queue: Arc<dyn WorkQueue>,
    clock: Arc<dyn Clock>,
    running: Mutex<HashMap<(String, usize), CancellationToken>>,
}

impl Scheduler {
    pub fn new(store: Arc<dyn StateStore>, queue: Arc<dyn WorkQueue>, clock: Arc<dyn Clock>) -> Arc<Self> {
        Arc::new(Self {
            store,
            queue,
            clock,
            running: Mutex::new(HashMap::new()),
        })
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

    /// Starts a validated run: stores it and enqueues its root steps.
    pub async fn start(&self, spec: RunSpec) -> Result<String, BackendError> {
        let id = spec.id.clone();
        self.store.create_run(Arc::new(spec)).await?;
        Ok(id)
    }

    /// Cancels a run: steps not started are skipped, running ones are stopped at
    /// their next epoch tick. `None` when the tenant has no such run.
    pub async fn cancel(&self, tenant: &str, run: &str) -> Result<Option<RunStatus>, BackendError> {
        let Some((status, stopped)) = self.store.cancel(tenant, run, self.clock.now()).await? else {
            return Ok(None);
        };
        self.stop_local(run, &stopped);
        Ok(Some(status))
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
                        Ok(RunEvent::Run { run: r, status, .. }) if r == run && status.is_terminal() => break,
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
    pub(crate) fn track(&self, run: &str, index: usize) -> CancellationToken {
        let token = CancellationToken::new();
        self.running
            .lock()
            .unwrap()
            .insert((run.to_string(), index), token.clone());
        token
    }

    pub(crate) fn untrack(&self, run: &str, index: usize) {
        self.running.lock().unwrap().remove(&(run.to_string(), index));
    }

    fn stop_local(&self, run: &str, steps: &[usize]) {
        let running = self.running.lock().unwrap();
        for &index in steps {
            if let Some(token) = running.get(&(run.to_string(), index)) {
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
        let outcome = match policy::decide(result, work.attempt, &step.retry, &mut rand::rng()) {
            Decision::Succeed(output) => Outcome::Succeeded { output, logs },
            Decision::Retry { failure, delay_ms } => Outcome::Retry {
                failure,
                logs,
                due: now + delay_ms,
            },
            Decision::Fail(failure) => Outcome::Failed { failure, logs },
        };
        let committed = self
            .store
            .commit(&work.spec.id, work.index, work.lease, outcome, now)
            .await?;
        if !committed.cancelled.is_empty() {
            self.stop_local(&work.spec.id, &committed.cancelled);
        }
        Ok(committed)
    }

    /// Resolves the run's output from its steps' outputs and ends it.
    pub async fn finalize(
        &self,
        spec: &RunSpec,
        outputs: &[Option<serde_json::Value>],
    ) -> Result<bool, BackendError> {
        let result = match &spec.workflow.output {
            None => Ok(serde_json::Value::Null),
            Some(template) => template
                .resolve(&|root| match root {
                    Root::Input => Some(&spec.input),
                    Root::Step(i) => outputs.get(i).and_then(Option::as_ref),
                })
                .map_err(|e| RunError {
                    code: "bad_reference".into(),
                    message: format!("output: {e}"),
                    step: None,
                }),
        };
        self.store.finish(&spec.id, result, self.clock.now()).await
    }
}

/// A new run id: time-ordered, unguessable.
pub fn new_run_id(now: clock::Millis) -> String {
    format!("run_{now:012x}{:016x}", rand::random::<u64>())
}
