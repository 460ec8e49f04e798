//! 10,000 runs each sleeping 5 s at once (`WEFT_BENCH_TIMERS`,
//! `WEFT_BENCH_SLEEP_MS`), against the release `weft` binary in its own
//! process, on the embedded backend (file store) or, with
//! `WEFT_BENCH_BACKEND=redis`, on a redis-server of its own.
//!
//! Reported:
//! - timer lateness: for each run, when its sleep step finished against
//!   when it started plus the sleep, from the run JSON (`GET /v1/runs/{id}`
//!   of every run once all have ended), p50 / p99 / max;
//! - what a sleeping run costs the backend: the growth of the store file
//!   (`weft.db` with its WAL) or of Redis's `used_memory`, per run, measured
//!   while every run sleeps;
//! - that sleepers hold no worker: a bystander's one-step runs, submitted
//!   one after another while they sleep, from submit to a poll (every 5 ms)
//!   seeing them succeeded, p50 / p99, beside the same before the sleepers.
//!
//! `cargo bench -p weft --bench timers`

#[path = "e2e/machine.rs"]
#[allow(dead_code)]
mod machine;
#[path = "http/server.rs"]
#[allow(dead_code)]
mod server;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};

const SUBMITTERS: usize = 16;

fn main() -> Result<()> {
    let var = |name: &str, default: u64| -> Result<u64> {
        match std::env::var(name) {
            Ok(v) => v.parse().with_context(|| format!("{name}={v:?}")),
            Err(_) => Ok(default),
        }
    };
    let timers = var("WEFT_BENCH_TIMERS", 10_000)? as usize;
    let sleep_ms = var("WEFT_BENCH_SLEEP_MS", 5_000)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(measure(timers, sleep_ms))
}

fn millis(at: &Value) -> Result<u64> {
    let at = humantime::parse_rfc3339(at.as_str().context("no time")?)?;
    Ok(at.duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64)
}

fn percentile(sorted: &[u64], q: f64) -> u64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

async fn measure(timers: usize, sleep_ms: u64) -> Result<()> {
    let (redis, node) = server::start_on_bench_backend(&[])?;
    let backend = if redis.is_some() {
        "redis"
    } else {
        "embedded (file store)"
    };
    let api = server::Api::new(&node).await?;
    let base = format!("http://{}", node.addr);
    let http = reqwest::Client::new();
    let used = || async {
        match &redis {
            Some(r) => {
                let client = redis::Client::open(r.url())?;
                let mut conn = client.get_multiplexed_async_connection().await?;
                let info: String = redis::cmd("INFO")
                    .arg("memory")
                    .query_async(&mut conn)
                    .await?;
                let line = info
                    .lines()
                    .find_map(|l| l.strip_prefix("used_memory:"))
                    .context("no used_memory")?;
                Ok::<u64, anyhow::Error>(line.trim().parse()?)
            }
            None => {
                let mut total = 0;
                for entry in std::fs::read_dir(node.data_path())? {
                    let entry = entry?;
                    if entry.file_name().to_string_lossy().starts_with("weft.db") {
                        total += entry.metadata()?.len();
                    }
                }
                Ok(total)
            }
        }
    };
    let bystander = |label: &'static str| {
        let (http, base, key) = (http.clone(), base.clone(), api.key.clone());
        async move {
            let body = json!({"workflow": {"steps": [{"id": "a", "component": "noop@1"}]}});
            let mut times = Vec::new();
            for _ in 0..50 {
                let at = Instant::now();
                let run: Value = http
                    .post(format!("{base}/v1/runs"))
                    .bearer_auth(&key)
                    .json(&body)
                    .send()
                    .await?
                    .json()
                    .await?;
                let id = run["id"].as_str().context("no id")?.to_string();
                loop {
                    let run: Value = http
                        .get(format!("{base}/v1/runs/{id}"))
                        .bearer_auth(&key)
                        .send()
                        .await?
                        .json()
                        .await?;
                    if run["status"] == "succeeded" {
                        break;
                    }
                    ensure!(at.elapsed() < Duration::from_secs(30), "{label}: {run}");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                times.push(at.elapsed().as_micros() as u64);
            }
            times.sort();
            Ok::<String, anyhow::Error>(format!(
                "{label}: bystander run p50 {:.2} ms / p99 {:.2} ms",
                percentile(&times, 0.5) as f64 / 1000.0,
                percentile(&times, 0.99) as f64 / 1000.0
            ))
        }
    };
    let quiet = bystander("before the sleepers").await?;
    let before = used().await?;

    let body = bytes::Bytes::from(
        json!({"workflow": {"name": "nap", "steps": [{"id": "nap", "sleep_ms": sleep_ms}]}})
            .to_string(),
    );
    let submitting = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..SUBMITTERS {
        let (http, base, key, body) = (http.clone(), base.clone(), api.key.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in (s..timers).step_by(SUBMITTERS) {
                let answer = http
                    .post(format!("{base}/v1/runs"))
                    .bearer_auth(&key)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await?;
                ensure!(
                    answer.status().is_success(),
                    "submitting: {}",
                    answer.status()
                );
                let run: Value = answer.json().await?;
                ids.push(run["id"].as_str().context("no id")?.to_string());
            }
            Ok::<_, anyhow::Error>(ids)
        }));
    }
    let mut ids = Vec::with_capacity(timers);
    for t in tasks {
        ids.extend(t.await??);
    }
    let submitted = submitting.elapsed();
    let during = bystander("while they sleep").await?;
    let sleeping_bytes = used().await?.saturating_sub(before);
    api.drain().await?;

    let mut lateness = Vec::with_capacity(timers);
    for id in &ids {
        let run: Value = http
            .get(format!("{base}/v1/runs/{id}"))
            .bearer_auth(&api.key)
            .send()
            .await?
            .json()
            .await?;
        ensure!(run["status"] == "succeeded", "{run}");
        let nap = &run["steps"]["nap"];
        let due = millis(&nap["started_at"])? + sleep_ms;
        lateness.push(millis(&nap["finished_at"])?.saturating_sub(due));
    }
    lateness.sort();
    println!("{backend}: {timers} runs each sleeping {sleep_ms} ms, submitted in {submitted:.2?}");
    println!(
        "timer lateness (finished - (started + sleep)): p50 {} ms, p99 {} ms, max {} ms",
        percentile(&lateness, 0.5),
        percentile(&lateness, 0.99),
        lateness.last().copied().unwrap_or(0)
    );
    println!(
        "backend bytes while all sleep: {} MiB, {} bytes per sleeping run",
        sleeping_bytes >> 20,
        sleeping_bytes / timers as u64
    );
    println!("{quiet}");
    println!("{during}");
    Ok(())
}
