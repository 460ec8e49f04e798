//! One run with a for_each of N no-op items (N = 10,000, `WEFT_BENCH_ITEMS`)
//! at `max_concurrency` 1,000, against the plain fan-out of N no-op steps and
//! a join on the same node, end to end: the release `weft` binary (`weft
//! serve`) in its own process, driven over HTTP from this one like any
//! client, on the embedded backend (file store) and on Redis (a
//! redis-server of its own).
//!
//! Time is the client's wall clock from sending `POST /v1/runs` to the run's
//! final event on `GET /v1/runs/{id}/events`, and, alternating with it, to a
//! poll of `GET /v1/runs/{id}` every 5 ms seeing it finished. Per shape, one
//! warm-up and 3 measured rounds (`WEFT_E2E_RUNS`) both ways, the for_each
//! first; medians and the ratio for_each / fan-out are printed. The node's
//! RSS is sampled from /proc every 10 ms while each for_each runs; the peak
//! is given above the node's idle RSS (after one run of 10 items, before
//! the measured runs; finished runs stay in memory for their retention).
//!
//! `cargo bench -p weft --bench for_each [embedded|redis]`; `WEFT_BENCH_BIN`
//! measures another `weft` binary.

#[path = "e2e/client.rs"]
#[allow(dead_code)]
mod client;
#[path = "e2e/machine.rs"]
#[allow(dead_code)]
mod machine;
#[path = "http/server.rs"]
#[allow(dead_code)]
mod server;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use bytes::Bytes;
use serde_json::{Value, json};

use client::{Client, Shape, Wait};
use machine::rss;

fn main() -> Result<()> {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let selected = |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f));
    let var = |name: &str, default: usize| -> Result<usize> {
        match std::env::var(name) {
            Ok(v) => v.parse().with_context(|| format!("{name}={v:?}")),
            Err(_) => Ok(default),
        }
    };
    let items = var("WEFT_BENCH_ITEMS", 10_000)?;
    let runs = var("WEFT_E2E_RUNS", 3)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    if selected("embedded") {
        measure(&rt, "embedded (file store)", None, items, runs)?;
    }
    if selected("redis") {
        let redis = weft::testing::RedisServer::start();
        measure(&rt, "redis", Some(redis.url()), items, runs)?;
    }
    Ok(())
}

fn for_each(items: usize) -> Value {
    json!({
        "workflow": { "name": "for_each", "steps": [
            { "id": "each", "component": "noop@1", "for_each": "${input.list}",
              "max_concurrency": 1000, "input": "${item}" }
        ] },
        "input": { "list": (0..items).collect::<Vec<_>>() }
    })
}

