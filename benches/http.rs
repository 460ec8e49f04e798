//! End-to-end HTTP load on `weft serve`: the real binary in its own process on
//! a free loopback port, driven from this process by 100 keep-alive HTTP/1.1
//! connections that each send requests back to back. Two scenarios, each
//! measured three times:
//!
//! - `get_run`: `GET /v1/runs/{id}` of a finished one-step run (200 expected);
//! - `post_run`: `POST /v1/runs` of a one-step `noop` workflow (202 expected).
//!
//! Each measurement opens its connections, warms up for 2 s, then counts the
//! answers that arrive in a window of 10 s (`WEFT_BENCH_SECS` overrides it).
//! It prints requests/s, p50 and p99 latency, unexpected answers, and the CPU
//! time the server, this client and the rest of the machine spent. Arguments
//! that do not start with `-` select scenarios by name.
//!
//! Also: `WEFT_BENCH_CONNECTIONS` (default 100) and `WEFT_BENCH_CLIENT_THREADS`
//! (the client's tokio worker threads, default one per CPU). The client costs
//! the same CPU per request on one thread as on two, but on one it serialises
//! with the server on a 2-CPU machine and both rates come out lower.

#[path = "http/load.rs"]
mod load;
// CPU time from /proc, shared with the end-to-end benchmark.
#[path = "e2e/machine.rs"]
#[allow(dead_code)]
mod machine;
#[path = "http/report.rs"]
mod report;
#[path = "http/server.rs"]
mod server;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use bytes::Bytes;
use hyper::{Method, StatusCode};

use load::{Load, Template};
use server::{Api, Server};

/// Measurements per scenario.
const RUNS: usize = 3;
/// Before each measured window.
const WARM_UP: Duration = Duration::from_secs(2);
const ONE_STEP_RUN: &str =
    r#"{"workflow":{"steps":[{"id":"a","component":"noop@1.0.0"}]},"input":{}}"#;

fn main() -> Result<()> {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let selected = |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f));
    let settings = Settings::from_env()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.client_threads)
        .enable_all()
        .build()?;

    let server = Server::start()?;
    let api = rt.block_on(Api::new(&server))?;
    println!(
        "weft serve (pid {}) on {}; {} connections, {} s warm-up, {} s measured, {RUNS} runs each, client on {} thread(s)\n",
        server.pid(),
        server.addr,
        settings.connections,
        WARM_UP.as_secs(),
        settings.measured.as_secs_f64(),
        settings.client_threads,
    );
    report::header();

    let mut reports = Vec::new();
    if selected("get_run") {
        let id = rt.block_on(api.finished_run(ONE_STEP_RUN))?;
        let load = Load {
            label: "GET /v1/runs/{id}",
            target: 20_000.0,
            expected: StatusCode::OK,
            template: Arc::new(Template::new(
                &api,
                Method::GET,
                &format!("/v1/runs/{id}"),
                None,
            )?),
        };
        reports.push(load.repeat(&rt, &server, &settings, &api)?);
    }
    if selected("post_run") {
        let body = Bytes::from_static(ONE_STEP_RUN.as_bytes());
        let load = Load {
            label: "POST /v1/runs",
            target: 3_000.0,
            expected: StatusCode::ACCEPTED,
            template: Arc::new(Template::new(&api, Method::POST, "/v1/runs", Some(body))?),
        };
        reports.push(load.repeat(&rt, &server, &settings, &api)?);
    }

    println!();
    report::table(&reports);
    let metrics = rt.block_on(api.metrics())?;
    let runs: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("weft_runs_"))
        .collect();
    println!("server: {}", runs.join(", "));
    Ok(())
}

/// What the environment may change.
pub struct Settings {
    pub measured: Duration,
    pub connections: usize,
    pub client_threads: usize,
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
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let secs: f64 = var("WEFT_BENCH_SECS", 10.0)?;
        ensure!(secs > 0.0, "WEFT_BENCH_SECS must be positive");
        let settings = Self {
            measured: Duration::from_secs_f64(secs),
            connections: var("WEFT_BENCH_CONNECTIONS", 100)?,
            client_threads: var("WEFT_BENCH_CLIENT_THREADS", cpus)?,
        };
        ensure!(
            settings.connections > 0 && settings.client_threads > 0,
            "need at least one connection and one thread"
        );
        Ok(settings)
    }
}
