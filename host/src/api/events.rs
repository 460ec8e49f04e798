//! `GET /v1/runs/{id}/events`: a run's state changes as server-sent events,
//! until the run ends.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use tokio::sync::broadcast::{self, error::RecvError};
use utoipa::openapi::RefOr;
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

use super::auth::Tenant;
use super::error::ErrorBody;
use super::{ApiError, AppState};
use crate::scheduler::model::{RunEvent, RunStatus, RunView, StepStatus};

/// How often a stream with no news re-reads its run.
const RECHECK: Duration = Duration::from_secs(1);

/// Follow a run: its current state, then one event per change until it ends.
#[utoipa::path(get, path = "/v1/runs/{id}/events", tag = "runs", operation_id = "follow_run",
    params(("id" = String, Path, description = "Run id")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "`event: step` and `event: run` events whose data is a RunEvent; the stream ends after the run's final `run` event",
            content_type = "text/event-stream", body = EventMessage),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 404, description = "No such run", body = ErrorBody),
    ))]
pub async fn stream(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    // Subscribe before reading the run, so that no change falls in between.
    let events = state.store().subscribe();
    let view = state
        .store()
        .run(&tenant.name, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(format_args!("run {id:?}")))?;
    let mut follow = Follow {
        state,
        tenant: tenant.name,
        run: id,
        events,
        pending: VecDeque::new(),
        steps: HashMap::new(),
        status: None,
        done: false,
        recheck: {
            let mut every = tokio::time::interval(RECHECK);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            every.reset();
            every
        },
        _open: OpenStream::new(),
    };
    follow.catch_up(&view);
    let stream = futures::stream::unfold(follow, |mut f| async move {
        let event = f.next().await?;
        Some((Ok(to_sse(&event)), f))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// One message of a run's event stream: `event` is `step` or `run`, `data` a
/// RunEvent as JSON. As Open API 3.1 reads a `text/event-stream` schema, this
/// describes each message, not the whole stream.
pub struct EventMessage;

impl PartialSchema for EventMessage {
    fn schema() -> RefOr<Schema> {
        // `contentSchema` (JSON Schema 2020-12) says what `data` holds once
        // parsed; utoipa has no field for it, so it goes in as an extension.
        let content_schema = Extensions::from_iter([(
            "contentSchema",
            serde_json::json!({"$ref": "#/components/schemas/RunEvent"}),
        )]);
        let data = ObjectBuilder::new()
            .schema_type(Type::String)
            .content_media_type("application/json")
            .description(Some("The RunEvent, as JSON"))
            .extensions(Some(content_schema));
        let event = ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(["step", "run"]));
        ObjectBuilder::new()
            .property("event", event)
            .property("data", data)
            .required("event")
            .required("data")
            .into()
    }
}

impl ToSchema for EventMessage {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((RunEvent::name().into_owned(), RunEvent::schema()));
        RunEvent::schemas(schemas);
    }
}

fn to_sse(event: &RunEvent) -> Event {
    let name = match event {
        RunEvent::Run { .. } => "run",
        RunEvent::Step { .. } => "step",
        RunEvent::Items { .. } => "items",
        RunEvent::Compensation { .. } => "compensation",
    };
    Event::default()
        .event(name)
        .data(serde_json::to_string(event).expect("events serialise"))
}

/// Counts open event streams in the `weft_event_streams_open` gauge.
struct OpenStream;

impl OpenStream {
    fn new() -> Self {
        metrics::gauge!("weft_event_streams_open").increment(1.0);
        Self
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        metrics::gauge!("weft_event_streams_open").decrement(1.0);
    }
}

struct Follow {
    state: AppState,
    tenant: String,
    run: String,
    events: broadcast::Receiver<RunEvent>,
    /// Events to send before waiting for more.
    pending: VecDeque<RunEvent>,
    /// What the client was last told of each step: (status, attempt).
    steps: HashMap<String, (StepStatus, u32)>,
    /// What the client was last told of the run.
    status: Option<RunStatus>,
    /// The run has ended (or is gone): send what is pending, then stop.
    done: bool,
    recheck: tokio::time::Interval,
    _open: OpenStream,
}

impl Follow {
    async fn next(&mut self) -> Option<RunEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if self.done {
                return None;
            }
            let received = tokio::select! {
                r = self.events.recv() => Some(r),
                _ = self.state.shutdown.cancelled() => return None,
                // A change the event channel did not bring (a node that just
                // subscribed, a reconnect) is seen here within a second.
                _ = self.recheck.tick() => None,
            };
            let Some(received) = received else {
                match self.state.store().run(&self.tenant, &self.run).await {
                    Ok(Some(view)) => self.catch_up(&view),
                    Ok(None) => self.done = true,
                    Err(_) => {}
                }
                continue;
            };
            match received {
                Ok(event) if event.run_id() == self.run => {
                    // News of this run: no need to re-read it for a while.
                    self.recheck.reset();
                    self.offer(event)
                }
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => {
                    // Events were dropped: tell the client what changed meanwhile.
                    match self.state.store().run(&self.tenant, &self.run).await {
                        Ok(Some(view)) => self.catch_up(&view),
                        _ => self.done = true,
                    }
                }
                Err(RecvError::Closed) => self.done = true,
            }
        }
    }

    /// Queues an event unless the client already knows what it says.
    fn offer(&mut self, event: RunEvent) {
        match &event {
            RunEvent::Step {
                step,
                status,
                attempt,
                ..
            } => {
                if self.steps.get(step) == Some(&(*status, *attempt)) {
                    return;
                }
                self.steps.insert(step.clone(), (*status, *attempt));
            }
            RunEvent::Run { status, .. } => {
                if status.is_terminal() {
                    self.done = true;
                }
                if self.status == Some(*status) {
                    return;
                }
                self.status = Some(*status);
            }
            RunEvent::Items { .. } | RunEvent::Compensation { .. } => {}
        }
        self.pending.push_back(event);
    }

    /// Queues the events that bring the client to the state of `view`.
    fn catch_up(&mut self, view: &RunView) {
        for (id, step) in &view.steps {
            if step.status == StepStatus::Pending {
                continue;
            }
            let at = step
                .finished_at
                .as_ref()
                .or(step.started_at.as_ref())
                .unwrap_or(&view.created_at)
                .clone();
            self.offer(RunEvent::Step {
                run: view.id.clone(),
                step: id.clone(),
                status: step.status,
                attempt: step.attempts,
                error: step.error.clone(),
                at,
            });
        }
        let at = view
            .finished_at
            .as_ref()
            .or(view.started_at.as_ref())
            .unwrap_or(&view.created_at)
            .clone();
        self.offer(RunEvent::Run {
            run: view.id.clone(),
            status: view.status,
            at,
        });
    }
}
