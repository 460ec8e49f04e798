//! The work queue on a Redis stream: reading batches with the consumer group,
//! acknowledging, and the upkeep each node does in the background (moving due
//! retries, renewing the work it holds, reclaiming work of nodes that stopped,
//! its heartbeat).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::streams::{StreamAutoClaimReply, StreamId, StreamRangeReply};
use tokio_util::sync::CancellationToken;

use super::{RedisBackend, keys, unavailable};
use crate::backend::{BackendError, ClusterView, Delivery, NodeInfo, QueueStats, WorkQueue};
use crate::scheduler::flow;
use crate::scheduler::model::{Task, TaskKind};

/// A node not heard of for this long is not listed as alive.
pub const HEARTBEAT_TTL: Duration = Duration::from_secs(10);

/// How long a node with nothing to do waits before looking again, when no
/// wake-up came (one may be lost with a broken subscription, and work of a
/// tenant at its `concurrent_steps` frees without one).
const IDLE: Duration = Duration::from_millis(250);

/// A delivery as the stream holds it: the entry's id and the tenant whose
/// attempt it carries (for its running count).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    pub id: String,
    pub tenant: Option<String>,
    /// The concurrency key the attempt holds.
    pub key: Option<String>,
}

impl Entry {
    fn of(entry: &StreamId) -> Self {
        Self {
            id: entry.id.clone(),
            tenant: entry.get("t"),
            key: entry.get("ck"),
        }
    }

    /// The entry as the scripts take it: `id`, or `id`, tenant and key
    /// separated by `\x1f` (which no tenant name or key holds).
    pub fn arg(&self) -> String {
        match &self.tenant {
            Some(t) => format!(
                "{}\x1f{t}\x1f{}",
                self.id,
                self.key.as_deref().unwrap_or_default()
            ),
            None => self.id.clone(),
        }
    }
}

/// The task an entry of the ready stream carries.
fn task_of(entry: &StreamId) -> Option<Task> {
    let run: String = entry.get("r")?;
    let kind: String = entry.get("k")?;
    let kind = match kind.as_str() {
        "f" => TaskKind::Finalize,
        "e" => TaskKind::Item {
            index: entry.get("i")?,
            item: entry.get("n")?,
            attempt: entry.get("a")?,
        },
        "c" => TaskKind::Compensate {
            index: entry.get("i")?,
            attempt: entry.get("a")?,
        },
        _ => TaskKind::Step {
            index: entry.get("i")?,
            attempt: entry.get("a")?,
        },
    };
    Some(Task {
        run: Arc::from(run),
        kind,
    })
}

impl RedisBackend {
    /// Creates the consumer group (and the stream) unless they exist.
    pub(super) async fn ensure_group(&self) -> Result<(), BackendError> {
        let created: Result<String, _> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(keys::READY)
            .arg(keys::GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut self.conn())
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }

    fn deliver(&self, entries: Vec<StreamId>, out: &mut Vec<Delivery>, bad: &mut Vec<String>) {
        let mut held = self.entries.lock().unwrap();
        for entry in entries {
            match task_of(&entry) {
                Some(task) => {
                    let tag = self.next_tag.fetch_add(1, Ordering::Relaxed);
                    held.insert(tag, Entry::of(&entry));
                    out.push(Delivery { task, tag });
                }
                None => {
                    tracing::error!(id = %entry.id, "dropping an unreadable queue entry");
                    bad.push(Entry::of(&entry).arg());
                }
            }
        }
    }

