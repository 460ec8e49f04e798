//! `probe`: reports what the sandbox lets a step see and reach.
//!
//! Input: `{"tcp": ["host:port", ...]}` (optional: more addresses to try to
//! connect to; by default only loopback ones, so that even a sandbox that
//! wrongly allowed networking sends nothing off the machine).
//!
//! Output:
//! ```json
//! {
//!   "env":   ["KEY=value", ...],
//!   "args":  [...],
//!   "cwd":   "/" or "error: ...",
//!   "stdin": "0 bytes" or "error: ...",
//!   "files": {"/": probe, "/etc/passwd": probe, ".": probe, "/tmp/x": probe},
//!   "tcp":   {"127.0.0.1:80": probe, "[::1]:80": probe, ...},
//!   "udp":   {"0.0.0.0:0": probe},
//!   "dns":   {"localhost": probe}
//! }
//! ```
//! where each probe is `{"ok": bool, "error"?: string, "detail"?: any}`: the
//! error text when the attempt failed, what it saw when it succeeded. In a
//! sandbox that grants nothing, `env` is empty and every `ok` is false.
//! `/` and `.` are listed, `/etc/passwd` read, `/tmp/x` created.

use std::io::{self, Read};
use std::net::{TcpStream, ToSocketAddrs, UdpSocket};

use serde::Deserialize;
use serde_json::{Map, Value, json};
use weft_sdk::{StepError, step};

const LOOPBACK_TCP: [&str; 2] = ["127.0.0.1:80", "[::1]:80"];

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Input {
    tcp: Vec<String>,
}

fn run(input: Input) -> Result<Value, StepError> {
    let env: Vec<String> = std::env::vars_os()
        .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
        .collect();
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let cwd = match std::env::current_dir() {
        Ok(dir) => dir.display().to_string(),
        Err(err) => format!("error: {err}"),
    };
    let mut stdin = Vec::new();
    let stdin = match io::stdin().read_to_end(&mut stdin) {
        Ok(n) => format!("{n} bytes"),
        Err(err) => format!("error: {err}"),
    };

    let files = json!({
        "/": probe(list_dir("/")),
        "/etc/passwd": probe(std::fs::read("/etc/passwd").map(|b| json!({"bytes": b.len()}))),
        ".": probe(list_dir(".")),
        "/tmp/x": probe(std::fs::File::create("/tmp/x").map(|_| json!("created"))),
    });

    let mut tcp = Map::new();
    for addr in LOOPBACK_TCP
        .iter()
        .copied()
        .chain(input.tcp.iter().map(String::as_str))
    {
        let result = TcpStream::connect(addr).map(|s| json!(format!("{:?}", s.peer_addr())));
        tcp.insert(addr.to_owned(), probe(result));
    }
    let udp = json!({
        "0.0.0.0:0": probe(UdpSocket::bind("0.0.0.0:0").map(|s| json!(format!("{:?}", s.local_addr())))),
    });
    let dns = json!({
        "localhost": probe(("localhost", 80).to_socket_addrs().map(|addrs| {
            json!(addrs.map(|a| a.to_string()).collect::<Vec<_>>())
        })),
    });

    Ok(json!({
        "env": env,
        "args": args,
        "cwd": cwd,
        "stdin": stdin,
        "files": files,
        "tcp": tcp,
        "udp": udp,
        "dns": dns,
    }))
}

/// The names in a directory.
fn list_dir(path: &str) -> io::Result<Value> {
    let names = std::fs::read_dir(path)?
        .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<io::Result<Vec<_>>>()?;
    Ok(json!(names))
}

/// One probe's record: `{"ok": true, "detail": ...}` or `{"ok": false, "error": "..."}`.
fn probe(result: io::Result<Value>) -> Value {
    match result {
        Ok(detail) => json!({"ok": true, "detail": detail}),
        Err(err) => json!({"ok": false, "error": err.to_string()}),
    }
}

step!(run);
