//! The embedded backend's file store against keeping everything in memory,
//! end to end: the release `weft` binary (`weft serve`, embedded backend) in
//! its own process, driven over HTTP from this one like any client.
//!
//! Part `shapes`: for each store (`--store memory`, the file store with
//! `--fsync normal`, the default, and with `--fsync always`), a fresh server
//! runs a fan-out of N no-op steps and a `join` (N = 5,000; steps/s counting
//! the join) and a chain of M no-op steps (M = 500; ms per step). Time is the
//! client's wall clock from sending `POST /v1/runs` to the run's final event
//! on `GET /v1/runs/{id}/events` (`WEFT_E2E_WAIT=poll` polls `GET
//! /v1/runs/{id}` every 5 ms instead). One warm-up run, then 3 measured runs
//! (`WEFT_E2E_RUNS`) of each shape on each store, interleaved store by store
//! so that the machine's drift hits all three alike; medians and ratios to
//! the memory store are printed.
//!
//! Part `history`: 10,000 finished one-step runs (`WEFT_BENCH_HISTORY`) on
//! the file store, then `GET /v1/runs/{id}` of each of them in random order
//! from 4 connections (p50, p99, max), the store's size per run, and a restart
//! after `kill -9`: the time from starting the process to its first `200` on
//! `/healthz`, and the open + recovery time the server logs.
//!
//! `cargo bench -p weft --bench durable [shapes|history]`; `WEFT_BENCH_BIN`
//! measures another `weft` binary.

#[path = "e2e/client.rs"]
mod client;
#[path = "e2e/machine.rs"]
#[allow(dead_code)]
mod machine;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::json;

use client::{Client, Shape, Wait};

const ADMIN: &str = "bench-admin-token";

/// How a server keeps its state.
#[derive(Clone, Copy)]
struct Store {
    name: &'static str,
    args: &'static [&'static str],
}

const STORES: [Store; 3] = [
    Store {
        name: "memory",
        args: &["--store", "memory"],
    },
    Store {
        name: "file (default)",
        args: &[],
    },
    Store {
        name: "file --fsync always",
        args: &["--fsync", "always"],
    },
];

fn main() -> Result<()> {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let selected = |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let var = |name: &str, default: usize| -> Result<usize> {
        match std::env::var(name) {
            Ok(v) => v.parse().with_context(|| format!("{name}={v:?}")),
            Err(_) => Ok(default),
        }
    };
    let wait = Wait::parse(&std::env::var("WEFT_E2E_WAIT").unwrap_or_else(|_| "events".into()))?;
    if selected("shapes") {
        shapes(
            &rt,
            var("WEFT_E2E_FANOUT", 5_000)?,
            var("WEFT_E2E_CHAIN", 500)?,
            var("WEFT_E2E_RUNS", 3)?,
            wait,
        )?;
    }
    if selected("history") {
        history(&rt, var("WEFT_BENCH_HISTORY", 10_000)?)?;
    }
    Ok(())
}

