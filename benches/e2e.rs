//! End to end on Redis, against Restate and Celery: the release `weft`
//! binary serving a fresh `redis-server` (append-only file, fsync every
//! second), driven over HTTP like any client, then the peers' own benchmarks
//! (`shared/peers/{celery,restate}/bench.sh`) in the same run, and a table of
//! ratios.
//!
//! Two shapes of no-op steps (`noop@1`), results persisted in Redis:
//!
//! - fan-out: one run of N independent steps and a `join` that needs them all
//!   (N = 5,000; reported as steps/s counting the join);
//! - chain: one run of M steps, each needing the one before (M = 500;
//!   reported as ms per step).
//!
//! Both on one node (`weft serve --role all`) and on three processes (`--role
//! api` and two `--role worker`), each on its own Redis. Time is the client's
//! wall clock from sending `POST /v1/runs` to seeing the run finished; by
//! default it follows `GET /v1/runs/{id}/events` to the final event. One
//! warm-up run of each shape, then 3 measured runs; each run and the median
//! are printed. For every measured run the benchmark also prints the CPU
//! time Redis, the nodes, this client and the rest of the machine spent, and
//! the Redis commands per step (`CONFIG RESETSTAT` before, `INFO
//! commandstats` after).
//!
//! Arguments that do not start with `-` select parts by name: `weft-1-node`,
//! `weft-2-workers`, `celery`, `restate` (default: all). Environment:
//! `WEFT_E2E_FANOUT` (5000), `WEFT_E2E_CHAIN` (500), `WEFT_E2E_RUNS` (3),
//! `WEFT_E2E_WAIT` (`events`, `poll` = every 5 ms, `poll:<ms>`),
//! `WEFT_PEERS_DIR` (default `../shared/peers` beside the repository),
//! `WEFT_E2E_BIN` (another `weft` binary to measure, e.g. an earlier commit's),
//! `WEFT_E2E_OTLP` (a collector's URL: the nodes export every run's trace to it),
//! `WEFT_E2E_IDLE_WAIT` (900: seconds to wait, before each part, for other
//! benchmarks on the machine to end; builds and tests are only noted).

#[path = "e2e/client.rs"]
mod client;
#[path = "e2e/cluster.rs"]
mod cluster;
#[path = "e2e/machine.rs"]
mod machine;
#[path = "e2e/peers.rs"]
mod peers;
#[path = "e2e/report.rs"]
mod report;
#[path = "e2e/usage.rs"]
mod usage;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use bytes::Bytes;

use client::{Client, Shape, Wait};
use cluster::{Cluster, Topology};
use usage::{Snapshot, Usage};

fn main() -> Result<()> {
    let settings = Settings::from_env()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    println!(
        "fan-out {} + join, chain {}; warm-up then {} runs each; client {}",
        settings.fanout,
        settings.chain,
        settings.runs,
        settings.wait.describe()
    );
    println!("source: {}", source_state());

    let mut wefts = Vec::new();
    for topology in [Topology::OneNode, Topology::TwoWorkers] {
        if settings.selected(topology.name()) {
            wefts.push(measure(&rt, topology, &settings)?);
        }
    }
    let mut others = Vec::new();
    for name in ["restate", "celery"] {
        if settings.selected(name) {
            let state = machine_state(name, &settings);
            let (peer, busy) = machine::busy_during(|| {
                peers::run(&settings.peers, name, settings.fanout, settings.chain)
            });
            // A peer that cannot run leaves its columns empty, not the table.
            match peer {
                Ok(mut peer) => {
                    peer.machine = format!(
                        "{state}; busy CPU during its bench.sh (set-up included) {:.1} s",
                        busy.as_secs_f64()
                    );
                    println!("[{name}] machine: {}", peer.machine);
                    others.push(peer);
                }
                Err(e) => println!("[{name}] not measured: {e:#}"),
            }
        }
    }

    println!();
    report::runs(&wefts, &others);
    println!();
    report::usage(&wefts);
    println!();
    report::table(&wefts, &others);
    Ok(())
}

