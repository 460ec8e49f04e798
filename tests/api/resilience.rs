//! Clients that hang up half way, and restarts: nothing partial is kept,
//! nothing gets stuck, and what must survive a restart does.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;
use weft::bundled::paths;

use crate::http::{self, get, metric, post_json};
use crate::server::{ADMIN_TOKEN, Server};

fn metrics(server: &Server) -> String {
    get(server.addr(), "/metrics", "")
        .body
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// Polls until `check` holds, for at most 20 s.
pub(crate) fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_client_hanging_up_mid_upload_leaves_no_component() {
    let server = Server::start();
    let key = server.default_key();
    // Not one of the bundled examples, which are published at start.
    let bytes = std::fs::read(paths::SPIN).unwrap();
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    write!(
        stream,
        "PUT /v1/components/cut/1.0.0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/wasm\r\nContent-Length: {}\r\n\r\n",
        bytes.len()
    )
    .unwrap();
    stream.write_all(&bytes[..bytes.len() / 2]).unwrap();
    drop(stream);

    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        get(server.addr(), "/v1/components/cut/1.0.0", &key).status,
        404
    );
    let blob = server.data_dir().join("blobs").join(format!(
        "{}.wasm",
        &weft::cache::digest(&bytes)["sha256:".len()..]
    ));
    assert!(!blob.exists(), "a blob was stored for a cut-off upload");
    // The server is fine, and the whole upload then works.
    let whole = http::request(
        server.addr(),
        "PUT",
        "/v1/components/cut/1.0.0",
        &key,
        Some(("application/wasm", &bytes)),
    );
    assert_eq!(whole.status, 201, "{:?}", whole.body);
}

#[test]
fn a_client_hanging_up_mid_submit_creates_no_run() {
    let server = Server::start();
    let key = server.default_key();
    let body = br#"{"workflow": {"steps": [{"id": "a", "component": "echo@1"}]}, "input": {}}"#;
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    write!(
        stream,
        "POST /v1/runs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(&body[..20]).unwrap();
    drop(stream);
    std::thread::sleep(Duration::from_millis(300));
    let text = metrics(&server);
    assert_eq!(
        metric(&text, "weft_runs_submitted_total").unwrap_or(0.0),
        0.0,
        "{text}"
    );
    let accepted = post_json(
        server.addr(),
        "/v1/runs",
        &key,
        &serde_json::from_slice(body).unwrap(),
    );
    assert_eq!(accepted.status, 202);
}

#[test]
fn a_client_hanging_up_mid_event_stream_leaves_no_stuck_run() {
    let server = Server::start();
    let key = server.default_key();
    let run = post_json(
        server.addr(),
        "/v1/runs",
        &key,
        &json!({"workflow": {"steps": [
            {"id": "a", "component": "sleep@1", "input": {"ms": 800}},
            {"id": "b", "component": "echo@1", "needs": ["a"]}
        ]}}),
    );
    let id = run.body["id"].as_str().unwrap().to_string();
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    write!(
        stream,
        "GET /v1/runs/{id}/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    while !line.starts_with("data: ") {
        line.clear();
        reader.read_line(&mut line).unwrap();
    }
    assert_eq!(
        metric(&metrics(&server), "weft_event_streams_open"),
        Some(1.0)
    );
    drop(reader);
    drop(stream);

    eventually("the run to succeed", || {
        get(server.addr(), &format!("/v1/runs/{id}"), &key).body["status"] == "succeeded"
    });
    eventually("the stream to be closed", || {
        metric(&metrics(&server), "weft_event_streams_open") == Some(0.0)
    });
}

#[test]
fn tenants_keys_and_components_survive_a_restart_and_sigterm_ends_streams() {
    let mut server = Server::start();
    let created = post_json(
        server.addr(),
        "/v1/tenants",
        ADMIN_TOKEN,
        &json!({"name": "acme"}),
    );
    assert_eq!(created.status, 201);
    let acme = created.body["api_key"].as_str().unwrap().to_string();
    let bytes = std::fs::read(paths::TEXT).unwrap();
    let published = http::request(
        server.addr(),
        "PUT",
        "/v1/components/words/2.0.0",
        &acme,
        Some(("application/wasm", &bytes)),
    );
    assert_eq!(published.status, 201);
    let limits = http::request(
        server.addr(),
        "PUT",
        "/v1/tenants/acme/limits",
        ADMIN_TOKEN,
        Some(("application/json", br#"{"concurrent_runs": 7}"#)),
    );
    assert_eq!(limits.status, 200);
    let before = get(server.addr(), "/v1/components/words/2.0.0", &acme).body;
    let default_key = server.default_key();

    // A server with an open event stream still stops on SIGTERM.
    let run = post_json(
        server.addr(),
        "/v1/runs",
        &acme,
        &json!({"workflow": {"steps": [{"id": "a", "component": "words@2", "input": {"op": "upper", "text": "x"}}]}}),
    );
    let id = run.body["id"].as_str().unwrap().to_string();
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    write!(
        stream,
        "GET /v1/runs/{id}/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {acme}\r\n\r\n"
    )
    .unwrap();
    let status = server.stop();
    assert!(status.success(), "weft serve exited with {status}");
    drop(stream);

    server.restart();
    assert_eq!(
        server.default_key(),
        default_key,
        "the default tenant's key changed"
    );
    assert_eq!(
        get(server.addr(), "/v1/components/words/2.0.0", &acme).body,
        before
    );
    let info = get(server.addr(), "/v1/tenants/acme", ADMIN_TOKEN);
    assert_eq!(info.body["limits"]["concurrent_runs"], 7);
    let examples = get(server.addr(), "/v1/components", &default_key);
    assert_eq!(examples.status, 200);
    assert_eq!(
        examples.body["components"].as_array().unwrap().len(),
        weft::bundled::EXAMPLES.len()
    );
    // Both backends keep runs: the run is still there, and it ends.
    let after = get(server.addr(), &format!("/v1/runs/{id}"), &acme);
    assert_eq!(after.status, 200);
    eventually("the run to end", || {
        get(server.addr(), &format!("/v1/runs/{id}"), &acme).body["status"] == "succeeded"
    });
}
