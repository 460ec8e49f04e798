//! What each attack of ARCHITECTURE.md section 11 costs a node, measured the
//! way a bystander sees it: a release `weft serve` on a free loopback port;
//! while one client sends an attack as tenant `default`, a second tenant's
//! client, in the same process but on its own connections, keeps submitting a
//! one-step run and polling `GET /v1/runs/{id}` until it has succeeded, and
//! also times `GET /v1/runs/{id}` of a finished run. Reported per attack:
//! the attack's answer and time, the bystander's p50/p99 GET latency and
//! p50/p99 submit-to-succeeded time, and the node's peak RSS above idle
//! (sampled from /proc every 10 ms).
//!
//! Run: `cargo bench -p weft --bench hostile [part of an attack's name...]`
//! (embedded backend), and with `WEFT_BENCH_BACKEND=redis` on a
//! redis-server of its own.

#[path = "e2e/machine.rs"]
#[allow(dead_code)]
mod machine;
#[path = "http/server.rs"]
#[allow(dead_code)]
mod server;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use machine::rss;
use serde_json::{Value, json};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Client {
    async fn post(&self, path: &str, body: &Value) -> Result<(u16, Value)> {
        let answer = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .json(body)
            .send()
            .await?;
        let status = answer.status().as_u16();
        Ok((status, answer.json().await.unwrap_or(Value::Null)))
    }

    async fn get(&self, path: &str) -> Result<(u16, Value)> {
        let answer = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await?;
        let status = answer.status().as_u16();
        Ok((status, answer.json().await.unwrap_or(Value::Null)))
    }

    /// Submits a run and polls it until it ends; returns its final JSON.
    async fn run(&self, body: &Value) -> Result<Value> {
        let (status, answer) = self.post("/v1/runs", body).await?;
        ensure!(status == 202, "submit: {status} {answer}");
        let id = answer["id"].as_str().context("id")?.to_string();
        loop {
            let (_, run) = self.get(&format!("/v1/runs/{id}")).await?;
            if matches!(
                run["status"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            ) {
                return Ok(run);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// What the bystander measured while an attack ran.
#[derive(Default)]
struct Bystander {
    gets: Vec<Duration>,
    runs: Vec<Duration>,
}

async fn bystander(client: Arc<Client>, finished: String, stop: Arc<AtomicBool>) -> Bystander {
    let mut seen = Bystander::default();
    let small =
        json!({"workflow": {"steps": [{"id": "e", "component": "echo@1", "input": {"n": 1}}]}});
    while !stop.load(Ordering::Relaxed) {
        let at = Instant::now();
        if client.get(&format!("/v1/runs/{finished}")).await.is_ok() {
            seen.gets.push(at.elapsed());
        }
        let at = Instant::now();
        if let Ok(run) = client.run(&small).await
            && run["status"] == "succeeded"
        {
            seen.runs.push(at.elapsed());
        }
    }
    seen
}

fn attacks() -> Vec<(&'static str, Value)> {
    let big = json!({"big": "x".repeat(1 << 20)});
    let amplified = |copies: usize| {
        json!({"workflow": {"steps": [{"id": "amp", "component": "echo@1",
            "input": {"copies": vec!["${input.big}"; copies]}}]}, "input": big})
    };
    let noop = |i: usize| json!({"id": format!("s{i}"), "component": "noop@1"});
    let steps: Vec<Value> = (0..100_000).map(noop).collect();
    let dup: Vec<Value> = (0..100_000).map(|_| noop(0)).collect();
    // Names long enough that the document is about 4 MiB.
    let needs: Vec<String> = (0..100_000).map(|i| format!("ghost-{i:0>30}")).collect();
    vec![
        ("1 MiB input x 1,000 references", amplified(1_000)),
        ("1 MiB input x 100,000 references", amplified(100_000)),
        (
            "1 MiB input x 1,000 in the run output",
            json!({"workflow": {"steps": [{"id": "e", "component": "echo@1"}],
                "output": vec!["${input.big}"; 1_000]}, "input": big}),
        ),
        (
            "100,000 steps (3.5 MiB)",
            json!({"workflow": {"steps": steps}}),
        ),
        (
            "100,000 duplicate ids (3.1 MiB)",
            json!({"workflow": {"steps": dup}}),
        ),
        (
            "100,000 unknown needs (3.7 MiB)",
            json!({"workflow": {"steps": [{"id": "a", "component": "noop@1", "needs": needs}]}}),
        ),
        (
            "one 3 MiB id",
            json!({"workflow": {"steps": [{"id": "a".repeat(3 << 20), "component": "noop@1"}]}}),
        ),
        (
            "400 steps of 1,000 KiB (run_bytes 256 MiB)",
            json!({"workflow": {"steps": (0..400).map(|i| json!({"id": format!("h{i}"),
                "component": "huge@1", "input": {"size_kb": 1000}})).collect::<Vec<_>>()}}),
        ),
    ]
}

/// A nesting of 4 MiB: sent as raw text, since it is not a JSON value serde_json would build.
fn deep_body() -> String {
    let depth = 2 << 20;
    format!(
        r#"{{"workflow": {{"steps": [{{"id": "a", "component": "noop@1", "input": {}1{}}}]}}}}"#,
        "[".repeat(depth - 64),
        "]".repeat(depth - 64)
    )
}

async fn main_async() -> Result<()> {
    // `WEFT_BENCH_BACKEND=redis`: the node keeps its runs in a redis-server of its own.
    let (redis, node) = server::start_on_bench_backend(&[])?;
    println!(
        "backend: {}",
        if redis.is_some() { "redis" } else { "embedded" }
    );
    let api = server::Api::new(&node).await?;
    let base = format!("http://{}", node.addr);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let attacker = Arc::new(Client {
        http: http.clone(),
        base: base.clone(),
        key: api.key.clone(),
    });
    // The huge component, for the run_bytes attack.
    let huge = std::fs::read(weft::bundled::paths::HUGE)?;
    http.put(format!("{base}/v1/components/huge/1.0.0"))
        .bearer_auth(&api.key)
        .header("content-type", "application/wasm")
        .body(huge)
        .send()
        .await?;
    let admin = node.admin_token().to_string();
    let created: Value = http
        .post(format!("{base}/v1/tenants"))
        .bearer_auth(&admin)
        .json(&json!({"name": "bystander"}))
        .send()
        .await?
        .json()
        .await?;
    let other = Arc::new(Client {
        http: reqwest::Client::new(),
        base: base.clone(),
        key: created["api_key"].as_str().context("api key")?.to_string(),
    });
    let echo = std::fs::read(weft::bundled::paths::ECHO)?;
    http.put(format!("{base}/v1/components/echo/1.0.0"))
        .bearer_auth(&other.key)
        .header("content-type", "application/wasm")
        .body(echo)
        .send()
        .await?;
    let finished = other
        .run(&json!({"workflow": {"steps": [{"id": "e", "component": "echo@1"}]}}))
        .await?["id"]
        .as_str()
        .context("id")?
        .to_string();

    // Quiet figures first, as the baseline of each column.
    let idle = rss(node.pid());
    println!("node RSS idle: {} MiB", idle >> 20);
    println!(
        "| attack | answer | attack took | bystander GET p50 / p99 | bystander run p50 / p99 | node RSS peak above idle |"
    );
    println!("|---|---|---|---|---|---|");
    // Arguments pick attacks by part of their name (the quiet row always runs).
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let mut cases: Vec<(&str, Option<Value>)> = vec![("(none: 3 s quiet)", None)];
    cases.extend(
        attacks()
            .into_iter()
            .filter(|(n, _)| only.is_empty() || only.iter().any(|o| n.contains(o.as_str())))
            .map(|(n, v)| (n, Some(v))),
    );
    cases.push(("4 MiB of nesting", Some(Value::Null)));
    for (name, attack) in cases {
        if name.starts_with("100,000 duplicate ids") {
            // Past the count check, so that the validator itself meets these shapes.
            let raised = http
                .put(format!("{base}/v1/tenants/default/limits"))
                .bearer_auth(&admin)
                .json(&json!({"steps_per_run": 1_000_000}))
                .send()
                .await?;
            ensure!(raised.status().is_success(), "raising steps_per_run");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let sampler = {
            let (stop, peak, pid) = (stop.clone(), peak.clone(), node.pid());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(rss(pid), Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        };
        let watcher = tokio::spawn(bystander(other.clone(), finished.clone(), stop.clone()));
        let at = Instant::now();
        let answer = match attack {
            None => {
                tokio::time::sleep(Duration::from_secs(3)).await;
                "-".to_string()
            }
            Some(Value::Null) => {
                let answer = http
                    .post(format!("{base}/v1/workflows/validate"))
                    .bearer_auth(&api.key)
                    .header("content-type", "application/json")
                    .body(deep_body())
                    .send()
                    .await?;
                answer.status().as_u16().to_string()
            }
            Some(body) if body["input"].is_null() && !name.contains("400 steps") => {
                let (status, answer) = attacker
                    .post("/v1/workflows/validate", &body["workflow"])
                    .await?;
                format!(
                    "{status} ({} problems)",
                    answer["error"]["details"].as_array().map_or(0, Vec::len)
                )
            }
            Some(body) => {
                let run = attacker.run(&body).await?;
                let code = run["error"]["code"].as_str().unwrap_or("-").to_string();
                // The time to the last byte of the answer, as curl reports
                // it; three reads, the median and each.
                let mut reads = Vec::new();
                let mut size = 0;
                for _ in 0..3 {
                    // Read as curl reads to /dev/null: each chunk counted and
                    // dropped, so the figure is the node's answer, not this
                    // process gathering 256 MiB into one buffer.
                    let get = Instant::now();
                    let mut answer = http
                        .get(format!(
                            "{base}/v1/runs/{}",
                            run["id"].as_str().unwrap_or("")
                        ))
                        .bearer_auth(&api.key)
                        .send()
                        .await?;
                    size = 0;
                    while let Some(chunk) = answer.chunk().await? {
                        size += chunk.len();
                    }
                    reads.push(get.elapsed());
                }
                let each: Vec<String> = reads.iter().map(|d| format!("{d:.2?}")).collect();
                let mut sorted = reads.clone();
                sorted.sort();
                format!(
                    "run {} `{code}`; its GET: {} MiB in {:.2?} (median of {})",
                    run["status"].as_str().unwrap_or("?"),
                    size >> 20,
                    sorted[1],
                    each.join(", ")
                )
            }
        };
        let took = at.elapsed();
        // Let the bystander see the node settle after the attack, too.
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, Ordering::Relaxed);
        let mut seen = watcher.await?;
        sampler.await?;
        seen.gets.sort();
        seen.runs.sort();
        println!(
            "| {name} | {answer} | {took:.2?} | {:.2?} / {:.2?} | {:.2?} / {:.2?} ({} runs) | {} MiB |",
            percentile(&seen.gets, 0.5),
            percentile(&seen.gets, 0.99),
            percentile(&seen.runs, 0.5),
            percentile(&seen.runs, 0.99),
            seen.runs.len(),
            peak.load(Ordering::Relaxed).saturating_sub(idle) >> 20,
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; nothing here takes arguments.
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(main_async())
}
