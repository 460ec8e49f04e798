//! Clients that hold connections without finishing requests, send bodies
//! too slowly, flood the node with connections or invent methods and
//! paths, and a Redis URL with a password: the node goes on serving
//! everyone else, its metrics stay bounded and the password is never printed.

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::http::{self, get};
use crate::server::{Server, clear_env, free_port};

fn connect(addr: &str) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_nodelay(true).unwrap();
    stream
}

/// What a connection saw while the test fed it: the bytes the server sent,
/// and how long after the start it closed (`None`: still open at the end).
struct Outcome {
    received: Vec<u8>,
    closed_after: Option<Duration>,
}

/// Writes `bytes` one at a time, `every` apart (then nothing more), and reads
/// what comes back until the server closes the connection or `within` has
/// passed since `start`.
fn trickle(
    stream: &mut TcpStream,
    bytes: &[u8],
    every: Duration,
    start: Instant,
    within: Duration,
) -> Outcome {
    stream.set_read_timeout(Some(every)).unwrap();
    let mut received = Vec::new();
    let mut next = bytes.iter();
    let mut buf = [0u8; 4096];
    while start.elapsed() < within {
        if let Some(byte) = next.next()
            && stream.write_all(&[*byte]).is_err()
        {
            return Outcome {
                received,
                closed_after: Some(start.elapsed()),
            };
        }
        match stream.read(&mut buf) {
            Ok(0) => {
                return Outcome {
                    received,
                    closed_after: Some(start.elapsed()),
                };
            }
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            // Reset by the server.
            Err(_) => {
                return Outcome {
                    received,
                    closed_after: Some(start.elapsed()),
                };
            }
        }
    }
    Outcome {
        received,
        closed_after: None,
    }
}

/// Waits for the server to close `stream`, sending nothing.
fn wait_closed(stream: &mut TcpStream, start: Instant, within: Duration) -> Outcome {
    trickle(stream, &[], Duration::from_millis(50), start, within)
}

/// Whether the server still holds `stream` open (nothing to read, no EOF).
fn still_open(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    let mut reader = stream;
    let open = matches!(reader.read(&mut buf), Err(e) if e.kind() == ErrorKind::WouldBlock);
    stream.set_nonblocking(false).unwrap();
    open
}

/// Sends `GET /healthz` on a kept-alive connection and reads its answer.
fn healthz_on(stream: &mut TcpStream) -> u16 {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: weft\r\n\r\n")
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).expect("an answer");
        assert!(n > 0, "closed before answering");
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .expect("content-length");
            if body.len() >= length {
                return head.split_whitespace().nth(1).unwrap().parse().unwrap();
            }
        }
    }
}

/// Slack between the test's clock and the server's (whose timers never fire
/// early, and start after the test's).
const TOLERANCE: Duration = Duration::from_millis(100);
/// Long enough for any machine: only lower bounds on time are asserted.
const BOUND: Duration = Duration::from_secs(30);

#[test]
fn slow_headers_and_idle_connections_are_closed_at_their_timeouts() {
    let server = Server::start_with_args(&["--header-timeout", "1s", "--idle-timeout", "4s"]);
    let addr = server.addr();

    // Headers one byte every 100 ms: never complete.
    let start = Instant::now();
    let mut loris = connect(addr);
    let slow = b"GET /healthz HTTP/1.1\r\nHost: weft\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let outcome = trickle(&mut loris, slow, Duration::from_millis(100), start, BOUND);
    let after = outcome
        .closed_after
        .expect("slow headers were never cut off");
    assert!(
        after >= Duration::from_secs(1) - TOLERANCE,
        "closed after {after:?}"
    );
    println!("slow headers: closed after {after:?}");

    // A connection that sends nothing gets the header timeout too.
    let start = Instant::now();
    let mut silent = connect(addr);
    let after = wait_closed(&mut silent, start, BOUND)
        .closed_after
        .expect("a silent connection stayed open");
    assert!(
        after >= Duration::from_secs(1) - TOLERANCE,
        "closed after {after:?}"
    );

    // Kept alive between requests: the idle timeout, not the header one.
    let mut kept = connect(addr);
    assert_eq!(healthz_on(&mut kept), 200);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        still_open(&kept),
        "closed while idle for less than --idle-timeout"
    );
    let start = Instant::now();
    assert_eq!(
        healthz_on(&mut kept),
        200,
        "the kept-alive connection was not usable"
    );
    let after = wait_closed(&mut kept, start, BOUND)
        .closed_after
        .expect("an idle kept-alive connection stayed open");
    assert!(
        after >= Duration::from_secs(4) - TOLERANCE,
        "closed after {after:?}"
    );
    println!("idle keep-alive: closed after {after:?}");

    // The next request on a kept-alive connection has the header timeout.
    let mut kept = connect(addr);
    assert_eq!(healthz_on(&mut kept), 200);
    let start = Instant::now();
    let outcome = trickle(&mut kept, slow, Duration::from_millis(100), start, BOUND);
    let after = outcome
        .closed_after
        .expect("slow second headers were never cut off");
    assert!(
        after >= Duration::from_secs(1) - TOLERANCE,
        "closed after {after:?}"
    );

    assert_eq!(get(addr, "/healthz", "").status, 200);
}

