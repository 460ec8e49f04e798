//! The `weft serve` process under load, the set-up calls made to it, and the
//! CPU time that it, this process and the machine spend.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A `weft serve` process with a data directory of its own; killed when
/// dropped, also when the benchmark panics.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    admin_token: String,
    data_dir: tempfile::TempDir,
}

impl Server {
    /// Starts the `weft` binary built with this benchmark.
    pub fn start() -> Result<Self> {
        Self::start_with(&[])
    }

    /// The same with more `weft serve` arguments.
    pub fn start_with(args: &[&str]) -> Result<Self> {
        let data_dir = tempfile::tempdir()?;
        // The kernel picks a free port; the server binds it a moment later.
        let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let admin_token = format!("{:032x}", rand::random::<u128>());
        // `WEFT_BENCH_BIN` measures another build (e.g. an earlier commit's).
        let bin =
            std::env::var_os("WEFT_BENCH_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_weft").into());
        let child = Command::new(bin)
            .arg("serve")
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(data_dir.path())
            .arg("--admin-token")
            .arg(&admin_token)
            .args(args)
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

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its data directory.
    #[allow(dead_code)] // used by the timers benchmark only
    pub fn data_path(&self) -> &std::path::Path {
        self.data_dir.path()
    }

    /// The admin token it was started with.
    #[allow(dead_code)] // used by the hostile-input benchmark only
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// User plus system CPU time of the whole process (all threads) so far.
    pub fn cpu(&self) -> Duration {
        crate::machine::process_cpu(self.pid())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `weft serve` on the backend `WEFT_BENCH_BACKEND` names: `redis`, a
/// redis-server of its own (returned first, so that it outlives the node),
/// or else the embedded file store, started with `embedded_args`.
#[allow(dead_code)] // used by the benchmarks that run on either backend
pub fn start_on_bench_backend(
    embedded_args: &[&str],
) -> Result<(Option<weft::testing::RedisServer>, Server)> {
    let redis = match std::env::var("WEFT_BENCH_BACKEND").as_deref() {
        Ok("redis") => Some(weft::testing::RedisServer::start()),
        _ => None,
    };
    let node = match &redis {
        Some(r) => Server::start_with(&["--redis", &r.url()])?,
        None => Server::start_with(embedded_args)?,
    };
    Ok((redis, node))
}

/// The tenant `default` of a started server, ready to be loaded.
pub struct Api {
    pub addr: SocketAddr,
    pub key: String,
}

impl Api {
    /// Waits until the server answers `GET /healthz`, reads the API key of
    /// `default` and lifts its rate and concurrency limits.
    pub async fn new(server: &Server) -> Result<Self> {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let health = call(server.addr, Method::GET, "/healthz", None, None).await;
            if matches!(health, Ok((StatusCode::OK, _))) {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "weft serve did not answer /healthz in 180 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let path = server.data_dir.path().join("api-key");
        let key = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;

        let limits = r#"{"runs_per_second": 1000000, "concurrent_runs": 1000000}"#;
        let (status, text) = call(
            server.addr,
            Method::PUT,
            "/v1/tenants/default/limits",
            Some(&server.admin_token),
            Some(Bytes::from_static(limits.as_bytes())),
        )
        .await?;
        ensure!(
            status == StatusCode::OK,
            "raising the limits: {status} {text:?}"
        );
        Ok(Self {
            addr: server.addr,
            key: key.trim().to_string(),
        })
    }

    /// Submits a run, waits until it has succeeded and returns its id.
    pub async fn finished_run(&self, body: &'static str) -> Result<String> {
        let body = Bytes::from_static(body.as_bytes());
        let (status, text) = self.call(Method::POST, "/v1/runs", Some(body)).await?;
        ensure!(
            status == StatusCode::ACCEPTED,
            "submitting: {status} {text:?}"
        );
        let answer: serde_json::Value = serde_json::from_slice(&text)?;
        let id = answer["id"].as_str().context("no id in the answer")?;
        let path = format!("/v1/runs/{id}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, text) = self.call(Method::GET, &path, None).await?;
            ensure!(status == StatusCode::OK, "GET {path}: {status} {text:?}");
            let run: serde_json::Value = serde_json::from_slice(&text)?;
            match run["status"].as_str() {
                Some("succeeded") => return Ok(id.to_string()),
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

    /// The text of `GET /metrics`.
    pub async fn metrics(&self) -> Result<String> {
        let (status, text) = call(self.addr, Method::GET, "/metrics", None, None).await?;
        ensure!(status == StatusCode::OK, "GET /metrics: {status}");
        Ok(String::from_utf8_lossy(&text).into_owned())
    }

    /// Waits until every run submitted so far has finished, by `/metrics`;
    /// returns how long that took.
    pub async fn drain(&self) -> Result<Duration> {
        let started = Instant::now();
        loop {
            let text = self.metrics().await?;
            let submitted = metric_sum(&text, "weft_runs_submitted_total");
            let finished = metric_sum(&text, "weft_runs_finished_total").unwrap_or(0.0);
            let Some(submitted) = submitted else {
                // No such metric: give the runs a moment instead.
                tokio::time::sleep(Duration::from_secs(3)).await;
                return Ok(started.elapsed());
            };
            if finished >= submitted {
                return Ok(started.elapsed());
            }
            if started.elapsed() > Duration::from_secs(300) {
                eprintln!(
                    "warning: {} runs still unfinished after 300 s",
                    submitted - finished
                );
                return Ok(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes)> {
        call(self.addr, method, path, Some(&self.key), body).await
    }
}

/// The sum over all label sets of a Prometheus metric, if it is present.
fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let mut sum = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !rest.starts_with(['{', ' ']) {
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
pub async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}