fn measure(
    rt: &tokio::runtime::Runtime,
    backend: &str,
    redis: Option<String>,
    items: usize,
    runs: usize,
) -> Result<()> {
    let server = match &redis {
        Some(url) => server::Server::start_with(&["--redis", url])?,
        None => server::Server::start()?,
    };
    let api = rt.block_on(server::Api::new(&server))?;
    let (addr, key) = (api.addr.to_string(), api.key.clone());
    let client = Client::new(&addr, &key)?;
    rt.block_on(allow_steps(&client.http, &server, items + 1))?;
    let fan_out = Bytes::from(serde_json::to_vec(
        &json!({"workflow": client::workflow(Shape::FanOut, items), "input": {}}),
    )?);
    let list = Bytes::from(serde_json::to_vec(&for_each(items))?);
    println!(
        "[{backend}] {items} no-op items at max_concurrency 1000 against a fan-out of {items} no-op steps and a join"
    );
    // Idle: the node after one small run, with the no-op component compiled.
    let small = Bytes::from(serde_json::to_vec(&for_each(10))?);
    rt.block_on(client.run(small, Wait::Events))?;
    std::thread::sleep(Duration::from_millis(500));
    let idle = rss(server.pid());
    let mut times: [[Vec<f64>; 2]; 2] = Default::default();
    let mut peaks = Vec::new();
    let waits = [Wait::Events, Wait::Poll(Duration::from_millis(5))];
    // The for_each runs first, so that its RSS is not the fan-out's.
    for (shape, body) in [(1, &list), (0, &fan_out)] {
        for round in 0..=runs {
            for (w, wait) in waits.into_iter().enumerate() {
                let sampling = Sampler::start(server.pid());
                let (id, took) = rt.block_on(client.run(body.clone(), wait))?;
                let peak = sampling.stop();
                let run = rt.block_on(get(&client.http, &addr, &key, &id))?;
                ensure!(run["status"] == "succeeded", "run {id}: {}", run["status"]);
                let label = if round == 0 {
                    "warm-up".to_string()
                } else {
                    format!("round {round}/{runs}")
                };
                let what = if shape == 1 {
                    ensure!(
                        run["steps"]["each"]["items"]["counts"]["succeeded"] == json!(items),
                        "not every item succeeded: {}",
                        run["steps"]["each"]["items"]
                    );
                    if round > 0 {
                        peaks.push(peak.saturating_sub(idle));
                    }
                    format!(
                        "for_each {:.3} s ({:.0} items/s), node RSS peak {} MiB above idle ({} MiB)",
                        took.as_secs_f64(),
                        items as f64 / took.as_secs_f64(),
                        peak.saturating_sub(idle) >> 20,
                        idle >> 20
                    )
                } else {
                    format!(
                        "fan-out {:.3} s ({:.0} steps/s)",
                        took.as_secs_f64(),
                        (items + 1) as f64 / took.as_secs_f64()
                    )
                };
                println!("  {label}, client {}: {what}", wait.describe());
                if round > 0 {
                    times[w][shape].push(took.as_secs_f64());
                }
            }
        }
    }
    for (w, name) in ["following the events stream", "polling GET every 5 ms"]
        .iter()
        .enumerate()
    {
        let (fan, each) = (median(&times[w][0]), median(&times[w][1]));
        println!(
            "[{backend}] median of {runs}, client {name}: fan-out {:.0} steps/s, for_each {:.0} items/s ({:.2}x the fan-out's rate)",
            (items + 1) as f64 / fan,
            items as f64 / each,
            fan / each,
        );
    }
    peaks.sort_unstable();
    println!(
        "[{backend}] node RSS while the for_each runs, above the node's RSS before it: median {} MiB, max {} MiB\n",
        peaks[peaks.len() / 2] >> 20,
        peaks[peaks.len() - 1] >> 20
    );
    Ok(())
}

fn median(xs: &[f64]) -> f64 {
    let mut xs = xs.to_vec();
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Samples a process's RSS every 10 ms on a thread of its own.
struct Sampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl Sampler {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(rss(pid)));
        let thread = {
            let (stop, peak) = (stop.clone(), peak.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(rss(pid), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        Self { stop, peak, thread }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.peak.load(Ordering::Relaxed)
    }
}

async fn get(http: &reqwest::Client, addr: &str, key: &str, id: &str) -> Result<Value> {
    let answer = http
        .get(format!("http://{addr}/v1/runs/{id}"))
        .bearer_auth(key)
        .send()
        .await?;
    ensure!(
        answer.status().is_success(),
        "GET {id}: {}",
        answer.status()
    );
    Ok(answer.json().await?)
}

/// Lets tenant `default` have runs of `steps` steps and items.
async fn allow_steps(http: &reqwest::Client, server: &server::Server, steps: usize) -> Result<()> {
    let answer = http
        .put(format!("http://{}/v1/tenants/default/limits", server.addr))
        .bearer_auth(server.admin_token())
        .json(&json!({ "steps_per_run": steps }))
        .send()
        .await?;
    ensure!(
        answer.status().is_success(),
        "raising steps_per_run: {}",
        answer.status()
    );
    Ok(())
}
