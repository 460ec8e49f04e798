//! Claims, commits and finishes as they travel in batches (see `batch.rs`): the
//! arguments of one script call serving many steps.

use redis::Value;
use redis::aio::ConnectionManager;

use super::{batch, keys, unavailable};
use crate::scheduler::clock::Millis;

/// One claim of a batch.
pub(super) struct ClaimRequest {
    pub(super) run: String,
    pub(super) kind: &'static str,
    pub(super) index: usize,
    pub(super) item: u32,
    pub(super) attempt: u32,
    pub(super) max_deliveries: u32,
    pub(super) now: Millis,
    pub(super) reads: Vec<usize>,
    pub(super) facts: Vec<usize>,
}

/// One commit of a batch.
pub(super) struct CommitRequest {
    pub(super) run: String,
    pub(super) tenant: String,
    /// `s` a step, `e` an item, `c` a compensation.
    pub(super) target: &'static str,
    pub(super) index: usize,
    pub(super) item: u32,
    pub(super) lease: u64,
    pub(super) kind: &'static str,
    pub(super) payload: String,
    pub(super) logs: String,
    pub(super) now: Millis,
    pub(super) due: Millis,
    /// What the outcome adds to the run's stored bytes.
    pub(super) bytes: u64,
    pub(super) run_bytes: u64,
    pub(super) run_error: String,
    pub(super) entry: String,
    /// A skip's error, a failed item's step error, a too long list's error.
    pub(super) second: String,
    /// A list's items, as JSON.
    pub(super) extras: Vec<String>,
}

/// One finish of a batch.
pub(super) struct FinishRequest {
    pub(super) run: String,
    pub(super) tenant: String,
    /// `ok` (`payload` is the output) or `err` (`payload` is the run error).
    pub(super) kind: &'static str,
    pub(super) payload: String,
    pub(super) now: Millis,
    pub(super) entry: String,
}

/// Most requests in one script call.
const BATCH: usize = 256;

pub(super) fn claim_batcher(
    conn: ConnectionManager,
    script: redis::Script,
) -> batch::Batcher<ClaimRequest, Vec<Value>> {
    batch::Batcher::new(BATCH, move |requests: Vec<ClaimRequest>| {
        let mut conn = conn.clone();
        let script = script.clone();
        async move {
            let now = requests.iter().map(|r| r.now).max().unwrap_or(0);
            let mut invocation = script.prepare_invoke();
            invocation.arg(now).arg(requests.len());
            for r in &requests {
                invocation
                    .key(keys::run(&r.run))
                    .key(keys::steps(&r.run))
                    .key(keys::items(&r.run))
                    .arg(r.kind)
                    .arg(r.index)
                    .arg(r.attempt)
                    .arg(r.max_deliveries)
                    .arg(r.item)
                    .arg(r.reads.len());
                for d in &r.reads {
                    invocation.arg(*d);
                }
                invocation.arg(r.facts.len());
                for d in &r.facts {
                    invocation.arg(*d);
                }
            }
            invocation
                .invoke_async::<Vec<Vec<Value>>>(&mut conn)
                .await
                .map_err(unavailable)
        }
    })
}

pub(super) fn commit_batcher(
    conn: ConnectionManager,
    script: redis::Script,
) -> batch::Batcher<CommitRequest, Vec<Value>> {
    batch::Batcher::new(BATCH, move |requests: Vec<CommitRequest>| {
        let mut conn = conn.clone();
        let script = script.clone();
        async move {
            let mut invocation = script.prepare_invoke();
            invocation
                .key(keys::READY)
                .key(keys::DELAYED)
                .arg(keys::GROUP)
                .arg(requests.len());
            for r in &requests {
                invocation
                    .key(keys::run(&r.run))
                    .key(keys::steps(&r.run))
                    .key(keys::active(&r.tenant))
                    .key(keys::items(&r.run))
                    .arg(r.target)
                    .arg(r.index)
                    .arg(r.item)
                    .arg(r.lease)
                    .arg(r.kind)
                    .arg(&r.payload)
                    .arg(&r.logs)
                    .arg(r.now)
                    .arg(r.due)
                    .arg(r.bytes)
                    .arg(r.run_bytes)
                    .arg(&r.run_error)
                    .arg(&r.entry)
                    .arg(&r.second)
                    .arg(r.extras.len());
                for e in &r.extras {
                    invocation.arg(e);
                }
            }
            invocation
                .invoke_async::<Vec<Vec<Value>>>(&mut conn)
                .await
                .map_err(unavailable)
        }
    })
}

pub(super) fn finish_batcher(
    conn: ConnectionManager,
    script: redis::Script,
) -> batch::Batcher<FinishRequest, i64> {
    batch::Batcher::new(BATCH, move |requests: Vec<FinishRequest>| {
        let mut conn = conn.clone();
        let script = script.clone();
        async move {
            let mut invocation = script.prepare_invoke();
            invocation
                .key(keys::READY)
                .arg(keys::GROUP)
                .arg(requests.len());
            for r in &requests {
                invocation
                    .key(keys::run(&r.run))
                    .key(keys::steps(&r.run))
                    .key(keys::active(&r.tenant))
                    .key(keys::items(&r.run))
                    .arg(r.kind)
                    .arg(&r.payload)
                    .arg(r.now)
                    .arg(&r.entry);
            }
            invocation
                .invoke_async::<Vec<i64>>(&mut conn)
                .await
                .map_err(unavailable)
        }
    })
}
