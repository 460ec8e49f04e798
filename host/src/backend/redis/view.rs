//! Reading runs back (`GET /v1/runs/{id}`), and the event stream of every run.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use indexmap::IndexMap;
use serde::Deserialize;
use tokio::sync::broadcast;

use super::{RedisBackend, corrupt, keys, parse_json, unavailable};
use crate::backend::BackendError;
use crate::engine::{Failure, LogLine};
use crate::scheduler::clock::{Millis, rfc3339};
use crate::scheduler::model::{
    CompensationView, FailedItem, ItemCounts, ItemView, ItemsPage, ItemsView, MAX_FAILED_SHOWN,
    RunError, RunEvent, RunSpec, RunStatus, RunView, StepOutput, StepRecord, StepStatus, StepView,
};

pub(super) fn status<T: for<'de> Deserialize<'de>>(s: &str) -> Result<T, BackendError> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|e| corrupt(format!("status {s:?}: {e}")))
}

fn millis(fields: &HashMap<String, String>, key: &str) -> Option<Millis> {
    fields.get(key).and_then(|v| v.parse().ok())
}

impl RedisBackend {
    pub(super) async fn view(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Option<RunView>, BackendError> {
        let (run, mut steps): (HashMap<String, String>, HashMap<String, String>) = redis::pipe()
            .cmd("HGETALL")
            .arg(keys::run(id))
            .cmd("HGETALL")
            .arg(keys::steps(id))
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        if run.get("tenant").map(String::as_str) != Some(tenant) {
            return Ok(None);
        }
        let cached = self.specs.lock().unwrap().get(id).cloned();
        let spec = match cached {
            Some(spec) => spec,
            None => {
                let stored = run.get("spec").ok_or_else(|| corrupt("run without spec"))?;
                let spec = Arc::new(super::parse_spec(stored)?);
                self.specs.lock().unwrap().put(id.to_string(), spec.clone());
                spec
            }
        };
        let items = self.items_views(id, &spec, &steps).await?;
        // A run holding large outputs is parsed off the async executor.
        let size = steps.values().map(String::len).sum::<usize>()
            + run.get("output").map_or(0, String::len);
        crate::budget::offload_if_large(size, move || build_view(&spec, &run, &mut steps, items))
            .await
            .map(Some)
    }

    /// The item summaries of the run's for_each steps, from the counters
    /// the scripts keep, with the errors of the first failed items.
    async fn items_views(
        &self,
        id: &str,
        spec: &RunSpec,
        steps: &HashMap<String, String>,
    ) -> Result<HashMap<usize, ItemsView>, BackendError> {
        let mut views = HashMap::new();
        let mut wanted: Vec<(usize, u32)> = Vec::new();
        for (i, step) in spec.workflow.steps.iter().enumerate() {
            if step.for_each.is_none() {
                continue;
            }
            let get = |f: &str| -> u32 {
                steps
                    .get(&format!("{f}{i}"))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            };
            let (total, started) = (get("n"), get("p"));
            let (succeeded, failed, running, cancelled) =
                (get("ns"), get("nf"), get("nr"), get("nc"));
            let counts = ItemCounts {
                pending: total.saturating_sub(started),
                queued: started.saturating_sub(succeeded + failed + running + cancelled),
                running,
                succeeded,
                failed,
                cancelled,
            };
            let listed = steps.get(&format!("fi{i}")).map_or("", String::as_str);
            wanted.extend(
                listed
                    .split(',')
                    .filter_map(|k| k.parse::<u32>().ok())
                    .take(MAX_FAILED_SHOWN)
                    .map(|k| (i, k)),
            );
            views.insert(
                i,
                ItemsView {
                    total,
                    counts,
                    failed: Vec::new(),
                },
            );
        }
        if wanted.is_empty() {
            return Ok(views);
        }
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(keys::items(id));
        for (i, k) in &wanted {
            cmd.arg(format!("e{i}.{k}"));
        }
        let errors: Vec<Option<String>> = cmd
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        for ((i, k), error) in wanted.into_iter().zip(errors) {
            let Some(error) = error else { continue };
            let error =
                serde_json::from_str(&error).map_err(|e| corrupt(format!("item error: {e}")))?;
            if let Some(view) = views.get_mut(&i) {
                view.failed.push(FailedItem { index: k, error });
            }
        }
        Ok(views)
    }

    pub(super) async fn items_page(
        &self,
        tenant: &str,
        id: &str,
        step: &str,
        cursor: u32,
        limit: u32,
    ) -> Result<Option<ItemsPage>, BackendError> {
        let owner: Option<String> = redis::cmd("HGET")
            .arg(keys::run(id))
            .arg("tenant")
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        if owner.as_deref() != Some(tenant) {
            return Ok(None);
        }
        let Some(spec) = self.spec(id).await? else {
            return Ok(None);
        };
        let Some(i) = spec.workflow.step_index(step) else {
            return Ok(None);
        };
        let (total, started): (Option<u32>, Option<u32>) = redis::cmd("HMGET")
            .arg(keys::steps(id))
            .arg(format!("n{i}"))
            .arg(format!("p{i}"))
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let (total, started) = (total.unwrap_or(0), started.unwrap_or(0));
        let end = cursor.saturating_add(limit).min(total);
        let fields = ["s", "a", "o", "e", "t", "f"];
        let mut page = Vec::new();
        let read_to = end.min(started);
        if cursor < read_to {
            let mut cmd = redis::cmd("HMGET");
            cmd.arg(keys::items(id));
            for k in cursor..read_to {
                for f in fields {
                    cmd.arg(format!("{f}{i}.{k}"));
                }
            }
            let values: Vec<Option<String>> = cmd
                .query_async(&mut self.conn())
                .await
                .map_err(unavailable)?;
            for (k, v) in (cursor..read_to).zip(values.chunks(fields.len())) {
                let rec = StepRecord {
                    status: Some(status(v[0].as_deref().unwrap_or("pending"))?),
                    attempts: v[1].as_deref().and_then(|a| a.parse().ok()).unwrap_or(0),
                    output: None,
                    error: v[3]
                        .as_deref()
                        .map(|e| {
                            serde_json::from_str(e).map_err(|e| corrupt(format!("item error: {e}")))
                        })
                        .transpose()?,
                    started_at: v[4].as_deref().and_then(|t| t.parse().ok()),
                    finished_at: v[5].as_deref().and_then(|t| t.parse().ok()),
                    ..StepRecord::default()
                };
                let mut view = ItemView::new(k, &rec);
                view.record.output = v[2].clone().map(|o| StepOutput::Text(Arc::new(o)));
                page.push(view);
            }
        }
        let pending = StepRecord {
            status: Some(StepStatus::Pending),
            ..StepRecord::default()
        };
        page.extend((read_to.max(cursor)..end).map(|k| ItemView::new(k, &pending)));
        Ok(Some(ItemsPage {
            items: page,
            next_cursor: (end < total).then(|| end.to_string()),
        }))
    }
}

/// A run as clients see it, from its run and steps hashes.
fn build_view(
    spec: &RunSpec,
    run: &HashMap<String, String>,
    steps: &mut HashMap<String, String>,
    mut items: HashMap<usize, ItemsView>,
) -> Result<RunView, BackendError> {
    let mut views = IndexMap::with_capacity(spec.workflow.steps.len());
    for (i, step) in spec.workflow.steps.iter().enumerate() {
        let field = |name: &str| steps.get(&format!("{name}{i}"));
        let record = StepRecord {
            status: field("s").map(|s| status::<StepStatus>(s)).transpose()?,
            attempts: field("a").and_then(|a| a.parse().ok()).unwrap_or(0),
            // Taken as text below, not parsed.
            output: None,
            error: field("e")
                .filter(|e| !e.is_empty())
                .map(|e| {
                    serde_json::from_str::<Failure>(e)
                        .map_err(|e| corrupt(format!("step error: {e}")))
                })
                .transpose()?,
            logs: field("g")
                .map(|g| {
                    serde_json::from_str::<Vec<LogLine>>(g)
                        .map_err(|e| corrupt(format!("step logs: {e}")))
                })
                .transpose()?
                .unwrap_or_default(),
            started_at: millis(steps, &format!("t{i}")),
            finished_at: millis(steps, &format!("f{i}")),
            reason: field("rs").cloned(),
        };
        let mut view = StepView::new(spec, i, &record);
        view.items = items.remove(&i);
        if let Some(s) = steps.get(&format!("sc{i}")) {
            let slot = |name: &str| steps.get(&format!("{name}c{i}"));
            let rec = StepRecord {
                status: Some(status(s)?),
                attempts: slot("a").and_then(|a| a.parse().ok()).unwrap_or(0),
                output: slot("o")
                    .map(|o| parse_json(o, "compensation output").map(Arc::new))
                    .transpose()?,
                error: slot("e")
                    .map(|e| {
                        serde_json::from_str(e)
                            .map_err(|e| corrupt(format!("compensation error: {e}")))
                    })
                    .transpose()?,
                started_at: slot("t").and_then(|t| t.parse().ok()),
                finished_at: slot("f").and_then(|t| t.parse().ok()),
                ..StepRecord::default()
            };
            view.compensation = Some(CompensationView::new(&rec));
        }
        // Written by the commit from a serialised value: not checked again.
        view.output = steps
            .remove(&format!("o{i}"))
            .map(|o| StepOutput::Text(Arc::new(o)));
        views.insert(step.id.clone(), view);
    }
    let run_status: RunStatus = status(run.get("status").map_or("queued", String::as_str))?;
    Ok(RunView {
        id: spec.id.clone(),
        tenant: spec.tenant.clone(),
        workflow: spec.workflow_name().to_string(),
        workflow_version: spec.template.as_ref().map(|t| t.version.clone()),
        parent: spec.parent.clone(),
        status: run_status,
        input: spec.input.clone(),
        output: match run.get("output") {
            Some(o) => parse_json(o, "run output")?,
            None => serde_json::Value::Null,
        },
        error: run
            .get("error")
            .map(|e| {
                serde_json::from_str::<RunError>(e).map_err(|e| corrupt(format!("run error: {e}")))
            })
            .transpose()?,
        created_at: rfc3339(spec.created_at),
        start_at: spec.start_at.map(rfc3339),
        schedule: spec.schedule.as_ref().map(|s| s.name.clone()),
        scheduled_for: spec.schedule.as_ref().map(|s| rfc3339(s.tick)),
        priority: spec.priority,
        trace_id: spec.trace.map(|t| t.trace_id_hex()),
        trace: spec.trace,
        started_at: millis(run, "started_at").map(rfc3339),
        finished_at: millis(run, "finished_at").map(rfc3339),
        steps: views,
    })
}

impl RedisBackend {
    /// Starts forwarding the events of every run to this node's subscribers
    /// (once; reconnects by itself).
    pub(super) fn listen(&self) {
        if self.listening.swap(true, Ordering::SeqCst) {
            return;
        }
        let events = self.events.clone();
        subscribe_forever(
            self.client.clone(),
            Channel::Pattern(keys::EVENTS_PATTERN),
            move |payload| match decode_event(&payload) {
                Some(event) => {
                    let _ = events.send(event);
                }
                None => tracing::warn!(%payload, "unreadable run event"),
            },
        );
    }

