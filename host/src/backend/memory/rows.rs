//! The embedded backend's runs as clients read them (views, item pages), as
//! the file store writes them (rows) and as a restart reads them back.

use std::sync::Arc;

use indexmap::IndexMap;

use super::runs::{Items, RunState, Slot, StepState};
use super::store::{Batch, Loaded, RowKey, RunRow, StepRow};
use super::{Inner, MemoryBackend, journal};
use crate::scheduler::clock::{Millis, rfc3339};
use crate::scheduler::model::{
    CompensationView, FailedItem, ItemCounts, ItemView, ItemsPage, ItemsView, MAX_FAILED_SHOWN,
    RunStatus, RunView, StepRecord, StepStatus, StepView, Task, TaskKind,
};
use crate::scheduler::rules;

impl MemoryBackend {
    /// Forgets finished runs past their retention, and each tenant's oldest
    /// ones past the count this backend keeps per tenant.
    pub(super) fn expire(&self, inner: &mut Inner, now: Millis) {
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
            if let Some(run) = inner.runs.remove(&id) {
                inner.unlist(&run.spec.tenant, &id);
                if let Some(key) = run.idempotency_key {
                    inner.idempotency.remove(&(run.spec.tenant.clone(), key));
                }
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
                let mut view = StepView::new(spec, i, &s.slot.rec);
                if spec.workflow.steps[i].for_each.is_some() {
                    view.items = Some(items_view(s.items.as_deref()));
                }
                view.compensation = s
                    .compensation
                    .as_ref()
                    .map(|c| CompensationView::new(&c.rec));
                (spec.workflow.steps[i].id.clone(), view)
            })
            .collect();
        Some(RunView {
            id: spec.id.clone(),
            tenant: spec.tenant.clone(),
            workflow: spec.workflow_name().to_string(),
            workflow_version: spec.template.as_ref().map(|t| t.version.clone()),
            parent: spec.parent.clone(),
            status: run.status,
            input: spec.input.clone(),
            output: run.output.clone(),
            error: run.error.clone(),
            created_at: rfc3339(spec.created_at),
            start_at: spec.start_at.map(rfc3339),
            schedule: spec.schedule.as_ref().map(|s| s.name.clone()),
            scheduled_for: spec.schedule.as_ref().map(|s| rfc3339(s.tick)),
            priority: spec.priority,
            trace_id: spec.trace.map(|t| t.trace_id_hex()),
            trace: spec.trace,
            started_at: run.started_at.map(rfc3339),
            finished_at: run.finished_at.map(rfc3339),
            steps,
        })
    }

    pub(super) fn items_page(
        &self,
        tenant: &str,
        run_id: &str,
        step: &str,
        cursor: u32,
        limit: u32,
    ) -> Option<ItemsPage> {
        let inner = self.lock();
        let run = inner.runs.get(run_id).filter(|r| r.spec.tenant == tenant)?;
        let index = run.spec.workflow.step_index(step)?;
        let Some(items) = &run.steps[index].items else {
            return Some(ItemsPage {
                items: Vec::new(),
                next_cursor: None,
            });
        };
        let end = cursor.saturating_add(limit).min(items.total());
        let pending = StepRecord {
            status: Some(StepStatus::Pending),
            ..StepRecord::default()
        };
        let page = (cursor..end)
            .map(|k| {
                let rec = items.slots.get(k as usize).map_or(&pending, |s| &s.rec);
                ItemView::new(k, rec)
            })
            .collect();
        Some(ItemsPage {
            items: page,
            next_cursor: (end < items.total()).then(|| end.to_string()),
        })
    }
}

/// The run JSON's summary of a for_each step's items (none yet before its
/// list is read).
fn items_view(items: Option<&Items>) -> ItemsView {
    let Some(items) = items else {
        return ItemsView::default();
    };
    let mut counts = ItemCounts {
        pending: items.total() - items.slots.len() as u32,
        ..ItemCounts::default()
    };
    let mut failed = Vec::new();
    for (k, slot) in items.slots.iter().enumerate() {
        counts.add(slot.status());
        if slot.status() == StepStatus::Failed
            && failed.len() < MAX_FAILED_SHOWN
            && let Some(error) = &slot.rec.error
        {
            failed.push(FailedItem {
                index: k as u32,
                error: error.clone(),
            });
        }
    }
    ItemsView {
        total: items.total(),
        counts,
        failed,
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
            // A new run's steps start in the state its spec implies, which
            // restoring it rebuilds: only rows changed since are written.
            touched.rows.sort_unstable();
            touched.rows.dedup();
            batch
                .steps
                .extend(touched.rows.iter().filter_map(|&key| row(&id, run, key)));
        }
        Some((generation, batch, held))
    }
}

