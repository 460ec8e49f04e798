//! `GET /v1/runs` with 50,000 finished runs of one tenant (`WEFT_BENCH_RUNS`)
//! and 1,000 of another, against the release `weft` binary in its own
//! process: the embedded backend (file store, started with
//! `--max-finished-runs` above the run count so that every run is kept) and
//! Redis (a redis-server of its own, `WEFT_BENCH_BACKEND=redis`).
//!
//! The runs alternate between two workflow names. Timed, 50 requests each
//! over one keep-alive connection, p50 and p99 on this process's clock
//! (request sent to last byte read):
//! - the first page (`limit` 50), unfiltered and filtered by workflow;
//! - a page deep in the cursor: the cursor after half the runs (25,000),
//!   reached by following `next_cursor`, unfiltered and filtered.
//!
//! Checked on the way: a walk over every page (limit 500) gives each of the
//! tenant's runs once, newest first, and none of the other tenant's; a
//! filtered page holds only runs of its workflow.
//!
//! `cargo bench -p weft --bench listing`

#[path = "e2e/machine.rs"]
#[allow(dead_code)]
mod machine;
#[path = "http/server.rs"]
#[allow(dead_code)]
mod server;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use bytes::Bytes;
use serde_json::{Value, json};

/// Requests per timed figure.
const SAMPLES: usize = 50;

/// Submissions in flight at once while filling the store.
const SUBMITTERS: usize = 16;

