//! Support for tests and benchmarks: a real `redis-server` of their own, free
//! ports, and a clean environment for the `weft` processes they start.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// Removes the `WEFT_*` and `OTEL_*` settings of whoever runs the tests from
/// `command`, so that a `weft` it starts sees only what the test gives it.
pub fn clear_weft_env(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        // OTEL_* too: a collector set in the environment must not receive
        // the spans of every test server.
        if key_text.starts_with("WEFT_") || key_text.starts_with("OTEL_") {
            command.env_remove(key);
        }
    }
}

/// A `redis-server` on a free port with a scratch directory; stopped when dropped.
pub struct RedisServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    args: Vec<String>,
}

impl RedisServer {
    /// Starts one that keeps nothing on disk.
    pub fn start() -> Self {
        Self::start_with(&["--appendonly", "no"])
    }

    /// Starts one with extra `redis-server` arguments (e.g. `--appendonly yes`).
    pub fn start_with(args: &[&str]) -> Self {
        let port = free_port();
        let dir = tempfile::Builder::new()
            .prefix("weft-redis-")
            .tempdir()
            .expect("create redis dir");
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let child = spawn(port, dir.path(), &args);
        let mut server = Self {
            child,
            port,
            dir,
            args,
        };
        server.wait_ready();
        server
    }

    /// `redis://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (SIGTERM: it writes what it persists) and waits.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port and directory, after [`RedisServer::stop`].
    pub fn restart(&mut self) {
        self.child = spawn(self.port, self.dir.path(), &self.args);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if ping(self.port) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("redis-server exited with {status}");
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(port: u16, dir: &Path, args: &[String]) -> Child {
    Command::new(redis_server())
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
        .arg("--dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start redis-server ({e}); install it (e.g. `apt-get install redis-server`) or set WEFT_REDIS_SERVER")
        })
}

fn redis_server() -> String {
    std::env::var("WEFT_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into())
}

/// The `redis-cli` that comes with the `redis-server` the tests use.
pub fn redis_cli() -> String {
    let server = redis_server();
    match server.strip_suffix("redis-server") {
        Some(dir) if !dir.is_empty() => format!("{dir}redis-cli"),
        _ => "redis-cli".into(),
    }
}

fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut answer = [0u8; 7];
    stream.read_exact(&mut answer).is_ok() && &answer == b"+PONG\r\n"
}