/// The row `key` of a run, as the store keeps it.
fn row(id: &Arc<str>, run: &RunState, key: RowKey) -> Option<StepRow> {
    let of = |slot: &Slot, seq: u64| StepRow {
        run: id.clone(),
        key,
        rec: slot.rec.clone(),
        lease: slot.lease,
        deliveries: slot.deliveries,
        retry_due: slot.retry_due,
        seq,
    };
    match key {
        RowKey::Step(i) => {
            let s = run.steps.get(i as usize)?;
            Some(of(&s.slot, s.seq))
        }
        RowKey::Item(i, k) => {
            let items = run.steps.get(i as usize)?.items.as_ref()?;
            Some(of(items.slots.get(k as usize)?, 0))
        }
        RowKey::Compensation(i) => Some(of(run.steps.get(i as usize)?.compensation.as_ref()?, 0)),
        RowKey::List(i) => {
            let items = run.steps.get(i as usize)?.items.as_ref()?;
            let list: Vec<serde_json::Value> = items.values.iter().map(|v| (**v).clone()).collect();
            let slot = Slot {
                rec: StepRecord {
                    status: Some(StepStatus::Succeeded),
                    output: Some(Arc::new(serde_json::Value::Array(list))),
                    ..StepRecord::default()
                },
                ..Slot::default()
            };
            Some(of(&slot, 0))
        }
        RowKey::Signals => {
            let kept: serde_json::Map<String, serde_json::Value> = run
                .signals
                .iter()
                .filter(|(_, queue)| !queue.is_empty())
                .map(|(name, queue)| {
                    let payloads = queue.iter().map(|p| (**p).clone()).collect();
                    (name.clone(), serde_json::Value::Array(payloads))
                })
                .collect();
            let slot = Slot {
                rec: StepRecord {
                    output: Some(Arc::new(serde_json::Value::Object(kept))),
                    ..StepRecord::default()
                },
                ..Slot::default()
            };
            Some(of(&slot, 0))
        }
    }
}