#[test]
fn a_body_slower_than_the_body_timeout_is_answered_408() {
    let server = Server::start_with_args(&["--body-timeout", "1s"]);
    let addr = server.addr();
    let key = server.default_key();
    let body = br#"{"steps": [{"id": "a", "component": "echo@1", "input": {"padding": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}]}"#;

    let start = Instant::now();
    let mut slow = connect(addr);
    write!(
        slow,
        "POST /v1/workflows/validate HTTP/1.1\r\nHost: weft\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    let outcome = trickle(&mut slow, body, Duration::from_millis(100), start, BOUND);
    let after = outcome.closed_after.expect("a slow body was never cut off");
    let answer = String::from_utf8_lossy(&outcome.received).to_string();
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    assert!(
        after >= Duration::from_secs(1) - TOLERANCE,
        "cut off after {after:?}"
    );
    println!(
        "slow body: cut off after {after:?}: {}",
        answer.lines().next().unwrap_or("closed")
    );

    // The node goes on, and a body sent at once is read as usual.
    assert_eq!(get(addr, "/healthz", "").status, 200);
    let whole = http::request(
        addr,
        "POST",
        "/v1/workflows/validate",
        &key,
        Some(("application/json", body)),
    );
    assert_eq!(whole.status, 200, "{:?}", whole.body);
    if !answer.is_empty() {
        let metrics = get(addr, "/metrics", "")
            .body
            .as_str()
            .unwrap_or("")
            .to_string();
        assert!(
            metrics.contains(r#"route="/v1/workflows/validate",status="408""#),
            "{metrics}"
        );
    }
}

#[test]
fn idle_and_slow_loris_clients_do_not_starve_others() {
    const IDLE: usize = 2_000;
    const LORIS: usize = 200;
    /// At least this many rounds of two requests, and for at least `SPAN`
    /// so that the slow clients send several bytes meanwhile; at most `MAX_ROUNDS`.
    const ROUNDS: usize = 200;
    const SPAN: Duration = Duration::from_secs(5);
    const MAX_ROUNDS: usize = 1_000;
    let limit = weft::api::server::raise_open_files_limit().expect("open-files limit");
    assert!(
        limit >= (IDLE + LORIS + 512) as u64,
        "this test needs {} open files; the limit is {limit}",
        IDLE + LORIS + 512
    );
    // Timeouts far beyond the test, so that every client is held throughout.
    let server = Server::start_with_args(&["--header-timeout", "1h", "--idle-timeout", "1h"]);
    let addr = server.addr().to_string();
    let key = server.default_key();

    let idle: Vec<TcpStream> = (0..IDLE).map(|_| connect(&addr)).collect();
    let loris: Vec<TcpStream> = (0..LORIS).map(|_| connect(&addr)).collect();
    let feeding = Arc::new(AtomicBool::new(true));
    let feeder = {
        let mut streams: Vec<TcpStream> = loris.iter().map(|s| s.try_clone().unwrap()).collect();
        let feeding = feeding.clone();
        std::thread::spawn(move || {
            let head = b"GET /healthz HTTP/1.1\r\nHost: weft\r\nX-Slow: ";
            let mut sent = 0usize;
            while feeding.load(Ordering::Relaxed) {
                let byte = head.get(sent).copied().unwrap_or(b'a');
                for stream in &mut streams {
                    let _ = stream.write_all(&[byte]);
                }
                sent += 1;
                // One byte a second, checking for the end more often.
                for _ in 0..10 {
                    if !feeding.load(Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            sent
        })
    };

    let mut times = Vec::with_capacity(2 * ROUNDS);
    let started = Instant::now();
    for round in 0..MAX_ROUNDS {
        if round >= ROUNDS && started.elapsed() >= SPAN {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
        for (path, key) in [("/healthz", ""), ("/v1/components", key.as_str())] {
            let start = Instant::now();
            let answer = get(&addr, path, key);
            times.push(start.elapsed());
            assert_eq!(
                answer.status, 200,
                "round {round}, {path}: {:?}",
                answer.body
            );
        }
    }
    let took = started.elapsed();
    feeding.store(false, Ordering::Relaxed);
    let bytes_fed = feeder.join().unwrap();

    let held = idle
        .iter()
        .chain(loris.iter())
        .filter(|s| still_open(s))
        .count();
    assert_eq!(
        held,
        IDLE + LORIS,
        "the server dropped some of the clients it holds"
    );
    times.sort();
    println!(
        "{} requests beside {IDLE} idle and {LORIS} slow-loris connections ({bytes_fed} header bytes each) \
         in {took:?}: p50 {:?}, p99 {:?}, max {:?}",
        times.len(),
        times[times.len() / 2],
        times[times.len() * 99 / 100],
        times[times.len() - 1],
    );
}

#[test]
fn connections_past_the_cap_wait_until_a_slot_frees() {
    let server = Server::start_with_args(&["--max-connections", "50", "--header-timeout", "1h"]);
    let addr = server.addr().to_string();
    let mut idle: Vec<TcpStream> = (0..60).map(|_| connect(&addr)).collect();

    let (answered, answer) = std::sync::mpsc::channel();
    let client = {
        let addr = addr.clone();
        std::thread::spawn(move || {
            let _ = answered.send(get(&addr, "/healthz", "").status);
        })
    };
    // Every slot is held by an idle connection: the client waits.
    assert!(
        answer.recv_timeout(Duration::from_secs(1)).is_err(),
        "served past --max-connections"
    );
    for stream in idle.drain(..20) {
        drop(stream);
    }
    let status = answer
        .recv_timeout(Duration::from_secs(60))
        .expect("not served after slots were freed");
    assert_eq!(status, 200);
    client.join().unwrap();
    // The remaining idle connections are still held, and the node serves on.
    assert!(idle.iter().all(still_open));
    assert_eq!(get(&addr, "/healthz", "").status, 200);
}

/// The labels of every `name{...} value` line of one metric.
fn series(text: &str, name: &str) -> Vec<Vec<(String, String)>> {
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix('{'))
        .map(|mut rest| {
            // `key="value",...}`; values (route templates) may hold braces.
            let mut labels = Vec::new();
            while let Some((key, after)) = rest.split_once("=\"") {
                let (value, after) = after.split_once('"').expect("closing quote");
                labels.push((key.to_string(), value.to_string()));
                rest = after.strip_prefix(',').unwrap_or(after);
                if rest.starts_with('}') {
                    break;
                }
            }
            labels
        })
        .collect()
}

#[test]
fn metric_labels_stay_in_fixed_sets_whatever_clients_send() {
    let server = Server::start();
    let addr = server.addr();
    let key = server.default_key();
    let methods = [
        "GET",
        "POST",
        "PUT",
        "DELETE",
        "PATCH",
        "HEAD",
        "OPTIONS",
        "TRACE",
        "FOO",
        "BREW",
        "XYZZYMETHOD",
    ];
    let known = [
        "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "other",
    ];
    let mut rng = StdRng::seed_from_u64(11);
    for _ in 0..1_000 {
        let method = methods[rng.random_range(0..methods.len())];
        let shape = rng.random_range(0..9);
        let mut token = || format!("zqx{:08x}", rng.random::<u32>());
        let path = match shape {
            0 => format!("/v1/runs/{}", token()),
            1 => format!("/v1/runs/{}/events", token()),
            2 => format!("/v1/runs/{}/cancel", token()),
            3 => format!("/v1/components/{}/{}", token(), token()),
            4 => format!("/v1/tenants/{}", token()),
            5 => format!("/{}", token()),
            6 => format!("/v1/{}/{}?{}=1", token(), token(), token()),
            7 => "/healthz".to_string(),
            _ => "/v1/components".to_string(),
        };
        let key = if rng.random_bool(0.5) {
            key.as_str()
        } else {
            ""
        };
        http::request(addr, method, &path, key, None);
    }

    let openapi = get(addr, "/v1/openapi.json", "").body;
    let mut routes: BTreeSet<String> = openapi["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .cloned()
        .collect();
    routes.insert("/v1/openapi.json".into());
    routes.insert("unmatched".into());

    let text = get(addr, "/metrics", "")
        .body
        .as_str()
        .unwrap_or("")
        .to_string();
    let requests = series(&text, "weft_http_requests_total");
    let (mut routes_seen, mut statuses_seen) = (BTreeSet::new(), BTreeSet::new());
    for labels in &requests {
        for (name, value) in labels {
            match name.as_str() {
                "method" => assert!(known.contains(&value.as_str()), "method {value}"),
                "route" => {
                    assert!(routes.contains(value), "route {value}");
                    routes_seen.insert(value.clone());
                }
                "status" => {
                    assert!(
                        value.len() == 3 && value.bytes().all(|b| b.is_ascii_digit()),
                        "status {value}"
                    );
                    statuses_seen.insert(value.clone());
                }
                other => panic!("label {other}"),
            }
        }
    }
    let bound = known.len() * routes_seen.len() * statuses_seen.len();
    println!(
        "{} series of weft_http_requests_total after 1,000 random requests ({} routes, {} statuses; bound {bound})",
        requests.len(),
        routes_seen.len(),
        statuses_seen.len()
    );
    assert!(!requests.is_empty());
    assert!(requests.len() <= bound);
    for labels in series(&text, "weft_http_request_duration_seconds_bucket") {
        for (name, value) in labels {
            match name.as_str() {
                "method" => assert!(known.contains(&value.as_str()), "method {value}"),
                "route" => assert!(routes.contains(&value), "route {value}"),
                _ => {}
            }
        }
    }
    for raw in ["zqx", "FOO", "BREW", "XYZZYMETHOD", "TRACE"] {
        assert!(!text.contains(raw), "{raw} in the metrics:\n{text}");
    }
}

#[test]
fn a_redis_password_is_never_printed() {
    const SECRET: &str = "hunter2secret";
    let url = format!("redis://user:{SECRET}@127.0.0.1:{}/0", free_port());
    let dir = tempfile::Builder::new()
        .prefix("weft-redact-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let serve = |redis: &str, log: &str| {
        let log = std::fs::File::create(dir.path().join(log)).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_weft"));
        clear_env(&mut command);
        command
            .args(["serve", "--redis", redis, "--listen"])
            .arg(format!("127.0.0.1:{}", free_port()))
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env("WEFT_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        command.spawn().expect("start weft serve")
    };
    let read = |log: &str| std::fs::read_to_string(dir.path().join(log)).unwrap_or_default();
    let wait = |child: &mut std::process::Child| {
        let deadline = Instant::now() + BOUND;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("weft serve did not stop");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    // Nothing listens on the port: the server keeps retrying and says so.
    let mut child = serve(&url, "closed.log");
    let deadline = Instant::now() + BOUND;
    while !read("closed.log").contains("Redis unreachable") {
        assert!(
            Instant::now() < deadline,
            "no retry logged:\n{}",
            read("closed.log")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    wait(&mut child);
    let log = read("closed.log");
    assert!(!log.contains(SECRET), "{log}");
    assert!(log.contains("redis://user:***@127.0.0.1:"), "{log}");

    // A URL that does not parse is refused without being repeated.
    let mut child = serve(
        &format!("redis://user:{SECRET}@127.0.0.1:notaport"),
        "bad.log",
    );
    wait(&mut child);
    let log = read("bad.log");
    assert!(log.contains("Redis URL"), "{log}");
    assert!(!log.contains(SECRET), "{log}");

    // Nor does the help show it, from the environment.
    for command in ["serve", "exec"] {
        let mut help = Command::new(env!("CARGO_BIN_EXE_weft"));
        clear_env(&mut help);
        let out = help
            .args([command, "--help"])
            .env("WEFT_REDIS_URL", &url)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        assert!(text.contains("WEFT_REDIS_URL"), "{text}");
        assert!(!text.contains(SECRET), "{text}");
    }
}
