//! Steps in Rust, Python and JavaScript, and what publishing them costs.
//!
//! 1. Warm step latency in this process (cache hit, fresh instance with
//!    limits, `run`, output checked: what a worker spends on a step), p50 and
//!    p99 of `WEFT_BENCH_ITERATIONS` (default 200) steps after 10 of warm-up,
//!    of the three examples `fetch` (Rust), `fetch-json` (Python, componentize-py)
//!    and `summarize` (JavaScript, componentize-js):
//!    - no network: input `{}`, which each answers `bad_input` before any
//!      request (instantiation, the language runtime's start, JSON in and out);
//!    - one request: a GET to a local HTTP server (127.0.0.1, plain) through
//!      the host's policy, DNS-free, its answer parsed. The difference of the
//!      medians is the cost of one outgoing request.
//! 2. Publishing against the `weft` binary in its own process (embedded
//!    backend, a cache of its own, so nothing is compiled before): the time
//!    `PUT /v1/components/...` takes to answer, for the Python and the
//!    JavaScript example, one after the other; then 20 first runs of the
//!    Python one submitted at once, from the first submit until all 20 are
//!    seen succeeded by a client polling `GET /v1/runs/{id}`, and the number
//!    of compiles they caused (`weft_component_cache_compiles_total`).
//!
//! `cargo bench -p weft --bench polyglot`

#[path = "common/mod.rs"]
mod common;
#[path = "e2e/machine.rs"]
#[allow(dead_code)]
mod machine;
#[path = "http/server.rs"]
#[allow(dead_code)]
mod server;
#[path = "../tests/common/target.rs"]
#[allow(dead_code)]
mod target;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use weft::bundled::paths;
use weft::capability::hosts::HostPattern;
use weft::capability::http::HttpPolicy;
use weft::engine::Grants;

