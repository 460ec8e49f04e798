//! Every node's tick loop: fires the schedules that are due. Nodes need not
//! agree on who fires a tick. Each tick's run carries an idempotency key of
//! the schedule's name and the tick's time, so that the nodes firing a tick
//! at once start one run; the schedule's new state is stored only over the
//! version it was read at, so that one of them records it.

use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::AppState;
use super::start::{Start, start_run};
use crate::backend::{BackendError, Idempotency, Schedule, ScheduleError};
use crate::scheduler::clock::{Millis, rfc3339};
use crate::scheduler::flow;
use crate::scheduler::model::ScheduledBy;
use crate::scheduler::schedule::{Cron, TickAction, due_ticks, on_tick, tick_key};

/// How often a node looks for due schedules.
const LOOK_EVERY: Duration = Duration::from_millis(100);

/// Schedules fired in one look; more are left for the next, at once.
const BATCH: usize = 100;

/// Starts the node's tick loop, until `shutdown`.
pub fn spawn(state: AppState, shutdown: CancellationToken) {
    tokio::spawn(async move {
        loop {
            let now = state.scheduler.clock().now();
            let fired = match state.store().due_schedules(now, BATCH).await {
                Ok(due) => {
                    let n = due.len();
                    for (tenant, schedule) in due {
                        if let Err(e) = fire(&state, &tenant, schedule, now).await {
                            tracing::warn!(%tenant, error = %e, "schedule not fired; retried");
                        }
                    }
                    n
                }
                Err(e) => {
                    tracing::warn!(error = %e, "due schedules not read; retried");
                    0
                }
            };
            if fired == BATCH {
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(LOOK_EVERY) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    });
}

/// Fires the ticks of `schedule` due at `now` and records them. A backend
/// that cannot be reached leaves the ticks due, to fire again.
async fn fire(
    state: &AppState,
    tenant: &str,
    schedule: Schedule,
    now: Millis,
) -> Result<(), BackendError> {
    let mut next = schedule.clone();
    next.version += 1;
    let cron = match Cron::parse(&schedule.cron, &schedule.timezone) {
        Ok(cron) => cron,
        Err(why) => {
            // Stored by an older build that took the pattern: paused, with why.
            next.paused = true;
            next.next_tick = None;
            next.last_error = Some(error(now, "invalid_schedule", why));
            state.store().update_schedule(tenant, next).await?;
            return Ok(());
        }
    };
    let due = due_ticks(&cron, schedule.after, now, schedule.catch_up);
    let Some(record) = state.store().tenant(tenant).await? else {
        return Ok(());
    };
    for tick in due.fire {
        if let Some(previous) = &next.last_run {
            let running = state
                .store()
                .run(tenant, previous)
                .await?
                .is_some_and(|run| !run.status.is_terminal());
            match on_tick(schedule.overlap, running) {
                TickAction::Skip => continue,
                TickAction::CancelPreviousThenStart => {
                    state.scheduler.cancel(tenant, previous).await?;
                }
                TickAction::Start => {}
            }
        }
        let key = tick_key(&schedule.name, tick);
        let start = Start {
            workflow: serde_json::Value::String(schedule.workflow.clone()),
            input: Some(schedule.input.clone()),
            priority: flow::DEFAULT_PRIORITY,
            start_at: None,
            delay_ms: None,
            idempotency: Some(Idempotency {
                fingerprint: hex::encode(Sha256::digest(&key)),
                key,
            }),
            schedule: Some(ScheduledBy {
                name: schedule.name.clone(),
                tick,
            }),
            trace: None,
            size: 0,
        };
        match start_run(state, &record, start).await {
            Ok((run, _)) => next.last_run = Some(run),
            Err(e) if e.status == axum::http::StatusCode::SERVICE_UNAVAILABLE => {
                return Err(BackendError::Unavailable(e.message));
            }
            Err(e) => next.last_error = Some(error(tick, e.code, e.message)),
        }
    }
    if let Some(newest) = due.newest {
        next.after = newest;
        next.last_tick = Some(newest);
    }
    next.next_tick = cron.next_after(next.after);
    // Another node may have recorded these ticks first: then its record stands.
    state.store().update_schedule(tenant, next).await?;
    Ok(())
}

fn error(tick: Millis, code: &str, message: String) -> ScheduleError {
    ScheduleError {
        tick: rfc3339(tick),
        code: code.to_string(),
        message,
    }
}
