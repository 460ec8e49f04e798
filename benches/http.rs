//! End-to-end HTTP load on `weft serve`: the real binary in its own process on
//! a free loopback port, driven by 100 keep-alive hyper connections that send
//! requests back to back. Two scenarios, each run three times:
//!
//! - `get_run`: `GET /v1/runs/{id}` of a finished one-step run;
//! - `post_run`: `POST /v1/runs` of a one-step `noop` workflow (202 expected).
//!
//! Each run has a warm-up of 2 s and a measured window of 10 s
//! (`WEFT_BENCH_SECS` overrides the window). It prints requests/s, p50 and p99
//! latency, failures, and the CPU time the server and this client spent per
//! request. Arguments that do not start with `-` select scenarios by name.
//!
//! Optional: `WEFT_BENCH_CONNECTIONS` (default 100), `WEFT_BENCH_CLIENT_THREADS`
//! (tokio worker threads of the client, default 1 so that the client takes as
//! little CPU as it can from the server).

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderMap, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

const WARM_UP: Duration = Duration::from_secs(2);
const RUNS: usize = 3;
const POST_BODY: &str =
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
    rt.block_on(server.ready())?;
    let api_key = server.api_key()?;
    let api = Api {
        addr: server.addr,
        key: api_key,
    };
    rt.block_on(api.raise_limits(&server.admin_token))?;

    println!(
        "weft serve (pid {}) on {}; {} connections, {} s warm-up, {} s measured, {} runs, client on {} thread(s)",
        server.pid(),
        server.addr,
        settings.connections,
        WARM_UP.as_secs(),
        settings.measured.as_secs_f64(),
        RUNS,
        settings.client_threads,
    );

    let mut reports = Vec::new();
    if selected("get_run") {
        let id = rt.block_on(api.finished_run())?;
        let load = Load {
            name: "get_run",
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
        let load = Load {
            name: "post_run",
            label: "POST /v1/runs",
            target: 3_000.0,
            expected: StatusCode::ACCEPTED,
            template: Arc::new(Template::new(
                &api,
                Method::POST,
                "/v1/runs",
                Some(Bytes::from_static(POST_BODY.as_bytes())),
            )?),
        };
        reports.push(load.repeat(&rt, &server, &settings, &api)?);
    }

    println!();
    print_table(&reports);
    Ok(())
}

/// What the environment may change.
struct Settings {
    measured: Duration,
    connections: usize,
    client_threads: usize,
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
        let secs: f64 = var("WEFT_BENCH_SECS", 10.0)?;
        ensure!(secs > 0.0, "WEFT_BENCH_SECS must be positive");
        Ok(Self {
            measured: Duration::from_secs_f64(secs),
            connections: var("WEFT_BENCH_CONNECTIONS", 100)?,
            client_threads: var("WEFT_BENCH_CLIENT_THREADS", 1)?,
        })
    }
}

