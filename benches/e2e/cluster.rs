//! One Redis with `weft serve` processes on it, as an operator would start
//! them: the release binary, each node in its own data directory, on a free
//! loopback port.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use weft::testing::RedisServer;

use crate::machine;

/// Which processes serve the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// One `weft serve --role all`.
    OneNode,
    /// One `weft serve --role api` and two `weft serve --role worker`.
    TwoWorkers,
}

impl Topology {
    /// Selects it on the command line and names it in the output.
    pub fn name(self) -> &'static str {
        match self {
            Topology::OneNode => "weft-1-node",
            Topology::TwoWorkers => "weft-2-workers",
        }
    }

    fn roles(self) -> &'static [&'static str] {
        match self {
            Topology::OneNode => &["all"],
            Topology::TwoWorkers => &["api", "worker", "worker"],
        }
    }
}

/// Redis persisting as production would: an append-only file, fsync each second.
const REDIS_ARGS: &[&str] = &["--appendonly", "yes", "--appendfsync", "everysec"];

/// A fresh Redis and the nodes of one topology; all stopped when dropped.
pub struct Cluster {
    /// Dropped first: nodes stop before their Redis does.
    pub nodes: Vec<Node>,
    pub redis: RedisServer,
    pub redis_pid: u32,
    /// The node that serves the API.
    pub api: String,
    pub key: String,
}

impl Cluster {
    pub fn start(topology: Topology, admin_token: &str) -> Result<Self> {
        let redis = RedisServer::start_with(REDIS_ARGS);
        let redis_pid = redis_pid(&redis)?;
        let mut nodes = Vec::new();
        // The first node creates the tenant `default` and writes its key,
        // so it starts alone.
        for role in topology.roles() {
            let node = Node::start(&redis, role, admin_token)?;
            node.wait_ready()?;
            nodes.push(node);
        }
        let api = nodes[0].addr.clone();
        let key_file = nodes[0].data_dir.join("api-key");
        let key = std::fs::read_to_string(&key_file)
            .with_context(|| key_file.display().to_string())?
            .trim()
            .to_string();
        Ok(Self {
            nodes,
            redis,
            redis_pid,
            api,
            key,
        })
    }

    /// A synchronous connection for CONFIG RESETSTAT and INFO.
    pub fn redis_conn(&self) -> Result<redis::Connection> {
        Ok(redis::Client::open(self.redis.url())?.get_connection()?)
    }
}

fn redis_pid(redis: &RedisServer) -> Result<u32> {
    let mut conn = redis::Client::open(redis.url())?.get_connection()?;
    let info: String = redis::cmd("INFO").arg("server").query(&mut conn)?;
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|p| p.trim().parse().ok())
        .context("no process_id in INFO server")
}

/// One `weft serve` process.
pub struct Node {
    child: Child,
    pub role: &'static str,
    pub addr: String,
    pub data_dir: PathBuf,
    _dir: tempfile::TempDir,
}

impl Node {
    fn start(redis: &RedisServer, role: &'static str, admin_token: &str) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("weft-e2e-").tempdir()?;
        let data_dir = dir.path().join("data");
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(dir.path().join("serve.log"))?;
        // `WEFT_E2E_BIN` measures another build (e.g. an earlier commit's)
        // with the same client, in the same session.
        let bin =
            std::env::var_os("WEFT_E2E_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_weft").into());
        let mut command = Command::new(bin);
        weft::testing::clear_weft_env(&mut command);
        let child = command
            .args(["serve", "--listen", &addr, "--admin-token", admin_token])
            .args(["--redis", &redis.url(), "--role", role])
            .arg("--data-dir")
            .arg(&data_dir)
            .env("WEFT_LOG", "warn")
            // `WEFT_E2E_OTLP` exports every run's trace to that collector.
            .args(
                std::env::var_os("WEFT_E2E_OTLP")
                    .map(|url| vec![std::ffi::OsString::from("--otlp-endpoint"), url])
                    .unwrap_or_default(),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting weft serve")?;
        Ok(Self {
            child,
            role,
            addr,
            data_dir,
            _dir: dir,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn cpu(&self) -> Duration {
        machine::process_cpu(self.pid())
    }

    /// Waits until it answers `GET /healthz` (every role serves it).
    fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if crate::client::healthy(&self.addr) {
                return Ok(());
            }
            let log = || std::fs::read_to_string(self._dir.path().join("serve.log"));
            if Instant::now() > deadline {
                bail!("weft serve did not start in 120 s:\n{}", log()?);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Lifts the rate and concurrency limits of the tenant `default`.
pub async fn lift_limits(http: &reqwest::Client, cluster: &Cluster, admin: &str) -> Result<()> {
    let response = http
        .put(format!("http://{}/v1/tenants/default/limits", cluster.api))
        .bearer_auth(admin)
        .json(&serde_json::json!({"runs_per_second": 100000, "concurrent_runs": 100000}))
        .send()
        .await?;
    let status = response.status();
    ensure!(
        status.is_success(),
        "raising the limits: {status} {}",
        response.text().await?
    );
    Ok(())
}