fn main() -> Result<()> {
    let iterations: usize = std::env::var("WEFT_BENCH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let python = polyglot("fetch-json")?;
    let js = polyglot("summarize")?;
    let scratch = tempfile::tempdir()?;
    let local = target::Target::start(scratch.path());

    let rt = common::runtime();
    warm_steps(&rt, &local, &python, &js, iterations)?;
    rt.block_on(publishing(&local, &python, &js))
}

/// The example built by `scripts/polyglot.sh` (a no-op when up to date).
fn polyglot(name: &str) -> Result<PathBuf> {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .context("target dir")?
        .to_path_buf();
    let status = std::process::Command::new(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/polyglot.sh"),
    )
    .env("CARGO_TARGET_DIR", &target)
    .status()?;
    ensure!(status.success(), "scripts/polyglot.sh failed");
    Ok(target.join("polyglot").join(format!("{name}.wasm")))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn warm_steps(
    rt: &tokio::runtime::Runtime,
    local: &target::Target,
    python: &Path,
    js: &Path,
    iterations: usize,
) -> Result<()> {
    let node = common::Node::new();
    let limits = common::limits();
    let cancel = CancellationToken::new();
    let host = format!("127.0.0.1:{}", local.port);
    let pattern = HostPattern::parse(&host).map_err(anyhow::Error::msg)?;
    let grants = Grants {
        http: HttpPolicy {
            tenant: vec![pattern.clone()].into(),
            step: vec![pattern],
            max_requests: 50,
            max_response_bytes: 10 << 20,
        },
        secrets: Default::default(),
    };
    println!(
        "| example | size | no network p50 / p99 | one request p50 / p99 | one request costs (p50) |"
    );
    println!("|---|---|---|---|---|");
    let examples = [
        ("Rust `fetch`", PathBuf::from(paths::FETCH), "/json"),
        ("Python `fetch-json`", python.to_path_buf(), "/json"),
        ("JavaScript `summarize`", js.to_path_buf(), "/text"),
    ];
    for (name, path, route) in examples {
        let digest = rt.block_on(node.add(path.to_str().context("path")?));
        let with_request = json!({"url": local.url(route)}).to_string();
        let mut figures = Vec::new();
        for (input, ok) in [("{}", false), (with_request.as_str(), true)] {
            let mut times = Vec::with_capacity(iterations);
            for i in 0..iterations + 10 {
                let started = Instant::now();
                let execution = rt.block_on(async {
                    let linked = node
                        .cache
                        .get(&digest, async { Ok(None) })
                        .await
                        .expect("cache hit");
                    node.cache
                        .engine()
                        .run(
                            &linked,
                            common::invocation(),
                            input,
                            &limits,
                            grants.clone(),
                            &cancel,
                        )
                        .await
                });
                let took = started.elapsed();
                match (&execution.result, ok) {
                    (Ok(_), true) => {}
                    (Err(f), false) if f.code == "bad_input" => {}
                    (other, _) => anyhow::bail!("{name} with {input}: {other:?}"),
                }
                if i >= 10 {
                    times.push(took);
                }
            }
            times.sort();
            figures.push((percentile(&times, 0.5), percentile(&times, 0.99)));
        }
        let size = std::fs::metadata(&path)?.len();
        println!(
            "| {name} | {:.1} MiB | {} / {} | {} / {} | {} |",
            size as f64 / (1 << 20) as f64,
            ms(figures[0].0),
            ms(figures[0].1),
            ms(figures[1].0),
            ms(figures[1].1),
            ms(figures[1].0.saturating_sub(figures[0].0)),
        );
    }
    Ok(())
}

async fn publishing(local: &target::Target, python: &Path, js: &Path) -> Result<()> {
    let cache = tempfile::tempdir()?;
    let node = server::Server::start_with(&["--cache-dir", cache.path().to_str().context("dir")?])?;
    let api = server::Api::new(&node).await?;
    let base = format!("http://{}", node.addr);
    let http = reqwest::Client::new();
    let host = format!("127.0.0.1:{}", local.port);
    let limits = http
        .put(format!("{base}/v1/tenants/default/limits"))
        .bearer_auth(node.admin_token())
        .json(&json!({"allowed_hosts": [host]}))
        .send()
        .await?;
    ensure!(limits.status().is_success(), "limits: {}", limits.status());
    let compiles = || async {
        let text = api.metrics().await?;
        Ok::<f64, anyhow::Error>(metric(&text, "weft_component_cache_compiles_total"))
    };
    // The bundled examples compile in the background after the first start.
    let examples = weft::bundled::EXAMPLES.len() as f64;
    let deadline = Instant::now() + Duration::from_secs(300);
    while compiles().await? < examples {
        ensure!(
            Instant::now() < deadline,
            "the bundled examples did not compile"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    println!();
    println!("| publish | size | answered in |");
    println!("|---|---|---|");
    for (name, path) in [("fetch-json", python), ("summarize", js)] {
        let bytes = std::fs::read(path)?;
        let size = bytes.len();
        let (status, took, text) = publish(&http, &base, &api.key, name, "1.0.0", bytes).await?;
        ensure!(status == 201, "publish {name}: {status} {text}");
        println!(
            "| {name} | {:.1} MiB | {} |",
            size as f64 / (1 << 20) as f64,
            ms(took)
        );
        // Let its background compile end before the next one is measured.
        let want = compiles().await? + 1.0;
        while compiles().await? < want {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    let bytes = std::fs::read(paths::BADIMPORT)?;
    let (status, took, text) = publish(&http, &base, &api.key, "badimport", "1.0.0", bytes).await?;
    println!(
        "| badimport (imports `other:thing/kv`) | refused {status} | {} |",
        ms(took)
    );
    println!("\n{text}");

    // A fresh version (other bytes) of the Python example: its first runs
    // all wait for the one background compile.
    // A custom section at the end keeps it valid: id 0, size, name.
    let mut bytes = std::fs::read(python)?;
    let name = b"weft-bench";
    bytes.extend_from_slice(&[0, (name.len() + 1) as u8, name.len() as u8]);
    bytes.extend_from_slice(name);
    let before = compiles().await?;
    let (status, _, text) = publish(&http, &base, &api.key, "fetch-json", "2.0.0", bytes).await?;
    ensure!(status == 201, "publish 2.0.0: {status} {text}");
    let doc = json!({"workflow": {"steps": [{"id": "f", "component": "fetch-json@2", "input": {"url": local.url("/json")}, "http": {"allow": [host]}}]}});
    let started = Instant::now();
    let mut ids = Vec::new();
    let submits = (0..20).map(|_| {
        http.post(format!("{base}/v1/runs"))
            .bearer_auth(&api.key)
            .json(&doc)
            .send()
    });
    for answer in futures::future::join_all(submits).await {
        let answer: Value = answer?.json().await?;
        ids.push(answer["id"].as_str().context("id")?.to_string());
    }
    for id in &ids {
        loop {
            let run: Value = http
                .get(format!("{base}/v1/runs/{id}"))
                .bearer_auth(&api.key)
                .send()
                .await?
                .json()
                .await?;
            match run["status"].as_str() {
                Some("succeeded") => break,
                Some("failed" | "cancelled") => anyhow::bail!("a first run failed: {run}"),
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
    let took = started.elapsed();
    let caused = compiles().await? - before;
    println!();
    println!(
        "20 first runs of a fresh Python component: all succeeded {} after the first submit; compiles caused: {caused}",
        ms(took)
    );
    Ok(())
}

/// `PUT /v1/components/{name}/{version}` of `bytes`: status, time to the answer, body.
async fn publish(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    name: &str,
    version: &str,
    bytes: Vec<u8>,
) -> Result<(reqwest::StatusCode, Duration, String)> {
    let started = Instant::now();
    let answer = http
        .put(format!("{base}/v1/components/{name}/{version}"))
        .bearer_auth(key)
        .header("content-type", "application/wasm")
        .body(bytes)
        .send()
        .await?;
    let took = started.elapsed();
    let status = answer.status();
    Ok((status, took, answer.text().await?))
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
