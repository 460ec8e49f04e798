//! 10,000 runs in flight at once on one node with a Redis backend: each run is
//! one step that sleeps 1 s, the node keeps its default concurrency (64), so
//! most runs wait in the queue. Reports the node's peak RSS and Redis's bytes
//! per run, and checks that every run finishes.
//!
//! `cargo bench -p weft --bench inflight` (`WEFT_BENCH_RUNS` changes the count).

#[path = "../tests/api/http.rs"]
mod http;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use weft::testing::RedisServer;

const ADMIN: &str = "bench-admin";

struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn redis_memory(redis: &RedisServer) -> u64 {
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let info: String = redis::cmd("INFO").arg("memory").query(&mut conn).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:")?.trim().parse().ok())
        .unwrap()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runs: usize = std::env::var("WEFT_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "everysec"]);
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", weft::testing::free_port());
    let node = Node(
        Command::new(env!("CARGO_BIN_EXE_weft"))
            .args(["serve", "--listen", &addr, "--admin-token", ADMIN])
            .args(["--redis", &redis.url()])
            .arg("--data-dir")
            .arg(dir.path())
            .env("WEFT_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start weft serve"),
    );
    let pid = node.0.id();
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::net::TcpStream::connect(&addr).is_err()
        || http::get(&addr, "/healthz", "").status != 200
    {
        assert!(Instant::now() < deadline, "weft serve did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let key = std::fs::read_to_string(dir.path().join("api-key"))
        .unwrap()
        .trim()
        .to_string();
    let limits = http::request(
        &addr,
        "PUT",
        "/v1/tenants/default/limits",
        ADMIN,
        Some((
            "application/json",
            br#"{"runs_per_second": 1000000, "concurrent_runs": 1000000}"#,
        )),
    );
    assert_eq!(limits.status, 200);
    let rss_idle = status_kb(pid, "VmRSS:");
    let redis_before = redis_memory(&redis);

    let body = json!({"workflow": {"steps": [{"id": "nap", "component": "sleep@1", "input": {"ms": 1000}}]}});
    let started = Instant::now();
    let mut peak_rss = 0;
    for i in 0..runs {
        let reply = http::post_json(&addr, "/v1/runs", &key, &body);
        assert_eq!(reply.status, 202, "run {i}: {:?}", reply.body);
        if i % 500 == 0 {
            peak_rss = peak_rss.max(status_kb(pid, "VmRSS:"));
        }
    }
    let submitted = started.elapsed();
    let redis_in_flight = redis_memory(&redis);
    let cluster = http::get(&addr, "/v1/cluster", ADMIN).body;
    eprintln!(
        "submitted {runs} runs in {submitted:.1?}; queue: {}",
        cluster["queues"][0]
    );

    // Wait for all of them, watching the node's memory.
    loop {
        peak_rss = peak_rss.max(status_kb(pid, "VmRSS:"));
        let metrics = http::get(&addr, "/metrics", "").body;
        let done = http::metric(
            metrics.as_str().unwrap_or(""),
            "weft_runs_finished_total{status=\"succeeded\"}",
        )
        .unwrap_or(0.0);
        if done as usize >= runs {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30 + runs as u64 / 20),
            "only {done} of {runs} runs finished"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let finished = started.elapsed();
    let redis_after = redis_memory(&redis);
    let hwm = status_kb(pid, "VmHWM:");
    println!("| runs in flight | {runs} (one 1 s step each, concurrency 64) |");
    println!("| submitted in | {submitted:.1?} |");
    println!("| all succeeded after | {finished:.1?} |");
    println!(
        "| node RSS idle / peak (sampled) / high-water mark | {} / {} / {} MiB |",
        rss_idle / 1024,
        peak_rss / 1024,
        hwm / 1024
    );
    println!(
        "| Redis bytes per run in flight | {} |",
        redis_in_flight.saturating_sub(redis_before) / runs as u64
    );
    println!(
        "| Redis bytes per finished run (kept for the retention period) | {} |",
        redis_after.saturating_sub(redis_before) / runs as u64
    );
}
