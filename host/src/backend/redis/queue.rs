//! The work queue on a Redis stream: reading batches with the consumer group,
//! acknowledging, and the upkeep each node does in the background (moving due
//! retries, renewing the work it holds, reclaiming work of nodes that stopped,
//! its heartbeat).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use tokio_util::sync::CancellationToken;

use super::{RedisBackend, keys, unavailable};
use crate::backend::{BackendError, ClusterView, Delivery, NodeInfo, QueueInfo, WorkQueue};
use crate::scheduler::model::{Task, TaskKind};

/// A node not heard of for this long is not listed as alive.
pub const HEARTBEAT_TTL: Duration = Duration::from_secs(10);

/// How long one blocking read waits before looking again.
const BLOCK: Duration = Duration::from_millis(500);

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
                    held.insert(tag, entry.id);
                    out.push(Delivery { task, tag });
                }
                None => {
                    tracing::error!(id = %entry.id, "dropping an unreadable queue entry");
                    bad.push(entry.id);
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

    /// Moves due retries to the stream; returns how long to wait until the next.
    async fn promote(&self) -> Result<Duration, BackendError> {
        let now = self.clock.now();
        let (_, next): (i64, i64) = self
            .scripts
            .promote
            .key(keys::DELAYED)
            .key(keys::READY)
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

    /// Resets the idle time of the entries this node holds, so that they are
    /// not handed to another node while their steps run.
    async fn renew(&self) -> Result<(), BackendError> {
        let ids: Vec<String> = self.entries.lock().unwrap().values().cloned().collect();
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
        let held: std::collections::HashSet<String> =
            self.entries.lock().unwrap().values().cloned().collect();
        let mut reclaimed = self.reclaimed.lock().unwrap();
        for entry in reply.claimed {
            if held.contains(&entry.id) {
                continue;
            }
            if let Some(task) = task_of(&entry) {
                reclaimed.push_back((entry.id, task));
            }
        }
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
        let (len, pending, delayed): (u64, redis::Value, u64) = redis::pipe()
            .cmd("XLEN")
            .arg(keys::READY)
            .cmd("XPENDING")
            .arg(keys::READY)
            .arg(keys::GROUP)
            .cmd("ZCARD")
            .arg(keys::DELAYED)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let pending = pending_count(&pending);
        Ok(ClusterView {
            backend: "redis".into(),
            nodes,
            queues: vec![QueueInfo {
                name: keys::READY.into(),
                depth: len.saturating_sub(pending),
                pending,
                delayed,
            }],
        })
    }
}

/// The count of an `XPENDING key group` summary.
fn pending_count(reply: &redis::Value) -> u64 {
    match reply {
        redis::Value::Array(items) => items.first().and_then(super::int).unwrap_or(0) as u64,
        _ => 0,
    }
}

#[async_trait::async_trait]
impl WorkQueue for RedisBackend {
    async fn next(&self, max: usize) -> Result<Vec<Delivery>, BackendError> {
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
            let read: Result<Option<StreamReadReply>, _> = {
                let mut reader = self.reader.lock().await;
                redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(keys::GROUP)
                    .arg(&self.config.node)
                    .arg("COUNT")
                    .arg(max)
                    .arg("BLOCK")
                    .arg(BLOCK.as_millis() as u64)
                    .arg("STREAMS")
                    .arg(keys::READY)
                    .arg(">")
                    .query_async(&mut *reader)
                    .await
            };
            let reply = match read {
                Ok(reply) => reply,
                Err(e) if e.code() == Some("NOGROUP") => {
                    // Redis lost the group (restarted without persistence): make it again.
                    self.ensure_group().await?;
                    continue;
                }
                Err(e) => return Err(unavailable(e)),
            };
            let Some(reply) = reply else {
                continue;
            };
            let mut bad = Vec::new();
            for key in reply.keys {
                self.deliver(key.ids, &mut out, &mut bad);
            }
            if !bad.is_empty() {
                self.ack_ids(&bad).await?;
            }
            if !out.is_empty() {
                return Ok(out);
            }
        }
    }

    async fn ack(&self, deliveries: &[Delivery]) -> Result<(), BackendError> {
        let ids: Vec<String> = {
            let held = self.entries.lock().unwrap();
            deliveries
                .iter()
                .filter_map(|d| held.get(&d.tag).cloned())
                .collect()
        };
        self.ack_ids(&ids).await?;
        let mut held = self.entries.lock().unwrap();
        for d in deliveries {
            held.remove(&d.tag);
        }
        Ok(())
    }

    async fn release(&self) -> Result<u64, BackendError> {
        let released: u64 = self
            .scripts
            .release
            .key(keys::READY)
            .arg(keys::GROUP)
            .arg(&self.config.node)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        self.entries.lock().unwrap().clear();
        Ok(released)
    }

    async fn depth(&self) -> Result<u64, BackendError> {
        let (len, pending): (u64, redis::Value) = redis::pipe()
            .cmd("XLEN")
            .arg(keys::READY)
            .cmd("XPENDING")
            .arg(keys::READY)
            .arg(keys::GROUP)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(len.saturating_sub(pending_count(&pending)))
    }
}
