//! The web console against a running 5,000-step fan-out, end to end: the
//! release `weft` binary, Debian's chromium driven by Playwright
//! (`tests/ui/bench.mjs`), and this client.
//!
//! - **Throughput without the page / with the page**: a fan-out of
//!   `WEFT_CONSOLE_FANOUT` (5,000) no-op steps and a join, submitted to start
//!   2 s later so that the page is open (its graph drawn, its event stream
//!   followed) before the first step; steps over the server's own
//!   `finished_at - started_at`. Rounds alternate without and with the page,
//!   `WEFT_CONSOLE_RUNS` (7) of each after a warm-up.
//! - **Click to drawer**: with the page on a fan-out of 5,000 steps that
//!   sleep 100 ms each (about 8 s of work at 64 steps at once), 20 steps
//!   across the graph are clicked while the run goes on; each time is from
//!   the click to the drawer showing that step (Playwright's wall clock, so
//!   it includes its own round trips).
//!
//! Medians are printed with the targets (click to drawer under 500 ms, a
//! throughput drop of at most 5% with the page open), and every measurement.
//!
//! `cargo bench -p weft --bench console`; on the embedded backend, or on a
//! redis-server of its own with `WEFT_BENCH_BACKEND=redis`. On a machine of
//! few cores the browser takes CPU from the server; `WEFT_CONSOLE_PIN=1` puts
//! the server on CPU 0 alone and the browser and this client on CPU 1.

#[path = "e2e/client.rs"]
#[allow(dead_code)]
mod client;
#[path = "e2e/machine.rs"]
#[allow(dead_code)]
mod machine;
#[path = "http/server.rs"]
#[allow(dead_code)]
mod server;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use serde_json::{Value, json};

use client::{Client, Shape};
use server::{Api, Server};

const CLICKS: usize = 20;
/// How long after its submission a measured run starts: time for the page to open it.
const DELAY_MS: u64 = 2_000;