fn shapes(
    rt: &tokio::runtime::Runtime,
    fanout: usize,
    chain: usize,
    runs: usize,
    wait: Wait,
) -> Result<()> {
    println!(
        "fan-out {fanout} + join and chain {chain}, no-op steps; warm-up then {runs} runs per store; client {}",
        wait.describe()
    );
    let servers: Vec<Server> = STORES
        .iter()
        .map(|s| Server::start(s.args))
        .collect::<Result<_>>()?;
    let clients: Vec<Client> = servers
        .iter()
        .map(|s| Client::new(&s.addr, &s.key))
        .collect::<Result<_>>()?;
    for (server, client) in servers.iter().zip(&clients) {
        rt.block_on(server.lift_limits(&client.http))?;
    }
    for (shape, size) in [(Shape::FanOut, fanout), (Shape::Chain, chain)] {
        let steps = size + usize::from(shape == Shape::FanOut);
        let body = json!({"workflow": client::workflow(shape, size), "input": {}});
        let body = Bytes::from(serde_json::to_vec(&body)?);
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); STORES.len()];
        let mut server_times: Vec<Vec<f64>> = vec![Vec::new(); STORES.len()];
        for round in 0..=runs {
            for (i, (store, client)) in STORES.iter().zip(&clients).enumerate() {
                let cpu_before = machine::process_cpu(servers[i].pid());
                let (id, elapsed) = rt.block_on(client.run(body.clone(), wait))?;
                let cpu = machine::process_cpu(servers[i].pid()) - cpu_before;
                let server_time = rt.block_on(client.check(&id, steps))?;
                let seconds = elapsed.as_secs_f64();
                let label = if round == 0 {
                    "warm-up".to_string()
                } else {
                    format!("run {round}/{runs}")
                };
                println!(
                    "[{}] {} {label}: {seconds:.3} s, {} (server created->finished {:.3} s, server cpu {:.2} s)",
                    store.name,
                    shape.name(),
                    rate(shape, steps, seconds),
                    server_time.as_secs_f64(),
                    cpu.as_secs_f64(),
                );
                if round > 0 {
                    times[i].push(seconds);
                    server_times[i].push(server_time.as_secs_f64());
                }
            }
        }
        println!(
            "\n{} of {steps} steps, median of {runs}: client (POST to final event), then server (created_at to finished_at):",
            shape.name()
        );
        let base = median(&times[0]);
        let server_base = median(&server_times[0]);
        for ((store, runs), server) in STORES.iter().zip(&times).zip(&server_times) {
            let (m, sm) = (median(runs), median(server));
            println!(
                "  {:<22} client {:>7.3} s {:>16} {:>5.2}x | server {:>7.3} s {:>16} {:>5.2}x the memory store's",
                store.name,
                m,
                rate(shape, steps, m),
                m / base,
                sm,
                rate(shape, steps, sm),
                sm / server_base,
            );
        }
        println!();
    }
    Ok(())
}

fn history(rt: &tokio::runtime::Runtime, count: usize) -> Result<()> {
    let mut server = Server::start(&[])?;
    let client = Client::new(&server.addr, &server.key)?;
    rt.block_on(server.lift_limits(&client.http))?;
    let base = format!("http://{}", server.addr);
    let key = server.key.clone();
    let body = Bytes::from(serde_json::to_vec(&json!({
        "workflow": { "steps": [ { "id": "a", "component": "echo@1", "input": { "n": "${input.n}", "text": "a line of some length to store" } } ] },
        "input": { "n": 0 }
    }))?);
    let started = Instant::now();
    let ids: Vec<String> = rt.block_on(async {
        let http = client.http.clone();
        let submitted = futures::stream::iter(0..count)
            .map(|_| {
                let (http, base, key, body) =
                    (http.clone(), base.clone(), key.clone(), body.clone());
                async move {
                    let answer = http
                        .post(format!("{base}/v1/runs"))
                        .bearer_auth(&key)
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(body)
                        .send()
                        .await?;
                    ensure!(
                        answer.status().as_u16() == 202,
                        "submit: {}",
                        answer.status()
                    );
                    let v: serde_json::Value = answer.json().await?;
                    Ok(v["id"].as_str().context("no id")?.to_string())
                }
            })
            .buffer_unordered(32)
            .collect::<Vec<Result<String>>>()
            .await;
        submitted.into_iter().collect::<Result<Vec<_>>>()
    })?;
    // Every run finished.
    for id in &ids {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let run = rt.block_on(get(&client.http, &base, &key, id))?.1;
            if run["status"] == "succeeded" {
                break;
            }
            ensure!(Instant::now() < deadline, "run {id} did not finish: {run}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    println!(
        "{count} one-step runs submitted and finished in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let latencies = rt.block_on(read_all(&client.http, &base, &key, &ids))?;
    report_latencies("GET /v1/runs/{id}", &latencies);
    let bytes = store_bytes(&server.data_dir);
    println!(
        "store: {:.1} MiB for {count} finished runs, {:.0} bytes per run (weft.db + weft.db-wal)",
        bytes as f64 / (1 << 20) as f64,
        bytes as f64 / count as f64
    );

    server.kill();
    let restart = Instant::now();
    server.spawn(&[])?;
    server.wait_ready()?;
    let ready = restart.elapsed();
    let logged = server.logged_open_ms();
    println!(
        "restart after kill -9 with {count} runs stored: first 200 on /healthz after {:.0} ms (open + recovery as logged: {})",
        ready.as_secs_f64() * 1000.0,
        logged.map_or("not logged".to_string(), |ms| format!("{ms} ms"))
    );
    let latencies = rt.block_on(read_all(&client.http, &base, &key, &ids))?;
    report_latencies("GET /v1/runs/{id} after the restart", &latencies);
    Ok(())
}

async fn get(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    id: &str,
) -> Result<(Duration, serde_json::Value)> {
    let started = Instant::now();
    let answer = http
        .get(format!("{base}/v1/runs/{id}"))
        .bearer_auth(key)
        .send()
        .await?;
    ensure!(
        answer.status().is_success(),
        "GET {id}: {}",
        answer.status()
    );
    let body = answer.json().await?;
    Ok((started.elapsed(), body))
}

/// `GET` of every run once, in a shuffled order, from 4 connections.
async fn read_all(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    ids: &[String],
) -> Result<Vec<Duration>> {
    use rand::seq::SliceRandom;
    let mut order: Vec<&String> = ids.iter().collect();
    order.shuffle(&mut rand::rng());
    let results = futures::stream::iter(order)
        .map(|id| async move {
            let (took, run) = get(http, base, key, id).await?;
            ensure!(run["status"] == "succeeded", "run {id}: {run}");
            Ok(took)
        })
        .buffer_unordered(4)
        .collect::<Vec<Result<Duration>>>()
        .await;
    results.into_iter().collect()
}

fn report_latencies(what: &str, latencies: &[Duration]) {
    let mut ms: Vec<f64> = latencies.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 * q) as usize).min(ms.len() - 1)];
    println!(
        "{what}, {} requests: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms.len(),
        at(0.5),
        at(0.99),
        ms[ms.len() - 1]
    );
}

