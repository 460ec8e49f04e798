//! A real `weft serve` for the tests: its own free port, data directory and
//! admin token; killed when dropped.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The admin token every test server is started with.
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// The secrets key of servers on Redis, which has no data directory to
/// keep a generated one in.
pub const SECRETS_KEY: &str = "5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed";

/// How long a fresh server may take to compile and publish the bundled components.
const READY_WITHIN: Duration = Duration::from_secs(120);

/// A running `weft serve`.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    addr: String,
    /// Redis, when the suites run on it; declared after `child` so that the
    /// server stops first.
    redis: Option<weft::testing::RedisServer>,
    dir: tempfile::TempDir,
    /// Extra `weft serve` arguments, given again on restart.
    args: Vec<String>,
    /// Extra environment variables, given again on restart.
    env: Vec<(String, String)>,
}

impl Server {
    /// Starts `weft serve` on the embedded backend and waits for `/healthz`.
    pub fn start() -> Self {
        Self::start_with_args(&[])
    }

    /// Starts `weft serve` with extra arguments (e.g. `--header-timeout 1s`)
    /// and waits for `/healthz`.
    pub fn start_with_args(args: &[&str]) -> Self {
        Self::start_on(crate::common::redis(), args, &[])
    }

    /// [`Server::start_with_args`] with extra environment variables (e.g. `WEFT_LOG`).
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_on(crate::common::redis(), args, env)
    }

    /// Starts `weft serve` on the embedded backend whichever backend the
    /// suites run on: for what only the embedded backend has (its file store).
    pub fn start_embedded() -> Self {
        Self::start_on(None, &[], &[])
    }

    fn start_on(
        redis: Option<weft::testing::RedisServer>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("weft-serve-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("create server dir");
        let addr = format!("127.0.0.1:{}", free_port());
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let child = spawn(dir.path(), &addr, redis.as_ref(), &args, &env);
        let mut server = Self {
            child,
            url: format!("http://{addr}"),
            addr,
            redis,
            dir,
            args,
            env,
        };
        server.wait_ready();
        server
    }

    /// Stops the server with SIGTERM and waits until it has exited.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(
            matches!(sent, Ok(s) if s.success()),
            "cannot signal weft serve:\n{}",
            self.log()
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("poll weft serve") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "weft serve did not stop on SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server with SIGKILL, as a crash would, and waits until it
    /// is gone; nothing of it runs on the way out.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same data directory and port, after
    /// [`Server::kill`] or [`Server::stop`]; the answer of `/healthz` is
    /// waited for.
    pub fn start_again(&mut self) {
        assert!(
            self.child.try_wait().expect("poll weft serve").is_some(),
            "the server is still running"
        );
        self.child = spawn(
            self.dir.path(),
            &self.addr,
            self.redis.as_ref(),
            &self.args,
            &self.env,
        );
        self.wait_ready();
    }

    /// Replaces the extra `weft serve` arguments the next start is given.
    pub fn set_args(&mut self, args: &[&str]) {
        self.args = args.iter().map(|a| a.to_string()).collect();
    }

    /// The port of the server's Redis, when it runs on Redis.
    pub fn redis_port(&self) -> Option<u16> {
        self.redis.as_ref().map(|r| r.port())
    }

    /// `host:port` of the server.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Stops the server and starts it again on the same data directory and port.
    pub fn restart(&mut self) {
        if self.child.try_wait().expect("poll weft serve").is_none() {
            self.stop();
        }
        self.start_again();
    }

    /// The server's data directory, `<scratch>/weft` (it holds `api-key`, the
    /// key of tenant `default`), so that `XDG_DATA_HOME=<scratch>` finds it
    /// where a default install would.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("weft")
    }

    /// The API key of tenant `default`, which the server wrote to its data
    /// directory when it created the tenant.
    pub fn default_key(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("api-key"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// Submits a run as the tenant holding `key`; returns its id.
    pub fn submit(
        &self,
        key: &str,
        workflow: &serde_json::Value,
        input: serde_json::Value,
    ) -> String {
        let answer = crate::http::post_json(
            self.addr(),
            "/v1/runs",
            key,
            &serde_json::json!({ "workflow": workflow, "input": input }),
        );
        assert_eq!(answer.status, 202, "{:?}", answer.body);
        answer.body["id"].as_str().unwrap().to_string()
    }

    /// Changes some limits of `tenant` as the admin; they must be accepted.
    pub fn set_limits(&self, tenant: &str, limits: serde_json::Value) {
        let bytes = serde_json::to_vec(&limits).unwrap();
        let answer = crate::http::request(
            self.addr(),
            "PUT",
            &format!("/v1/tenants/{tenant}/limits"),
            ADMIN_TOKEN,
            Some(("application/json", &bytes)),
        );
        assert_eq!(answer.status, 200, "{:?}", answer.body);
    }

    /// Creates a tenant with the default limits; returns its API key.
    pub fn create_tenant(&self, name: &str) -> String {
        let created = crate::http::post_json(
            self.addr(),
            "/v1/tenants",
            ADMIN_TOKEN,
            &serde_json::json!({ "name": name }),
        );
        assert_eq!(created.status, 201, "{:?}", created.body);
        created.body["api_key"].as_str().unwrap().to_string()
    }

    /// Everything the server wrote on stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    /// A scratch directory that lives as long as the server.
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if healthy(&self.addr) {
                return;
            }
            if let Some(status) = self.child.try_wait().expect("poll weft serve") {
                panic!("weft serve exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "weft serve did not answer /healthz within {READY_WITHIN:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `weft serve` with its data directory and log under `dir`.
fn spawn(
    dir: &Path,
    addr: &str,
    redis: Option<&weft::testing::RedisServer>,
    args: &[String],
    env: &[(String, String)],
) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("serve.log"))
        .expect("open log");
    let mut command = Command::new(env!("CARGO_BIN_EXE_weft"));
    clear_env(&mut command);
    if let Some(redis) = redis {
        command
            .arg("serve")
            .arg("--redis")
            .arg(redis.url())
            .args(["--secrets-key", SECRETS_KEY]);
    } else {
        command.arg("serve");
    }
    command
        .args(["--listen", addr, "--admin-token", ADMIN_TOKEN])
        .arg("--data-dir")
        .arg(dir.join("weft"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        // Compiled components are shared by every test process.
        .env("WEFT_CACHE_DIR", crate::common::data_dir())
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone log"))
        .stderr(log)
        .spawn()
        .expect("start weft serve")
}

pub use weft::testing::{clear_weft_env as clear_env, free_port};

/// Whether `GET /healthz` answers 200.
fn healthy(addr: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}