/// What the environment and the arguments chose.
struct Settings {
    fanout: usize,
    chain: usize,
    runs: usize,
    wait: Wait,
    peers: PathBuf,
    idle_wait: Duration,
    filters: Vec<String>,
}

impl Settings {
    fn from_env() -> Result<Self> {
        fn var<T: std::str::FromStr>(name: &str, default: T) -> Result<T> {
            match std::env::var(name) {
                Ok(v) => v
                    .trim()
                    .parse()
                    .ok()
                    .with_context(|| format!("{name}={v:?}")),
                Err(_) => Ok(default),
            }
        }
        let peers = std::env::var_os("WEFT_PEERS_DIR").map_or_else(
            || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/peers")),
            PathBuf::from,
        );
        let settings = Self {
            fanout: var("WEFT_E2E_FANOUT", 5000)?,
            chain: var("WEFT_E2E_CHAIN", 500)?,
            runs: var("WEFT_E2E_RUNS", 3)?,
            wait: Wait::parse(&var("WEFT_E2E_WAIT", "events".to_string())?)?,
            peers,
            idle_wait: Duration::from_secs(var("WEFT_E2E_IDLE_WAIT", 900)?),
            filters: std::env::args()
                .skip(1)
                .filter(|a| !a.starts_with('-'))
                .collect(),
        };
        ensure!(
            settings.fanout > 0 && settings.chain > 0 && settings.runs > 0,
            "sizes and runs must be positive"
        );
        Ok(settings)
    }

    fn selected(&self, name: &str) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|f| name.contains(f.as_str()))
    }
}

/// Seconds of each measured run of one scenario, and their median.
pub struct Figures {
    pub steps: usize,
    pub runs: Vec<f64>,
    pub median: f64,
}

impl Figures {
    /// The median of `runs` unless the peer printed its own.
    pub fn new(steps: usize, runs: Vec<f64>, printed_median: Option<f64>) -> Self {
        let median = printed_median.unwrap_or_else(|| median(&runs));
        Self {
            steps,
            runs,
            median,
        }
    }

    pub fn steps_per_s(&self, seconds: f64) -> f64 {
        self.steps as f64 / seconds
    }

    pub fn ms_per_step(&self, seconds: f64) -> f64 {
        seconds * 1000.0 / self.steps as f64
    }
}