fn main() -> Result<()> {
    let runs: usize = match std::env::var("WEFT_BENCH_RUNS") {
        Ok(v) => v
            .parse()
            .with_context(|| format!("WEFT_BENCH_RUNS={v:?}"))?,
        Err(_) => 50_000,
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(measure(runs))
}

async fn measure(runs: usize) -> Result<()> {
    let keep = (runs + 10_000).to_string();
    let (redis, node) = server::start_on_bench_backend(&["--max-finished-runs", &keep])?;
    let backend = if redis.is_some() {
        "redis"
    } else {
        "embedded (file store)"
    };
    let api = server::Api::new(&node).await?;
    let base = format!("http://{}", node.addr);
    let http = reqwest::Client::new();

    // Another tenant, with runs of its own that must never show.
    let created: Value = http
        .post(format!("{base}/v1/tenants"))
        .bearer_auth(node.admin_token())
        .json(&json!({"name": "other"}))
        .send()
        .await?
        .json()
        .await?;
    let other_key = created["api_key"]
        .as_str()
        .context("no api_key for the other tenant")?
        .to_string();
    let noop = std::fs::read(weft::bundled::paths::NOOP)?;
    let published = http
        .put(format!("{base}/v1/components/noop/1.0.0"))
        .bearer_auth(&other_key)
        .header("content-type", "application/wasm")
        .body(noop)
        .send()
        .await?;
    ensure!(
        published.status().is_success(),
        "publishing for the other tenant: {}",
        published.status()
    );
    let filling = Instant::now();
    let others = submit(&http, &base, &other_key, 1_000).await?;
    let ours = submit(&http, &base, &api.key, runs).await?;
    api.drain().await?;
    eprintln!(
        "{backend}: {} runs submitted and finished in {:.1?}",
        runs + others.len(),
        filling.elapsed()
    );

    // Every page once: each run once, newest first, no other tenant's.
    let list = |query: String| {
        let (http, base, key) = (http.clone(), base.clone(), api.key.clone());
        async move {
            let answer = http
                .get(format!("{base}/v1/runs?{query}"))
                .bearer_auth(&key)
                .send()
                .await?;
            ensure!(
                answer.status().is_success(),
                "GET /v1/runs?{query}: {}",
                answer.status()
            );
            Ok::<Value, anyhow::Error>(answer.json().await?)
        }
    };
    let mut seen: Vec<String> = Vec::with_capacity(runs);
    let mut cursor: Option<String> = None;
    let mut deep = None;
    loop {
        let query = match &cursor {
            Some(c) => format!("limit=500&cursor={c}"),
            None => "limit=500".to_string(),
        };
        let page = list(query).await?;
        for run in page["runs"].as_array().context("no runs")? {
            seen.push(run["id"].as_str().context("no id")?.to_string());
        }
        if deep.is_none() && seen.len() >= runs / 2 {
            deep = page["next_cursor"].as_str().map(str::to_string);
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let unique: HashSet<&String> = seen.iter().collect();
    ensure!(
        seen.len() == runs && unique.len() == runs,
        "the walk gave {} runs ({} distinct), not {runs}",
        seen.len(),
        unique.len()
    );
    ensure!(
        seen.windows(2).all(|w| w[0] > w[1]),
        "the walk is not newest first"
    );
    ensure!(
        ours.iter().all(|id| unique.contains(id)),
        "a submitted run is missing"
    );
    ensure!(
        !others.iter().any(|id| unique.contains(id)),
        "another tenant's run was listed"
    );
    let deep = deep.context("no cursor halfway")?;
    let filtered = list("workflow=odd&limit=500".to_string()).await?;
    ensure!(
        filtered["runs"]
            .as_array()
            .context("no runs")?
            .iter()
            .all(|r| r["workflow"] == "odd"),
        "a filtered page holds another workflow's run"
    );

    println!("{backend}: {runs} runs of one tenant, 1,000 of another");
    println!("| page | p50 | p99 |");
    println!("|---|---|---|");
    let cases = [
        ("first page, limit 50", "limit=50".to_string()),
        (
            "first page, workflow filter",
            "workflow=odd&limit=50".to_string(),
        ),
        (
            "halfway (after 25,000 runs), limit 50",
            format!("limit=50&cursor={deep}"),
        ),
        (
            "halfway, workflow filter",
            format!("workflow=odd&limit=50&cursor={deep}"),
        ),
    ];
    for (name, query) in cases {
        let mut times = Vec::with_capacity(SAMPLES);
        for _ in 0..SAMPLES {
            let at = Instant::now();
            let page = list(query.clone()).await?;
            times.push(at.elapsed());
            ensure!(
                page["runs"].as_array().is_some_and(|r| !r.is_empty()),
                "{name}: an empty page"
            );
        }
        times.sort();
        let p = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
        println!("| {name} | {:.2?} | {:.2?} |", p(0.5), p(0.99));
    }
    Ok(())
}

/// Submits `count` one-step runs for the tenant of `key`, alternating the
/// workflow names `even` and `odd`; returns their ids.
async fn submit(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    count: usize,
) -> Result<Vec<String>> {
    let bodies: Vec<Bytes> = ["even", "odd"]
        .iter()
        .map(|name| {
            Bytes::from(
                json!({"workflow": {"name": name, "steps": [{"id": "a", "component": "noop@1"}]}})
                    .to_string(),
            )
        })
        .collect();
    let mut tasks = Vec::new();
    for s in 0..SUBMITTERS {
        let (http, base, key, bodies) = (
            http.clone(),
            base.to_string(),
            key.to_string(),
            bodies.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in (s..count).step_by(SUBMITTERS) {
                let mut delay = Duration::from_millis(10);
                loop {
                    let answer = http
                        .post(format!("{base}/v1/runs"))
                        .bearer_auth(&key)
                        .header("content-type", "application/json")
                        .body(bodies[i % 2].clone())
                        .send()
                        .await?;
                    if answer.status().as_u16() == 429 {
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(1));
                        continue;
                    }
                    ensure!(
                        answer.status().is_success(),
                        "submitting: {}",
                        answer.status()
                    );
                    let run: Value = answer.json().await?;
                    ids.push(run["id"].as_str().context("no id")?.to_string());
                    break;
                }
            }
            Ok::<_, anyhow::Error>(ids)
        }));
    }
    let mut ids = Vec::with_capacity(count);
    for task in tasks {
        ids.extend(task.await??);
    }
    Ok(ids)
}