    async fn ack_ids(&self, ids: &[String]) -> Result<(), BackendError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut invocation = self.scripts.ack.prepare_invoke();
        invocation
            .key(keys::READY)
            .arg(keys::GROUP)
            .arg(&self.config.node);
        for id in ids {
            invocation.arg(id);
        }
        let _: i64 = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Starts the node's upkeep until `shutdown`.
    pub fn start_upkeep(self: &Arc<Self>, shutdown: CancellationToken) {
        let this = self.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            loop {
                let wait = match this.promote().await {
                    Ok(wait) => wait,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot move due retries");
                        Duration::from_millis(500)
                    }
                };
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.cancelled() => return,
                }
            }
        });
        let this = self.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let every = (this.config.visibility / 4).max(Duration::from_millis(100));
            loop {
                if let Err(e) = this.renew().await {
                    tracing::warn!(error = %e, "cannot renew held work");
                }
                if let Err(e) = this.reclaim().await {
                    tracing::warn!(error = %e, "cannot reclaim work of stopped nodes");
                }
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop.cancelled() => return,
                }
            }
        });
    }

    /// Moves due retries to their tenants' ready work; returns how long to
    /// wait until the next.
    async fn promote(&self) -> Result<Duration, BackendError> {
        let now = self.clock.now();
        let (_, next): (i64, i64) = self
            .scripts
            .promote
            .key(keys::DELAYED)
            .arg(now)
            .arg(1000)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let most = Duration::from_millis(100);
        Ok(if next < 0 {
            most
        } else {
            Duration::from_millis((next as u64).saturating_sub(now))
                .clamp(Duration::from_millis(2), most)
        })
    }

    /// The ids of the entries this node holds.
    fn held_ids(&self) -> impl Iterator<Item = String> {
        let ids: Vec<String> = self
            .entries
            .lock()
            .unwrap()
            .values()
            .map(|e| e.id.clone())
            .collect();
        ids.into_iter()
    }

    /// Resets the idle time of the entries this node holds, so that they are
    /// not handed to another node while their steps run.
    async fn renew(&self) -> Result<(), BackendError> {
        let ids: Vec<String> = self.held_ids().collect();
        for chunk in ids.chunks(500) {
            let _: redis::Value = redis::cmd("XCLAIM")
                .arg(keys::READY)
                .arg(keys::GROUP)
                .arg(&self.config.node)
                .arg(0)
                .arg(chunk)
                .arg("JUSTID")
                .query_async(&mut self.conn())
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    /// Takes over entries that another node held past the visibility timeout.
    async fn reclaim(&self) -> Result<(), BackendError> {
        let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(keys::READY)
            .arg(keys::GROUP)
            .arg(&self.config.node)
            .arg(self.config.visibility.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(200)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        if reply.claimed.is_empty() {
            return Ok(());
        }
        tracing::info!(
            entries = reply.claimed.len(),
            "reclaimed work of a stopped node"
        );
        let held: std::collections::HashSet<String> = self.held_ids().collect();
        let mut reclaimed = self.reclaimed.lock().unwrap();
        for entry in reply.claimed {
            if held.contains(&entry.id) {
                continue;
            }
            if let Some(task) = task_of(&entry) {
                reclaimed.push_back((Entry::of(&entry), task));
            }
        }
        drop(reclaimed);
        self.wake.notify_one();
        Ok(())
    }

    /// Records this node as alive for [`HEARTBEAT_TTL`].
    pub(super) async fn heartbeat_now(&self, node: &NodeInfo) -> Result<(), BackendError> {
        let now = self.clock.now();
        let _: () = redis::pipe()
            .cmd("SET")
            .arg(keys::node(&node.node))
            .arg(serde_json::to_string(node).expect("JSON"))
            .arg("PX")
            .arg(HEARTBEAT_TTL.as_millis() as u64)
            .ignore()
            .cmd("ZADD")
            .arg(keys::NODES)
            .arg(now)
            .arg(&node.node)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(keys::NODES)
            .arg("-inf")
            .arg(now.saturating_sub(10 * HEARTBEAT_TTL.as_millis() as u64))
            .ignore()
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// The nodes heard of within [`HEARTBEAT_TTL`], and the queue's figures.
    pub(super) async fn cluster_now(&self) -> Result<ClusterView, BackendError> {
        let since = self
            .clock
            .now()
            .saturating_sub(HEARTBEAT_TTL.as_millis() as u64);
        let names: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(keys::NODES)
            .arg(since)
            .arg("+inf")
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let mut nodes = Vec::new();
        if !names.is_empty() {
            let beats: Vec<Option<String>> = redis::cmd("MGET")
                .arg(names.iter().map(|n| keys::node(n)).collect::<Vec<_>>())
                .query_async(&mut self.conn())
                .await
                .map_err(unavailable)?;
            nodes.extend(
                beats
                    .into_iter()
                    .flatten()
                    .filter_map(|b| serde_json::from_str::<NodeInfo>(&b).ok()),
            );
        }
        let (pending, delayed): (redis::Value, u64) = redis::pipe()
            .cmd("XPENDING")
            .arg(keys::READY)
            .arg(keys::GROUP)
            .cmd("ZCARD")
            .arg(keys::DELAYED)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(ClusterView {
            backend: "redis".into(),
            nodes,
            queues: self.queues_now().await?,
            pending: pending_count(&pending),
            delayed,
        })
    }

    /// Declares a queue; true when it is new.
    pub(super) async fn declare_queue_now(&self, name: &str) -> Result<bool, BackendError> {
        if name == flow::DEFAULT_QUEUE {
            return Ok(false);
        }
        let added: i64 = redis::cmd("SADD")
            .arg(keys::QUEUES)
            .arg(name)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(added == 1)
    }

    /// The declared queues, `default` first, with their ready work.
    pub(super) async fn queues_now(&self) -> Result<Vec<QueueStats>, BackendError> {
        let mut declared: Vec<String> = redis::cmd("SMEMBERS")
            .arg(keys::QUEUES)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        declared.sort();
        declared.insert(0, flow::DEFAULT_QUEUE.to_string());
        let now = self.clock.now();
        let mut out = Vec::with_capacity(declared.len());
        for name in declared {
            let (depth, oldest): (u64, i64) = self
                .scripts
                .queue_stats
                .arg(&name)
                .invoke_async(&mut self.conn())
                .await
                .map_err(unavailable)?;
            let age = if oldest < 0 {
                0.0
            } else {
                now.saturating_sub(oldest as u64) as f64 / 1000.0
            };
            out.push(QueueStats {
                name,
                depth,
                oldest_age_seconds: age,
            });
        }
        Ok(out)
    }
}

/// The count of an `XPENDING key group` summary.
fn pending_count(reply: &redis::Value) -> u64 {
    match reply {
        redis::Value::Array(items) => items.first().and_then(super::int).unwrap_or(0) as u64,
        _ => 0,
    }
}

impl RedisBackend {
    async fn next_now(&self, max: usize) -> Result<Vec<Delivery>, BackendError> {
        let max = max.max(1);
        loop {
            let mut out = Vec::new();
            {
                let mut reclaimed = self.reclaimed.lock().unwrap();
                let mut held = self.entries.lock().unwrap();
                while out.len() < max {
                    let Some((id, task)) = reclaimed.pop_front() else {
                        break;
                    };
                    let tag = self.next_tag.fetch_add(1, Ordering::Relaxed);
                    held.insert(tag, id);
                    out.push(Delivery { task, tag });
                }
            }
            if !out.is_empty() {
                return Ok(out);
            }
            // Armed before looking, so that a wake-up while looking is kept.
            let woken = self.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let taken = {
                let mut reader = self.reader.lock().await;
                let mut invocation = self.scripts.take.prepare_invoke();
                invocation
                    .key(keys::READY)
                    .arg(keys::GROUP)
                    .arg(&self.config.node)
                    .arg(max);
                for queue in self.queues.lock().unwrap().iter() {
                    invocation.arg(queue);
                }
                invocation
                    .invoke_async::<(i64, StreamRangeReply)>(&mut *reader)
                    .await
            };
            let (capped, entries) = match taken {
                Ok(reply) => reply,
                Err(e) if e.code() == Some("NOGROUP") => {
                    // Redis lost the group (restarted without persistence): make it again.
                    self.ensure_group().await?;
                    continue;
                }
                Err(e) => return Err(unavailable(e)),
            };
            self.capped.store(capped == 1, Ordering::Relaxed);
            let mut bad = Vec::new();
            self.deliver(entries.ids, &mut out, &mut bad);
            if !bad.is_empty() {
                self.ack_ids(&bad).await?;
            }
            if !out.is_empty() {
                return Ok(out);
            }
            tokio::select! {
                _ = &mut woken => {}
                _ = tokio::time::sleep(IDLE) => {}
            }
        }
    }

    /// An attempt this node ran ended: when the last take passed over a
    /// tenant at its `concurrent_steps`, that tenant may run one more now.
    pub(super) fn attempt_ended(&self) {
        if self.capped.load(Ordering::Relaxed) {
            self.wake.notify_one();
        }
    }

    /// Wakes this node's reader whenever a queue gets work after it had none.
    pub(super) fn watch_wakes(&self) {
        let wake = self.wake.clone();
        super::view::subscribe_forever(
            self.client.clone(),
            super::view::Channel::Name(keys::WAKE),
            move |_| wake.notify_one(),
        );
    }
}

#[async_trait::async_trait]
impl WorkQueue for RedisBackend {
    async fn next(&self, max: usize) -> Result<Vec<Delivery>, BackendError> {
        self.next_now(max).await
    }

    async fn ack(&self, deliveries: &[Delivery]) -> Result<(), BackendError> {
        let ids: Vec<String> = {
            let held = self.entries.lock().unwrap();
            deliveries
                .iter()
                .filter_map(|d| held.get(&d.tag).map(Entry::arg))
                .collect()
        };
        self.ack_ids(&ids).await?;
        let mut held = self.entries.lock().unwrap();
        for d in deliveries {
            held.remove(&d.tag);
        }
        drop(held);
        self.attempt_ended();
        Ok(())
    }

    async fn release(&self) -> Result<u64, BackendError> {
        let released: u64 = self
            .scripts
            .release
            .key(keys::READY)
            .arg(keys::GROUP)
            .arg(&self.config.node)
            .arg(self.clock.now())
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        self.entries.lock().unwrap().clear();
        Ok(released)
    }

    fn serve_queues(&self, queues: &[String]) {
        *self.queues.lock().unwrap() = queues.to_vec();
        self.wake.notify_one();
    }

    async fn depth(&self) -> Result<u64, BackendError> {
        Ok(self.queues_now().await?.iter().map(|q| q.depth).sum())
    }
}
