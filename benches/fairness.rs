//! Fair share between tenants, end to end: the release `weft` binary in
//! processes of its own, driven over HTTP like any client.
//!
//! Per configuration (`embedded` one node on its file store, `redis-1` one
//! node on a redis-server of its own, `redis-2` two nodes on one; the
//! embedded store has one writer, so it has no two-node form):
//!
//! - **B idle**: tenant B submits a 3-step chain of no-op steps every 20 ms
//!   for 5 s; each run's latency is the client's time from `POST /v1/runs`
//!   to a poll (every 5 ms) of `GET /v1/runs/{id}` seeing it succeeded.
//! - **A alone**: tenant A submits one fan-out of 20,000 no-op steps (19,999
//!   independent steps and a join), followed on `GET /v1/runs/{id}/events`
//!   to its end; its throughput is 20,000 steps over that time.
//! - **A with B**: the same fan-out of A, with B submitting its chain every
//!   20 ms from A's submission to A's end.
//! - **Weights 3:1**: tenant L (weight 1) submits a fan-out of 8,000 steps,
//!   then tenant H (weight 3) one as large; from the step times the runs
//!   record, H's share is H's steps over both tenants' steps finished while
//!   H's independent steps ran (first start to last finish).
//!
//! With two nodes A and H submit to the second node, B and L to the first.
//! Each part is measured `WEFT_FAIR_RUNS` times (3) after a warm-up; each
//! measurement and the medians are printed, with the targets of the
//! fairness acceptance: B's p99 during A at most 2 × its idle p99 + 20 ms and
//! its max at most 250 ms, A's throughput within 10% of alone, H's share
//! 75% ± 5.
//!
//! `cargo bench -p weft --bench fairness [embedded|redis-1|redis-2]`;
//! `WEFT_FAIR_FANOUT` (20000), `WEFT_FAIR_WEIGHTED` (8000).

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
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use bytes::Bytes;
use serde_json::{Value, json};

use client::{Client, Shape, Wait};
use server::Server;

const EVERY: Duration = Duration::from_millis(20);
const IDLE_FOR: Duration = Duration::from_secs(5);

fn main() -> Result<()> {
    let var = |name: &str, default: usize| -> Result<usize> {
        match std::env::var(name) {
            Ok(v) => v.parse().with_context(|| format!("{name}={v:?}")),
            Err(_) => Ok(default),
        }
    };
    let settings = Settings {
        fanout: var("WEFT_FAIR_FANOUT", 20_000)?,
        weighted: var("WEFT_FAIR_WEIGHTED", 8_000)?,
        runs: var("WEFT_FAIR_RUNS", 3)?,
    };
    let chosen: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!(
        "fan-out of {} for A, 3-step chains every {} ms for B, {} runs; weights 3:1 on fan-outs of {}",
        settings.fanout,
        EVERY.as_millis(),
        settings.runs,
        settings.weighted
    );
    let mut rows = Vec::new();
    for config in ["embedded", "redis-1", "redis-2"] {
        if chosen.is_empty() || chosen.iter().any(|c| c == config) {
            rows.push((config, rt.block_on(measure(config, &settings))?));
        }
    }
    println!();
    println!(
        "| configuration | B idle p50 / p99 / max | B during A p50 / p99 / max | target p99, max | A alone | A with B | A ratio | H share (3:1) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (config, m) in rows {
        println!(
            "| {config} | {:.1} / {:.1} / {:.1} ms | {:.1} / {:.1} / {:.1} ms | ≤ {:.1} ms, ≤ 250 ms | {:.0} steps/s | {:.0} steps/s | {:.3} | {:.1}% |",
            m.idle.p50,
            m.idle.p99,
            m.idle.max,
            m.during.p50,
            m.during.p99,
            m.during.max,
            2.0 * m.idle.p99 + 20.0,
            m.alone,
            m.with_b,
            m.ratio,
            m.share * 100.0
        );
    }
    Ok(())
}

struct Settings {
    fanout: usize,
    weighted: usize,
    runs: usize,
}

/// Latency figures of B's runs, in milliseconds.
#[derive(Debug, Clone, Copy)]
struct Latency {
    p50: f64,
    p99: f64,
    max: f64,
}

impl Latency {
    fn of(mut ms: Vec<f64>) -> Self {
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
        Self {
            p50: at(0.5),
            p99: at(0.99),
            max: *ms.last().unwrap(),
        }
    }
}