fn store_bytes(dir: &Path) -> u64 {
    ["weft.db", "weft.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

fn rate(shape: Shape, steps: usize, seconds: f64) -> String {
    match shape {
        Shape::FanOut => format!("{:.0} steps/s", steps as f64 / seconds),
        Shape::Chain => format!("{:.3} ms/step", seconds * 1000.0 / steps as f64),
    }
}

fn median(xs: &[f64]) -> f64 {
    let mut xs = xs.to_vec();
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// One `weft serve` on the embedded backend, in its own data directory.
struct Server {
    child: Option<Child>,
    addr: String,
    key: String,
    data_dir: PathBuf,
    dir: tempfile::TempDir,
}

impl Server {
    fn start(args: &[&str]) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("weft-durable-").tempdir()?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut server = Self {
            child: None,
            addr: format!("127.0.0.1:{port}"),
            key: String::new(),
            data_dir: dir.path().join("data"),
            dir,
        };
        server.spawn(args)?;
        server.wait_ready()?;
        let key_file = server.data_dir.join("api-key");
        server.key = std::fs::read_to_string(&key_file)
            .with_context(|| key_file.display().to_string())?
            .trim()
            .to_string();
        Ok(server)
    }

    fn spawn(&mut self, args: &[&str]) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("serve.log"))?;
        let bin =
            std::env::var_os("WEFT_BENCH_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_weft").into());
        let mut command = Command::new(bin);
        weft::testing::clear_weft_env(&mut command);
        let child = command
            .args(["serve", "--listen", &self.addr, "--admin-token", ADMIN])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(args)
            .env("WEFT_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting weft serve")?;
        self.child = Some(child);
        Ok(())
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    /// The `took_ms` of the last "opened the store" line of the log.
    fn logged_open_ms(&self) -> Option<u64> {
        self.log()
            .lines()
            .rev()
            .find(|l| l.contains("opened the store"))
            .and_then(|l| l.split("took_ms=").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|ms| ms.trim_matches('"').parse().ok())
    }

    fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if client::healthy(&self.addr) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("weft serve did not start in 120 s:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    async fn lift_limits(&self, http: &reqwest::Client) -> Result<()> {
        let answer = http
            .put(format!("http://{}/v1/tenants/default/limits", self.addr))
            .bearer_auth(ADMIN)
            .json(&json!({"runs_per_second": 100000, "concurrent_runs": 100000}))
            .send()
            .await?;
        ensure!(
            answer.status().is_success(),
            "raising the limits: {}",
            answer.status()
        );
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}
