//! Where a run's time goes: CPU time of Redis, of each Weft node, of this
//! client and of the rest of the machine, and the commands Redis executed.

use std::time::Duration;

use anyhow::Result;

use crate::cluster::Cluster;
use crate::machine;

/// CPU counters at one moment.
pub struct Snapshot {
    redis: Duration,
    nodes: Vec<Duration>,
    client: Duration,
    machine: Duration,
}

impl Snapshot {
    pub fn take(cluster: &Cluster) -> Self {
        Self {
            redis: machine::process_cpu(cluster.redis_pid),
            nodes: cluster.nodes.iter().map(|n| n.cpu()).collect(),
            client: machine::own_cpu(),
            machine: machine::machine_cpu(),
        }
    }
}

/// What one measured run cost.
pub struct Usage {
    /// `finished_at - created_at` of the run, as the server recorded them.
    pub server: Duration,
    pub redis: Duration,
    /// Per node, in the order the cluster started them, with its role.
    pub nodes: Vec<(&'static str, Duration)>,
    pub client: Duration,
    /// Busy CPU time of the machine not spent by the processes above.
    pub other: Duration,
    /// `(command, calls, microseconds inside Redis)`, most calls first.
    pub commands: Vec<(String, u64, u64)>,
}

impl Usage {
    pub fn between(cluster: &Cluster, before: &Snapshot, after: &Snapshot, info: &str) -> Self {
        let redis = after.redis.saturating_sub(before.redis);
        let nodes: Vec<(&'static str, Duration)> = cluster
            .nodes
            .iter()
            .zip(before.nodes.iter().zip(&after.nodes))
            .map(|(node, (b, a))| (node.role, a.saturating_sub(*b)))
            .collect();
        let client = after.client.saturating_sub(before.client);
        let ours = redis + client + nodes.iter().map(|(_, d)| *d).sum::<Duration>();
        let other = after
            .machine
            .saturating_sub(before.machine)
            .saturating_sub(ours);
        Self {
            server: Duration::ZERO,
            redis,
            nodes,
            client,
            other,
            commands: commandstats(info),
        }
    }

    pub fn weft(&self) -> Duration {
        self.nodes.iter().map(|(_, d)| *d).sum()
    }

    pub fn calls(&self) -> u64 {
        self.commands.iter().map(|(_, calls, _)| calls).sum()
    }

    /// `redis 0.21 s, weft 0.63 s (api 0.1 + worker 0.3 + ...), client ..., other ...`
    pub fn cpu_line(&self) -> String {
        let s = |d: Duration| format!("{:.2}", d.as_secs_f64());
        let weft = if self.nodes.len() > 1 {
            let parts: Vec<String> = self
                .nodes
                .iter()
                .map(|(role, d)| format!("{role} {}", s(*d)))
                .collect();
            format!("{} s ({})", s(self.weft()), parts.join(" + "))
        } else {
            format!("{} s", s(self.weft()))
        };
        format!(
            "redis-server {} s, weft {weft}, client {} s, rest of machine {} s",
            s(self.redis),
            s(self.client),
            s(self.other)
        )
    }

    /// `24.5 calls/step: evalsha 2.00 (40 µs each), hget 7.1 (0.5 µs each), ...`.
    /// Commands run by scripts count both on their own and inside the
    /// script's time.
    pub fn calls_line(&self, steps: usize) -> String {
        let per = |n: u64| n as f64 / steps as f64;
        let parts: Vec<String> = self
            .commands
            .iter()
            .filter(|(_, calls, _)| per(*calls) >= 0.01)
            .map(|(name, calls, usec)| {
                format!(
                    "{name} {:.2} ({:.1} µs each)",
                    per(*calls),
                    *usec as f64 / (*calls).max(1) as f64
                )
            })
            .collect();
        format!("{:.2} calls/step: {}", per(self.calls()), parts.join(", "))
    }

    /// Script calls (`EVALSHA`, `EVAL`, `FCALL`) per step.
    pub fn scripts(&self) -> u64 {
        self.commands
            .iter()
            .filter(|(name, _, _)| name.starts_with("eval") || name.starts_with("fcall"))
            .map(|(_, calls, _)| calls)
            .sum()
    }
}

/// Resets Redis's command statistics.
pub fn reset_stats(conn: &mut redis::Connection) -> Result<()> {
    redis::cmd("CONFIG").arg("RESETSTAT").query::<()>(conn)?;
    Ok(())
}

/// `INFO commandstats`.
pub fn read_stats(conn: &mut redis::Connection) -> Result<String> {
    Ok(redis::cmd("INFO").arg("commandstats").query(conn)?)
}

/// `cmdstat_evalsha:calls=5001,usec=80000,...` lines, most calls first;
/// the INFO and CONFIG calls of this benchmark left out.
fn commandstats(info: &str) -> Vec<(String, u64, u64)> {
    let mut commands: Vec<(String, u64, u64)> = info
        .lines()
        .filter_map(|line| {
            let (name, fields) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let value = |key: &str| -> Option<u64> {
                fields
                    .split(',')
                    .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))?
                    .parse()
                    .ok()
            };
            Some((name.to_string(), value("calls")?, value("usec")?))
        })
        .filter(|(name, _, _)| !name.starts_with("info") && !name.starts_with("config"))
        .collect();
    commands.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    commands
}