impl MemoryBackend {
    /// Rebuilds the runs read back from the file store: finished ones as
    /// they were, unfinished ones with their work queued again.
    pub(super) fn restore(&self, loaded: Loaded) {
        let now = self.clock.now();
        let mut inner = self.lock();
        let inner = &mut *inner;
        inner.registry = super::registry::Registry::from_records(
            loaded.tenants,
            loaded.versions,
            loaded.secrets,
            loaded.flow,
        );
        // What is read back is stored already: the work it implies is not held.
        let journal = inner.work.journal.take();
        let mut ended = Vec::new();
        for (row, rows) in loaded.runs {
            let Some(spec) = row.spec else { continue };
            // A step without a row is as the run's creation left it (its
            // count of dependencies left is made again below).
            let mut steps: Vec<StepState> =
                spec.workflow.steps.iter().map(StepState::new).collect();
            let mut leases = 0;
            let mut signals = super::runs::Signals::new();
            for r in rows {
                leases = leases.max(r.lease);
                let slot = Slot {
                    rec: r.rec,
                    lease: r.lease,
                    deliveries: r.deliveries,
                    retry_due: r.retry_due,
                };
                match r.key {
                    RowKey::Step(i) => {
                        if let Some(step) = steps.get_mut(i as usize) {
                            step.slot = slot;
                            step.seq = r.seq;
                        }
                    }
                    // Rows come sorted by key: a step's list before its items.
                    RowKey::List(i) => {
                        let values = match slot.rec.output.as_deref() {
                            Some(serde_json::Value::Array(list)) => {
                                list.iter().cloned().map(Arc::new).collect()
                            }
                            _ => Vec::new(),
                        };
                        if let Some(step) = steps.get_mut(i as usize) {
                            step.items = Some(Box::new(Items {
                                values,
                                slots: Vec::new(),
                                ended: 0,
                                last_event: 0,
                            }));
                        }
                    }
                    RowKey::Item(i, _) => {
                        if let Some(items) =
                            steps.get_mut(i as usize).and_then(|s| s.items.as_mut())
                        {
                            items.ended += u32::from(slot.status().is_terminal());
                            items.slots.push(slot);
                        }
                    }
                    RowKey::Compensation(i) => {
                        if let Some(step) = steps.get_mut(i as usize) {
                            step.compensation = Some(slot);
                        }
                    }
                    RowKey::Signals => {
                        if let Some(serde_json::Value::Object(kept)) = slot.rec.output.as_deref() {
                            signals = kept
                                .iter()
                                .map(|(name, payloads)| {
                                    let queue = payloads
                                        .as_array()
                                        .into_iter()
                                        .flatten()
                                        .map(|p| Arc::new(p.clone()))
                                        .collect();
                                    (name.clone(), queue)
                                })
                                .collect();
                        }
                    }
                }
            }
            let done: Vec<bool> = steps
                .iter()
                .map(|s| s.slot.status().is_terminal())
                .collect();
            for (step, def) in steps.iter_mut().zip(&spec.workflow.steps) {
                step.waiting_on = def.deps.iter().filter(|&&d| !done[d]).count() as u32;
            }
            let remaining = done.iter().filter(|d| !**d).count();
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
                if spec.parent.is_none() {
                    *inner.active.entry(tenant).or_default() += 1;
                }
                requeue(
                    &mut inner.work,
                    &spec,
                    &id,
                    row.status,
                    &steps,
                    remaining,
                    now,
                );
            }
            let items = steps
                .iter()
                .filter_map(|s| s.items.as_ref())
                .map(|i| rules::extra_items(i.total() as usize))
                .sum();
            inner.list(&spec.tenant, &id);
            inner.runs.insert(
                id,
                RunState {
                    idempotency_key: row.idempotency.map(|(key, _)| key),
                    status: row.status,
                    output: row.output.unwrap_or(serde_json::Value::Null),
                    error: row.error,
                    started_at: row.started_at,
                    finished_at: row.finished_at,
                    ended: steps.iter().map(|s| s.seq).max().unwrap_or(0),
                    steps,
                    remaining,
                    bytes: row.bytes,
                    leases,
                    items,
                    signals,
                    spec,
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

/// Queues again the work of an unfinished run read back from the store:
/// ready attempts at once, retries at their due time, attempts whose node
/// stopped again at once as the same attempt.
fn requeue(
    work: &mut journal::Work,
    spec: &crate::scheduler::model::RunSpec,
    id: &Arc<str>,
    status: RunStatus,
    steps: &[StepState],
    remaining: usize,
    now: Millis,
) {
    work.ready.place(id.clone(), super::ready::Place::of(spec));
    let mut again =
        |slot: &Slot, sub_workflow: bool, kind: &dyn Fn(u32) -> TaskKind| match slot.status() {
            // A run to start later: at its time.
            StepStatus::Queued if slot.rec.attempts == 0 && status == RunStatus::Scheduled => {
                work.delay(spec.start_at.unwrap_or(now), id.clone(), kind(1))
            }
            StepStatus::Queued if slot.rec.attempts == 0 => work.enqueue(Task {
                run: id.clone(),
                kind: kind(1),
            }),
            StepStatus::Queued => work.delay(
                slot.retry_due.unwrap_or(now),
                id.clone(),
                kind(slot.rec.attempts + 1),
            ),
            // Its wake-up, at its time; a signal step without a timeout waits
            // for its signal. A sub-workflow step is woken at once to look at
            // its child (which may have ended while the node was down).
            StepStatus::Waiting => {
                if let Some(due) = slot.retry_due {
                    work.delay(due, id.clone(), kind(slot.rec.attempts));
                } else if sub_workflow {
                    work.enqueue(Task {
                        run: id.clone(),
                        kind: kind(slot.rec.attempts),
                    });
                }
            }
            // Its process is gone: delivered again at once.
            StepStatus::Running => work.enqueue(Task {
                run: id.clone(),
                kind: kind(slot.rec.attempts),
            }),
            _ => {}
        };
    for (i, step) in steps.iter().enumerate() {
        let index = i as u32;
        if status == RunStatus::Compensating {
            if let Some(c) = &step.compensation {
                again(c, false, &|attempt| TaskKind::Compensate { index, attempt });
            }
            continue;
        }
        match &step.items {
            Some(items) if step.slot.status() == StepStatus::Running => {
                for (k, slot) in items.slots.iter().enumerate() {
                    let item = k as u32;
                    again(slot, false, &|attempt| TaskKind::Item {
                        index,
                        item,
                        attempt,
                    });
                }
            }
            _ => {
                let sub_workflow = spec.workflow.steps[i].sub_workflow().is_some();
                again(&step.slot, sub_workflow, &|attempt| TaskKind::Step {
                    index,
                    attempt,
                })
            }
        }
    }
    if status != RunStatus::Compensating && remaining == 0 {
        work.enqueue(Task {
            run: id.clone(),
            kind: TaskKind::Finalize,
        });
    }
}