fn main() -> Result<()> {
    // reqwest is built without a TLS provider of its own; this client speaks
    // plain HTTP, but building one needs a provider installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let var = |name: &str, default: usize| -> Result<usize> {
        match std::env::var(name) {
            Ok(v) => v.parse().with_context(|| format!("{name}={v:?}")),
            Err(_) => Ok(default),
        }
    };
    let fanout = var("WEFT_CONSOLE_FANOUT", 5_000)?;
    let runs = var("WEFT_CONSOLE_RUNS", 7)?;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .context("the target directory")?
        .to_path_buf();
    let status = Command::new(repo.join("scripts/ui-test-deps.sh"))
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .context("running scripts/ui-test-deps.sh")?;
    ensure!(status.success(), "scripts/ui-test-deps.sh failed: {status}");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let (_redis, server) = server::start_on_bench_backend(&[])?;
    // With WEFT_CONSOLE_PIN=1 the server has CPU 0 to itself and the
    // browser and this client share CPU 1, so that what the page costs the
    // server is not mixed with what the browser takes from the machine.
    let pinned = std::env::var("WEFT_CONSOLE_PIN").is_ok_and(|v| v == "1");
    if pinned {
        pin(server.pid(), "0")?;
        pin(std::process::id(), "1")?;
    }
    let api = rt.block_on(Api::new(&server))?;
    let client = Client::new(&server.addr.to_string(), &api.key)?;
    let mut browser = Browser::start(&repo, &target, &server, &api.key)?;
    println!(
        "fan-out of {fanout} no-op steps + join, {runs} rounds without and with the page; \
         {CLICKS} clicks on a fan-out of {fanout} 100 ms steps; {}",
        if pinned {
            "the server on CPU 0, the browser and the client on CPU 1"
        } else {
            "the server, the browser and the client sharing both CPUs"
        }
    );

    let noop = body(&client::workflow(Shape::FanOut, fanout), DELAY_MS);
    // Warm-up: components compiled and cached, the page's code loaded.
    let warm = rt.block_on(client.submit(noop.clone()))?;
    browser.ask(&format!("open {warm}"), "opened")?;
    rt.block_on(throughput(&client, &warm, fanout + 1))?;
    browser.ask("blank", "blank")?;

    let (mut without, mut with) = (Vec::new(), Vec::new());
    // CPU of the server and of everything else (the browser, this client),
    // in ms, from just before each run starts until it has ended.
    let (mut server_cpu, mut rest_cpu) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
    for round in 1..=runs {
        let id = rt.block_on(client.submit(noop.clone()))?;
        let cpu = Cpu::start(&server);
        let alone = rt.block_on(throughput(&client, &id, fanout + 1))?;
        let (s, r) = cpu.stop(&server);
        println!(
            "round {round}: without the page {alone:.0} steps/s; CPU: server {s:.0} ms, the rest {r:.0} ms"
        );
        without.push(alone);
        server_cpu[0].push(s);
        rest_cpu[0].push(r);

        let id = rt.block_on(client.submit(noop.clone()))?;
        let drawn = browser.ask(&format!("open {id}"), "opened")?;
        if drawn.parse::<f64>().unwrap_or(f64::MAX) > DELAY_MS as f64 {
            println!("warning: the page took {drawn} ms to open, longer than the run's delay");
        }
        let cpu = Cpu::start(&server);
        let open = rt.block_on(throughput(&client, &id, fanout + 1))?;
        let (s, r) = cpu.stop(&server);
        println!(
            "round {round}: with the page {open:.0} steps/s; CPU: server {s:.0} ms, the rest {r:.0} ms \
             (graph drawn in {drawn} ms)"
        );
        with.push(open);
        server_cpu[1].push(s);
        rest_cpu[1].push(r);
        browser.ask("blank", "blank")?;
    }

    let sleepy = sleep_fanout(fanout);
    let id = rt.block_on(client.submit(body(&sleepy, DELAY_MS)))?;
    browser.ask(&format!("open {id}"), "opened")?;
    let clicks = browser.clicks(&id, CLICKS)?;
    let run = rt.block_on(client.get_run(&id))?;
    println!(
        "clicks: {} ms (the run was {} when they ended)",
        clicks
            .iter()
            .map(|c| format!("{c:.0}"))
            .collect::<Vec<_>>()
            .join(", "),
        run["status"].as_str().unwrap_or("?")
    );
    browser.quit()?;

    let (alone, open) = (median(without), median(with));
    let drop = (1.0 - open / alone) * 100.0;
    let click = median(clicks.clone());
    let worst = clicks.iter().copied().fold(0.0, f64::max);
    println!();
    println!("| measure | median | target |");
    println!("|---|---|---|");
    println!(
        "| click to drawer, 5,000-step run going on | {click:.0} ms (max {worst:.0} ms) | < 500 ms |"
    );
    println!("| steps/s without the page | {alone:.0} | |");
    println!("| steps/s with the page open | {open:.0} | |");
    println!("| drop with the page open | {drop:.1}% | ≤ 5% |");
    let [s0, s1] = server_cpu.map(median);
    let [r0, r1] = rest_cpu.map(median);
    println!(
        "| server CPU per run, without / with the page | {s0:.0} / {s1:.0} ms ({:+.1}%) | |",
        (s1 / s0 - 1.0) * 100.0
    );
    println!("| CPU of all else during a run, without / with the page | {r0:.0} / {r1:.0} ms | |");
    Ok(())
}

/// A run request for `workflow`, to start `delay_ms` from now.
fn body(workflow: &Value, delay_ms: u64) -> Bytes {
    Bytes::from(serde_json::to_vec(&json!({"workflow": workflow, "delay_ms": delay_ms})).unwrap())
}

/// `steps` steps that sleep 100 ms each, and a join.
fn sleep_fanout(steps: usize) -> Value {
    let mut list: Vec<Value> = (0..steps)
        .map(|i| json!({"id": format!("s{i}"), "component": "sleep@1", "input": {"ms": 100}}))
        .collect();
    let all: Vec<String> = (0..steps).map(|i| format!("s{i}")).collect();
    list.push(json!({"id": "join", "component": "noop@1", "needs": all}));
    json!({"name": "sleepy", "steps": list})
}