/// The `weft serve` process; killed when dropped, also on a panic.
struct Server {
    child: Child,
    addr: SocketAddr,
    admin_token: String,
    data_dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Result<Self> {
        let data_dir = tempfile::tempdir()?;
        // A free port: the kernel picks one, and nothing else binds it before
        // the server does.
        let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let admin_token = format!("{:032x}", rand::random::<u128>());
        let child = Command::new(env!("CARGO_BIN_EXE_weft"))
            .arg("serve")
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(data_dir.path())
            .arg("--admin-token")
            .arg(&admin_token)
            .env("WEFT_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("starting weft serve")?;
        Ok(Self {
            child,
            addr,
            admin_token,
            data_dir,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `GET /healthz` answers 200.
    async fn ready(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if let Ok((StatusCode::OK, _)) =
                call(self.addr, Method::GET, "/healthz", None, None).await
            {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "weft serve did not answer /healthz in 180 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn api_key(&self) -> Result<String> {
        let path = self.data_dir.path().join("api-key");
        Ok(std::fs::read_to_string(&path)
            .with_context(|| path.display().to_string())?
            .trim()
            .to_string())
    }

    /// User plus system CPU time of the whole process so far.
    fn cpu(&self) -> Duration {
        process_cpu(&Path::new("/proc").join(self.pid().to_string()).join("stat"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// User plus system CPU time from a `/proc/<pid>/stat` file (zero if unreadable).
fn process_cpu(stat: &Path) -> Duration {
    // Linux reports these in USER_HZ, which is 100 on every architecture it exports.
    const TICKS_PER_SEC: u64 = 100;
    let Ok(text) = std::fs::read_to_string(stat) else {
        return Duration::ZERO;
    };
    // Fields after the command name, which is in parentheses and may hold spaces:
    // state is field 3, utime field 14, stime field 15.
    let rest = text.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let total = ticks(14 - 3) + ticks(15 - 3);
    Duration::from_millis(total * 1000 / TICKS_PER_SEC)
}

/// Set-up calls against the server.
struct Api {
    addr: SocketAddr,
    key: String,
}

impl Api {
    async fn raise_limits(&self, admin_token: &str) -> Result<()> {
        let body = r#"{"runs_per_second": 1000000, "concurrent_runs": 1000000}"#;
        let (status, text) = call(
            self.addr,
            Method::PUT,
            "/v1/tenants/default/limits",
            Some(admin_token),
            Some(Bytes::from_static(body.as_bytes())),
        )
        .await?;
        ensure!(
            status == StatusCode::OK,
            "raising limits: {status} {text:?}"
        );
        Ok(())
    }

    /// Submits one run and waits until it has finished; returns its id.
    async fn finished_run(&self) -> Result<String> {
        let body = Bytes::from_static(POST_BODY.as_bytes());
        let (status, text) = call(
            self.addr,
            Method::POST,
            "/v1/runs",
            Some(&self.key),
            Some(body),
        )
        .await?;
        ensure!(
            status == StatusCode::ACCEPTED,
            "submitting: {status} {text:?}"
        );
        let answer: serde_json::Value = serde_json::from_slice(&text)?;
        let id = answer["id"]
            .as_str()
            .context("no id in the answer")?
            .to_string();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let path = format!("/v1/runs/{id}");
            let (status, text) = call(self.addr, Method::GET, &path, Some(&self.key), None).await?;
            ensure!(status == StatusCode::OK, "GET {path}: {status} {text:?}");
            let run: serde_json::Value = serde_json::from_slice(&text)?;
            match run["status"].as_str() {
                Some("succeeded") => return Ok(id),
                Some("failed" | "cancelled") => bail!("the run did not succeed: {run}"),
                _ => {}
            }
            ensure!(
                Instant::now() < deadline,
                "the run did not finish in 30 s: {run}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every submitted run has finished (from `/metrics`); returns
    /// how long that took.
    async fn drain(&self) -> Result<Duration> {
        let started = Instant::now();
        loop {
            let (status, text) = call(self.addr, Method::GET, "/metrics", None, None).await?;
            ensure!(status == StatusCode::OK, "GET /metrics: {status}");
            let text = String::from_utf8_lossy(&text);
            let submitted = metric_sum(&text, "weft_runs_submitted_total");
            let finished = metric_sum(&text, "weft_runs_finished_total");
            match (submitted, finished) {
                (Some(s), Some(f)) if f >= s => return Ok(started.elapsed()),
                (Some(_), _) => {}
                (None, _) => {
                    // No such metric: give the runs a moment instead.
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    return Ok(started.elapsed());
                }
            }
            if started.elapsed() > Duration::from_secs(300) {
                eprintln!("warning: runs still unfinished after 300 s");
                return Ok(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The sum over all label sets of a Prometheus counter, if it is present.
fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let mut sum = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue; // another metric whose name starts the same way
        }
        if let Some(value) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
            *sum.get_or_insert(0.0) += value;
        }
    }
    sum
}

/// One request over a new connection, for set-up; returns status and body.
async fn call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Bytes>,
) -> Result<(StatusCode, Bytes)> {
    let mut sender = connect(addr).await?;
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, addr.to_string());
    if let Some(token) = token {
        request = request.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    if body.is_some() {
        request = request.header(CONTENT_TYPE, "application/json");
    }
    let request = request.body(Full::new(body.unwrap_or_default()))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// A keep-alive HTTP/1.1 connection, its I/O driven by a task of its own.
async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// The parts of a request, built once and copied for every request.
struct Template {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

impl Template {
    fn new(api: &Api, method: Method, path: &str, body: Option<Bytes>) -> Result<Self> {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, HeaderValue::from_str(&api.addr.to_string())?);
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {}", api.key))?,
        );
        if body.is_some() {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        Ok(Self {
            method,
            uri: path.parse()?,
            headers,
            body: body.unwrap_or_default(),
        })
    }

    fn request(&self) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(self.body.clone()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        request
    }
}

/// One scenario: the same request over and over.
struct Load {
    name: &'static str,
    label: &'static str,
    /// Requests per second to reach.
    target: f64,
    expected: StatusCode,
    template: Arc<Template>,
}

/// What one measured window gave.
#[derive(Clone)]
struct Measurement {
    per_sec: f64,
    p50: Duration,
    p99: Duration,
    /// Requests answered with another status than the expected one, by status.
    unexpected: BTreeMap<u16, u64>,
    /// Requests that got no answer (connection errors).
    failed: u64,
    server_cpu_per_request: Duration,
    client_cpu_per_request: Duration,
    /// CPUs busy on average during the window.
    server_cores: f64,
    client_cores: f64,
    /// For `POST /v1/runs`: how long the runs took to finish after the window.
    drain: Option<Duration>,
}

struct Report {
    load: Load,
    runs: Vec<Measurement>,
}

/// What one connection saw during the measured window.
#[derive(Default)]
struct ConnectionStats {
    latencies_us: Vec<u32>,
    unexpected: BTreeMap<u16, u64>,
    failed: u64,
}

impl Load {
    fn repeat(
        self,
        rt: &tokio::runtime::Runtime,
        server: &Server,
        settings: &Settings,
        api: &Api,
    ) -> Result<Report> {
        let mut runs = Vec::new();
        for run in 1..=RUNS {
            let mut m = rt.block_on(self.measure(server, settings))?;
            if self.expected == StatusCode::ACCEPTED {
                m.drain = Some(rt.block_on(api.drain())?);
            }
            println!("{:<20} run {run}: {}", self.label, m.line(self.target));
            runs.push(m);
        }
        Ok(Report { load: self, runs })
    }

    async fn measure(&self, server: &Server, settings: &Settings) -> Result<Measurement> {
        let mut senders = Vec::with_capacity(settings.connections);
        for _ in 0..settings.connections {
            senders.push(connect(server.addr).await?);
        }
        let start = Instant::now();
        let window_start = start + WARM_UP;
        let window_end = window_start + settings.measured;
        let tasks: Vec<_> = senders
            .into_iter()
            .map(|sender| {
                let template = self.template.clone();
                let expected = self.expected;
                let addr = server.addr;
                tokio::spawn(drive(
                    sender,
                    addr,
                    template,
                    expected,
                    window_start,
                    window_end,
                ))
            })
            .collect();

        tokio::time::sleep_until(window_start.into()).await;
        let (server_cpu, client_cpu) = (server.cpu(), process_cpu(Path::new("/proc/self/stat")));
        tokio::time::sleep_until(window_end.into()).await;
        let server_cpu = server.cpu().saturating_sub(server_cpu);
        let client_cpu = process_cpu(Path::new("/proc/self/stat")).saturating_sub(client_cpu);

        let mut latencies = Vec::new();
        let mut unexpected = BTreeMap::new();
        let mut failed = 0;
        for task in tasks {
            let stats = task.await?;
            latencies.extend_from_slice(&stats.latencies_us);
            for (status, n) in stats.unexpected {
                *unexpected.entry(status).or_insert(0) += n;
            }
            failed += stats.failed;
        }
        ensure!(!latencies.is_empty(), "{}: no request succeeded", self.name);
        latencies.sort_unstable();
        let n = latencies.len();
        let secs = settings.measured.as_secs_f64();
        let per_request = |cpu: Duration| cpu / n as u32;
        Ok(Measurement {
            per_sec: n as f64 / secs,
            p50: percentile(&latencies, 50.0),
            p99: percentile(&latencies, 99.0),
            unexpected,
            failed,
            server_cpu_per_request: per_request(server_cpu),
            client_cpu_per_request: per_request(client_cpu),
            server_cores: server_cpu.as_secs_f64() / secs,
            client_cores: client_cpu.as_secs_f64() / secs,
            drain: None,
        })
    }
}

/// Sends requests back to back on one connection until `window_end`; keeps
/// the latencies of those answered inside the window.
async fn drive(
    mut sender: SendRequest<Full<Bytes>>,
    addr: SocketAddr,
    template: Arc<Template>,
    expected: StatusCode,
    window_start: Instant,
    window_end: Instant,
) -> ConnectionStats {
    let mut stats = ConnectionStats {
        latencies_us: Vec::with_capacity(1 << 12),
        ..ConnectionStats::default()
    };
    loop {
        let sent = Instant::now();
        if sent >= window_end {
            return stats;
        }
        let answer = async {
            sender.ready().await?;
            let response = sender.send_request(template.request()).await?;
            let status = response.status();
            let mut body = response.into_body();
            while let Some(frame) = body.frame().await {
                frame?;
            }
            Ok::<_, hyper::Error>(status)
        }
        .await;
        let done = Instant::now();
        let counted = done >= window_start && done < window_end;
        match answer {
            Ok(status) if status == expected => {
                if counted {
                    let us = done.duration_since(sent).as_micros();
                    stats
                        .latencies_us
                        .push(u32::try_from(us).unwrap_or(u32::MAX));
                }
            }
            Ok(status) => {
                if counted {
                    *stats.unexpected.entry(status.as_u16()).or_insert(0) += 1;
                }
            }
            Err(_) => {
                if counted {
                    stats.failed += 1;
                }
                // The connection is likely gone: open another.
                match connect(addr).await {
                    Ok(new) => sender = new,
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        }
    }
}

/// Nearest-rank percentile of sorted microseconds.
fn percentile(sorted_us: &[u32], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted_us.len() as f64).ceil() as usize;
    let i = rank.clamp(1, sorted_us.len()) - 1;
    Duration::from_micros(u64::from(sorted_us[i]))
}

impl Measurement {
    fn unexpected_total(&self) -> u64 {
        self.unexpected.values().sum()
    }

    fn line(&self, target: f64) -> String {
        let mut line = format!(
            "{:>8.0}/s ({:.2}x target)  p50 {}  p99 {}  unexpected {}  failed {}  server {:.0} µs CPU/req ({:.2} cores)  client {:.0} µs CPU/req ({:.2} cores)",
            self.per_sec,
            self.per_sec / target,
            ms(self.p50),
            ms(self.p99),
            self.unexpected_total(),
            self.failed,
            micros(self.server_cpu_per_request),
            self.server_cores,
            micros(self.client_cpu_per_request),
            self.client_cores,
        );
        if !self.unexpected.is_empty() {
            line += &format!("  statuses {:?}", self.unexpected);
        }
        if let Some(drain) = self.drain {
            line += &format!("  drained in {:.1} s", drain.as_secs_f64());
        }
        line
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The columns of one table row.
struct Row {
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    unexpected: f64,
    failed: f64,
    server_us: f64,
    server_cores: f64,
    client_us: f64,
    client_cores: f64,
}

impl Row {
    fn of(m: &Measurement) -> Self {
        Self {
            per_sec: m.per_sec,
            p50_ms: m.p50.as_secs_f64() * 1e3,
            p99_ms: m.p99.as_secs_f64() * 1e3,
            unexpected: m.unexpected_total() as f64,
            failed: m.failed as f64,
            server_us: micros(m.server_cpu_per_request),
            server_cores: m.server_cores,
            client_us: micros(m.client_cpu_per_request),
            client_cores: m.client_cores,
        }
    }

    /// Each column's median over `rows`.
    fn median(rows: &[Row]) -> Self {
        let m = |f: fn(&Row) -> f64| median(rows.iter().map(f).collect());
        Self {
            per_sec: m(|r| r.per_sec),
            p50_ms: m(|r| r.p50_ms),
            p99_ms: m(|r| r.p99_ms),
            unexpected: m(|r| r.unexpected),
            failed: m(|r| r.failed),
            server_us: m(|r| r.server_us),
            server_cores: m(|r| r.server_cores),
            client_us: m(|r| r.client_us),
            client_cores: m(|r| r.client_cores),
        }
    }

    fn print(&self, label: &str, run: &str, target: f64) {
        println!(
            "| {label} | {run} | {:.0} | ≥ {target:.0} | {:.2}× | {:.2} ms | {:.2} ms | {:.0} | {:.0} | {:.0} µs | {:.2} | {:.0} µs | {:.2} |",
            self.per_sec,
            self.per_sec / target,
            self.p50_ms,
            self.p99_ms,
            self.unexpected,
            self.failed,
            self.server_us,
            self.server_cores,
            self.client_us,
            self.client_cores,
        );
    }
}

fn print_table(reports: &[Report]) {
    println!(
        "| scenario | run | requests/s | target | ratio | p50 | p99 | unexpected status | failed | server CPU/req | server cores | client CPU/req | client cores |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for report in reports {
        let (label, target) = (report.load.label, report.load.target);
        let rows: Vec<Row> = report.runs.iter().map(Row::of).collect();
        for (i, row) in rows.iter().enumerate() {
            row.print(label, &(i + 1).to_string(), target);
        }
        Row::median(&rows).print(label, "**median**", target);
    }
    println!();
    for report in reports {
        let mut statuses = BTreeMap::new();
        for (status, n) in report.runs.iter().flat_map(|m| &m.unexpected) {
            *statuses.entry(*status).or_insert(0) += n;
        }
        let failed: u64 = report.runs.iter().map(|m| m.failed).sum();
        println!(
            "{}: {} answers other than {} {statuses:?}, {failed} requests without an answer, over {} runs",
            report.load.label,
            statuses.values().sum::<u64>(),
            report.load.expected,
            report.runs.len(),
        );
    }
}