/// The medians of one configuration.
struct Measured {
    idle: Latency,
    during: Latency,
    alone: f64,
    with_b: f64,
    /// The median of each run's A-with-B over A-alone.
    ratio: f64,
    share: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The nodes of a configuration, and Redis when it has one (dropped last).
struct Setup {
    nodes: Vec<Server>,
    _redis: Option<weft::testing::RedisServer>,
}

impl Setup {
    fn start(config: &str) -> Result<Self> {
        let redis = (config != "embedded").then(weft::testing::RedisServer::start);
        let count = if config == "redis-2" { 2 } else { 1 };
        let mut nodes = Vec::new();
        for _ in 0..count {
            nodes.push(match &redis {
                Some(r) => Server::start_with(&["--redis", &r.url()])?,
                None => Server::start()?,
            });
        }
        Ok(Self {
            nodes,
            _redis: redis,
        })
    }

    /// The node a heavy tenant submits to (the last) and a light one's (the first).
    fn heavy(&self) -> &Server {
        self.nodes.last().unwrap()
    }

    fn light(&self) -> &Server {
        &self.nodes[0]
    }
}

async fn measure(config: &str, settings: &Settings) -> Result<Measured> {
    let setup = Setup::start(config)?;
    for node in &setup.nodes {
        let deadline = Instant::now() + Duration::from_secs(180);
        while !client::healthy(&node.addr.to_string()) {
            ensure!(Instant::now() < deadline, "a node did not start in 180 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let admin = Admin::new(setup.light());
    let a = admin.tenant("a", setup.heavy(), 1).await?;
    let b = admin.tenant("b", setup.light(), 1).await?;
    let h = admin.tenant("h", setup.heavy(), 3).await?;
    let l = admin.tenant("l", setup.light(), 1).await?;
    let b = Arc::new(b);
    let chain = body(&client::workflow(Shape::Chain, 3));
    let fanout = body(&client::workflow(Shape::FanOut, settings.fanout - 1));
    let weighted = body(&client::workflow(Shape::FanOut, settings.weighted - 1));

    // Warm-up: compiled components, connections, the store.
    b.run(chain.clone(), Wait::Poll(Duration::from_millis(5)))
        .await?;
    a.run(body(&client::workflow(Shape::FanOut, 999)), Wait::Events)
        .await?;

    let (mut idle, mut during, mut alone, mut with_b, mut shares, mut ratios) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for round in 1..=settings.runs {
        let lat = b_every(b.clone(), chain.clone(), Stop::After(IDLE_FOR)).await?;
        let idle_now = Latency::of(lat.iter().map(|l| l.1).collect());

        let (_, took) = a.run(fanout.clone(), Wait::Events).await?;
        let alone_now = settings.fanout as f64 / took.as_secs_f64();

        let stop = Arc::new(tokio::sync::Notify::new());
        let bs = tokio::spawn(b_every(b.clone(), chain.clone(), Stop::On(stop.clone())));
        let (_, took) = a.run(fanout.clone(), Wait::Events).await?;
        stop.notify_one();
        let b_runs = bs.await??;
        let mut slowest = b_runs.clone();
        slowest.sort_by(|a, b| b.1.total_cmp(&a.1));
        let shown: Vec<String> = slowest
            .iter()
            .take(3)
            .map(|(at, ms)| format!("{ms:.0} ms at +{at:.0} ms"))
            .collect();
        println!(
            "[{config}] run {round}: B's slowest during A: {}",
            shown.join(", ")
        );
        let during_now = Latency::of(b_runs.iter().map(|l| l.1).collect());
        let with_b_now = settings.fanout as f64 / took.as_secs_f64();

        let share = weights(&h, &l, &weighted).await?;
        println!(
            "[{config}] run {round}: B idle p50 {:.1} p99 {:.1} max {:.1} ms; B during A p50 {:.1} p99 {:.1} max {:.1} ms; A alone {:.0} steps/s, with B {:.0} steps/s; H's share {:.1}%",
            idle_now.p50,
            idle_now.p99,
            idle_now.max,
            during_now.p50,
            during_now.p99,
            during_now.max,
            alone_now,
            with_b_now,
            share * 100.0
        );
        idle.push(idle_now);
        during.push(during_now);
        alone.push(alone_now);
        with_b.push(with_b_now);
        ratios.push(with_b_now / alone_now);
        shares.push(share);
    }
    let med = |v: &[Latency], f: fn(&Latency) -> f64| median(v.iter().map(f).collect());
    Ok(Measured {
        idle: Latency {
            p50: med(&idle, |l| l.p50),
            p99: med(&idle, |l| l.p99),
            max: med(&idle, |l| l.max),
        },
        during: Latency {
            p50: med(&during, |l| l.p50),
            p99: med(&during, |l| l.p99),
            max: med(&during, |l| l.max),
        },
        alone: median(alone),
        with_b: median(with_b),
        ratio: median(ratios),
        share: median(shares),
    })
}

fn body(workflow: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(&json!({ "workflow": workflow, "input": {} })).unwrap())
}

enum Stop {
    After(Duration),
    On(Arc<tokio::sync::Notify>),
}

/// B's chain every 20 ms until `stop`, each watched by polling; returns
/// when each was submitted (from the start) and its latency, in milliseconds.
async fn b_every(b: Arc<Client>, chain: Bytes, stop: Stop) -> Result<Vec<(f64, f64)>> {
    let started = Instant::now();
    let mut ticks = tokio::time::interval(EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut runs = Vec::new();
    let stopped = async {
        match &stop {
            Stop::After(d) => tokio::time::sleep(*d).await,
            Stop::On(n) => n.notified().await,
        }
    };
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = &mut stopped => break,
        }
        let (b, chain) = (b.clone(), chain.clone());
        let at = started.elapsed().as_secs_f64() * 1000.0;
        runs.push((
            at,
            tokio::spawn(async move { b.run(chain, Wait::Poll(Duration::from_millis(5))).await }),
        ));
    }
    let mut ms = Vec::with_capacity(runs.len());
    for (at, run) in runs {
        let (_, took) = run.await??;
        ms.push((at, took.as_secs_f64() * 1000.0));
    }
    ensure!(
        !ms.is_empty(),
        "B submitted nothing in {:?}",
        started.elapsed()
    );
    Ok(ms)
}

/// L (weight 1) submits a fan-out, then H (weight 3) one as large: H's
/// share of the steps both finished while H's independent steps ran (from
/// the first of them starting to the last finishing, by the times the runs
/// record), read once both runs have ended.
async fn weights(h: &Client, l: &Client, body: &Bytes) -> Result<f64> {
    let lid = l.submit(body.clone()).await?;
    let hid = h.submit(body.clone()).await?;
    h.wait_ended(&hid).await?;
    l.wait_ended(&lid).await?;
    let times = |run: &Value, field: &str| -> Result<Vec<u64>> {
        run["steps"]
            .as_object()
            .context("no steps")?
            .iter()
            .filter(|(id, _)| *id != "join")
            .map(|(_, s)| millis(&s[field]))
            .collect()
    };
    let (hrun, lrun) = (h.get_run(&hid).await?, l.get_run(&lid).await?);
    let from = *times(&hrun, "started_at")?
        .iter()
        .min()
        .context("no steps")?;
    let to = *times(&hrun, "finished_at")?
        .iter()
        .max()
        .context("no steps")?;
    let within = |t: &u64| (from..=to).contains(t);
    let hn = times(&hrun, "finished_at")?
        .iter()
        .filter(|t| within(t))
        .count();
    let ln = times(&lrun, "finished_at")?
        .iter()
        .filter(|t| within(t))
        .count();
    ensure!(
        times(&lrun, "finished_at")?.iter().any(|t| *t > to),
        "L's run ended before H's steps did: the share is not measured"
    );
    Ok(hn as f64 / (hn + ln) as f64)
}

fn millis(at: &Value) -> Result<u64> {
    let at = humantime::parse_rfc3339_weak(at.as_str().context("no time")?)?;
    Ok(at.duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64)
}

/// The admin of a cluster, creating tenants that can run `noop@1`.
struct Admin {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Admin {
    fn new(node: &Server) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: format!("http://{}", node.addr),
            token: node.admin_token().to_string(),
        }
    }

    /// Creates tenant `name` of `weight` with room for the benchmark, publishes
    /// `noop@1.0.0` for it, and returns its client on `node`.
    async fn tenant(&self, name: &str, node: &Server, weight: u32) -> Result<Client> {
        let created: Value = self
            .http
            .post(format!("{}/v1/tenants", self.base))
            .bearer_auth(&self.token)
            .json(&json!({ "name": name, "limits": {
                "runs_per_second": 1_000_000, "concurrent_runs": 1_000_000,
                "steps_per_run": 100_000, "weight": weight
            } }))
            .send()
            .await?
            .json()
            .await?;
        let key = created["api_key"]
            .as_str()
            .with_context(|| format!("creating tenant {name}: {created}"))?;
        let noop = std::fs::read(weft::bundled::paths::NOOP)?;
        let published = self
            .http
            .put(format!("{}/v1/components/noop/1.0.0", self.base))
            .bearer_auth(key)
            .header(reqwest::header::CONTENT_TYPE, "application/wasm")
            .body(noop)
            .send()
            .await?;
        ensure!(
            published.status().is_success(),
            "publishing noop for {name}: {}",
            published.status()
        );
        Client::new(&node.addr.to_string(), key)
    }
}