    /// Subscribes (once per backend) to the runs that ended while steps of
    /// theirs ran somewhere, published by the scripts on `weft:cancel`.
    pub(super) fn watch_ended(&self) -> broadcast::Receiver<String> {
        let receiver = self.ended.subscribe();
        if !self.watching_ended.swap(true, Ordering::SeqCst) {
            let ended = self.ended.clone();
            subscribe_forever(
                self.client.clone(),
                Channel::Name(keys::CANCEL),
                move |run| {
                    let _ = ended.send(run);
                },
            );
        }
        receiver
    }
}

/// What to subscribe to.
pub(super) enum Channel {
    Name(&'static str),
    Pattern(&'static str),
}

/// Hands every message on `channel` to `handle`, reconnecting whenever the
/// subscription breaks, for as long as the process runs.
pub(super) fn subscribe_forever(
    client: redis::Client,
    channel: Channel,
    mut handle: impl FnMut(String) + Send + 'static,
) {
    tokio::spawn(async move {
        loop {
            match client.get_async_pubsub().await {
                Ok(mut pubsub) => {
                    let subscribed = match channel {
                        Channel::Name(name) => pubsub.subscribe(name).await,
                        Channel::Pattern(pattern) => pubsub.psubscribe(pattern).await,
                    };
                    if subscribed.is_ok() {
                        let mut messages = pubsub.on_message();
                        while let Some(msg) = messages.next().await {
                            if let Ok(payload) = msg.get_payload::<String>() {
                                handle(payload);
                            }
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "subscription failed; retrying"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

/// An event as the Lua scripts publish it.
#[derive(Deserialize)]
struct Published {
    #[serde(rename = "type")]
    kind: String,
    run: String,
    #[serde(default)]
    step: Option<String>,
    #[serde(default)]
    status: String,
    #[serde(default)]
    attempt: u32,
    #[serde(default)]
    total: u32,
    #[serde(default)]
    succeeded: u32,
    #[serde(default)]
    failed: u32,
    #[serde(default)]
    error: Option<Failure>,
    at: Millis,
}

fn decode_event(payload: &str) -> Option<RunEvent> {
    let p: Published = serde_json::from_str(payload).ok()?;
    Some(match p.kind.as_str() {
        "run" => RunEvent::Run {
            run: p.run,
            status: status(&p.status).ok()?,
            at: rfc3339(p.at),
        },
        "items" => RunEvent::Items {
            run: p.run,
            step: p.step?,
            total: p.total,
            succeeded: p.succeeded,
            failed: p.failed,
            at: rfc3339(p.at),
        },
        "compensation" => RunEvent::Compensation {
            run: p.run,
            step: p.step?,
            status: status(&p.status).ok()?,
            attempt: p.attempt,
            error: p.error,
            at: rfc3339(p.at),
        },
        _ => RunEvent::Step {
            run: p.run,
            step: p.step?,
            status: status(&p.status).ok()?,
            attempt: p.attempt,
            error: p.error,
            at: rfc3339(p.at),
        },
    })
}