/// Waits for run `id` to end and returns its steps per second, from the
/// server's `started_at` and `finished_at`.
async fn throughput(client: &Client, id: &str, steps: usize) -> Result<f64> {
    client.wait_ended(id).await?;
    let run = client.get_run(id).await?;
    ensure!(run["status"] == "succeeded", "run {id}: {}", run["status"]);
    let time = |field: &str| -> Result<SystemTime> {
        let text = run[field].as_str().context(format!("no {field}"))?;
        Ok(humantime::parse_rfc3339_weak(text)?)
    };
    let took = time("finished_at")?
        .duration_since(time("started_at")?)
        .unwrap_or_default();
    ensure!(took > Duration::ZERO, "run {id} took no time");
    Ok(steps as f64 / took.as_secs_f64())
}

/// Sets the CPUs every thread of process `pid` may run on (`taskset`);
/// threads it starts later inherit them, and so do its children.
fn pin(pid: u32, cpus: &str) -> Result<()> {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .context("running taskset")?;
    ensure!(status.success(), "taskset -c {cpus} {pid}: {status}");
    Ok(())
}

/// CPU time spent from `start` on, by the server and by the rest of the machine.
struct Cpu {
    server: Duration,
    machine: Duration,
}

impl Cpu {
    fn start(server: &Server) -> Self {
        Self {
            server: server.cpu(),
            machine: machine::machine_cpu(),
        }
    }

    /// (server, the rest) in milliseconds.
    fn stop(self, server: &Server) -> (f64, f64) {
        let ours = server.cpu().saturating_sub(self.server);
        let all = machine::machine_cpu().saturating_sub(self.machine);
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        (ms(ours), ms(all.saturating_sub(ours)))
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `node tests/ui/bench.mjs`, spoken to a line at a time.
struct Browser {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Browser {
    fn start(repo: &Path, target: &Path, server: &Server, key: &str) -> Result<Self> {
        let mut child = Command::new("node")
            .arg(repo.join("tests/ui/bench.mjs"))
            .env("WEFT_URL", format!("http://{}", server.addr))
            .env("WEFT_API_KEY", key)
            .env("CARGO_TARGET_DIR", target)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting node tests/ui/bench.mjs")?;
        let stdin = child.stdin.take().context("stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("stdout")?);
        let mut browser = Self {
            child,
            stdin,
            stdout,
        };
        browser.expect("ready")?;
        Ok(browser)
    }

    /// The next line the script prints.
    fn line(&mut self) -> Result<String> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            bail!("tests/ui/bench.mjs ended early");
        }
        Ok(line.trim().to_string())
    }

    /// The rest of the first line that starts with `word`, skipping others.
    fn expect(&mut self, word: &str) -> Result<String> {
        loop {
            let line = self.line()?;
            if let Some(rest) = line.strip_prefix(word) {
                return Ok(rest.trim().to_string());
            }
        }
    }

    fn ask(&mut self, command: &str, answer: &str) -> Result<String> {
        writeln!(self.stdin, "{command}")?;
        self.expect(answer)
    }

    fn clicks(&mut self, id: &str, n: usize) -> Result<Vec<f64>> {
        writeln!(self.stdin, "clicks {id} {n}")?;
        let mut times = Vec::new();
        loop {
            let line = self.line()?;
            if line == "clicked" {
                return Ok(times);
            }
            if let Some(ms) = line.strip_prefix("click ") {
                times.push(ms.parse().with_context(|| format!("{line:?}"))?);
            }
        }
    }

    fn quit(mut self) -> Result<()> {
        writeln!(self.stdin, "quit")?;
        let status = self.child.wait()?;
        ensure!(status.success(), "tests/ui/bench.mjs exited with {status}");
        Ok(())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