fn median(xs: &[f64]) -> f64 {
    let mut sorted = xs.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The measurements of one topology.
pub struct Weft {
    pub topology: Topology,
    /// The state of the machine when the topology was measured.
    pub machine: String,
    pub fanout: Figures,
    pub chain: Figures,
    /// Per measured run, in order.
    pub fanout_usage: Vec<Usage>,
    pub chain_usage: Vec<Usage>,
}

/// Waits (up to `WEFT_E2E_IDLE_WAIT` seconds) while other benchmarks run,
/// then describes the machine: load average and the builds or tests running.
fn machine_state(part: &str, settings: &Settings) -> String {
    let deadline = std::time::Instant::now() + settings.idle_wait;
    let mut others = machine::other_work();
    while !others.benchmarks.is_empty() && std::time::Instant::now() < deadline {
        println!("\n[{part}] waiting for other benchmarks to end:");
        for p in &others.benchmarks {
            println!("  {p}");
        }
        std::thread::sleep(Duration::from_secs(15));
        others = machine::other_work();
    }
    let mut state = format!("load average {:.2}", machine::load_average());
    if !others.benchmarks.is_empty() {
        state.push_str(&format!(
            "; still {} other benchmark process(es) after waiting",
            others.benchmarks.len()
        ));
    }
    if others.builds.is_empty() {
        state.push_str("; no builds or tests running");
    } else {
        state.push_str(&format!(
            "; {} build/test process(es) running",
            others.builds.len()
        ));
    }
    println!("\n[{part}] machine: {state}");
    for p in others.benchmarks.iter().chain(&others.builds) {
        println!("  {p}");
    }
    state
}

fn measure(rt: &tokio::runtime::Runtime, topology: Topology, settings: &Settings) -> Result<Weft> {
    let part = topology.name();
    let machine = machine_state(part, settings);
    let admin = format!("{:032x}", rand::random::<u128>());
    let cluster = Cluster::start(topology, &admin)?;
    let client = Client::new(&cluster.api, &cluster.key)?;
    rt.block_on(cluster::lift_limits(&client.http, &cluster, &admin))?;
    let pids: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| format!("{} {} on {}", n.role, n.pid(), n.addr))
        .collect();
    println!(
        "[{part}] redis-server {} on port {}; weft serve: {}",
        cluster.redis_pid,
        cluster.redis.port(),
        pids.join(", ")
    );
    let mut conn = cluster.redis_conn()?;

    let mut measure_shape = |shape: Shape, size: usize| -> Result<(Figures, Vec<Usage>)> {
        let steps = size + usize::from(shape == Shape::FanOut);
        let body = serde_json::json!({"workflow": client::workflow(shape, size), "input": {}});
        let body = Bytes::from(serde_json::to_vec(&body)?);
        let (id, warm) = rt.block_on(client.run(body.clone(), settings.wait))?;
        rt.block_on(client.check(&id, steps))?;
        println!(
            "[{part}] {} warm-up: {:.3} s",
            shape.name(),
            warm.as_secs_f64()
        );
        let mut runs = Vec::new();
        let mut usages = Vec::new();
        for i in 1..=settings.runs {
            usage::reset_stats(&mut conn)?;
            let before = Snapshot::take(&cluster);
            let (id, elapsed) = rt.block_on(client.run(body.clone(), settings.wait))?;
            let after = Snapshot::take(&cluster);
            let info = usage::read_stats(&mut conn)?;
            let server = rt.block_on(client.check(&id, steps))?;
            let mut usage = Usage::between(&cluster, &before, &after, &info);
            usage.server = server;
            let seconds = elapsed.as_secs_f64();
            let rate = match shape {
                Shape::FanOut => format!("{:.0} steps/s", steps as f64 / seconds),
                Shape::Chain => format!("{:.3} ms/step", seconds * 1000.0 / steps as f64),
            };
            println!(
                "[{part}] {} run {i}/{}: {seconds:.3} s, {rate} (server created->finished {:.3} s)\n    cpu: {}\n    redis: {}",
                shape.name(),
                settings.runs,
                server.as_secs_f64(),
                usage.cpu_line(),
                usage.calls_line(steps),
            );
            runs.push(seconds);
            usages.push(usage);
        }
        Ok((Figures::new(steps, runs, None), usages))
    };
    let (fanout, fanout_usage) = measure_shape(Shape::FanOut, settings.fanout)?;
    let (chain, chain_usage) = measure_shape(Shape::Chain, settings.chain)?;
    Ok(Weft {
        topology,
        machine,
        fanout,
        chain,
        fanout_usage,
        chain_usage,
    })
}

/// The commit measured and the files changed in the working tree, which
/// other people may be editing while this runs.
fn source_state() -> String {
    let git = |args: &[&str]| -> String {
        std::process::Command::new("git")
            .arg("-C")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let commit = git(&["rev-parse", "--short", "HEAD"]);
    let changed = git(&["status", "--short", "--untracked-files=no"]);
    let changed: Vec<&str> = changed.lines().map(str::trim).collect();
    if changed.is_empty() {
        format!("commit {commit}, clean")
    } else {
        format!("commit {commit} with changes: {}", changed.join(", "))
    }
}

/// `Duration` in seconds with two decimals.
pub fn secs(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}
