//! The web console (`docs/console.md`): served from the binary under `/ui`
//! with its security headers and nothing else under it (every traversal is
//! the API's 404), absent from the OpenAPI document and from worker nodes,
//! and driven in a real headless Chromium by `tests/ui/console.mjs`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

use crate::http::get;
use crate::server::Server;

/// An answer read off the socket: status, lower-cased headers and body.
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` with the path sent exactly as given, as no HTTP client would.
fn raw_get(addr: &str, path: &str) -> Raw {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line for {path}: {head:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Raw {
        status,
        headers,
        body: body.to_string(),
    }
}

#[test]
fn the_console_is_served_with_strict_headers_and_nothing_else_under_ui_is() {
    let server = Server::start();
    for (path, content_type) in [
        ("/ui/", "text/html; charset=utf-8"),
        ("/ui/index.html", "text/html; charset=utf-8"),
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/dag.js", "text/javascript; charset=utf-8"),
        ("/ui/style.css", "text/css; charset=utf-8"),
    ] {
        let answer = raw_get(server.addr(), path);
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        assert_eq!(answer.header("content-type"), Some(content_type), "{path}");
        let csp = answer.header("content-security-policy").unwrap_or("");
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(answer.header("referrer-policy"), Some("no-referrer"));
        assert!(answer.header("etag").is_some(), "{path}");
        assert_eq!(answer.header("cache-control"), Some("no-cache"));
    }
    let index = raw_get(server.addr(), "/ui/");
    // No inline script or style for the policy to refuse.
    assert!(!index.body.contains("<script>"), "{}", index.body);
    assert!(!index.body.contains("style="), "{}", index.body);
    let bare = raw_get(server.addr(), "/ui");
    assert_eq!(bare.status, 308);
    assert_eq!(bare.header("location"), Some("/ui/"));

    for path in [
        "/ui/../Cargo.toml",
        "/ui/%2e%2e/Cargo.toml",
        "/ui/..%2fCargo.toml",
        "/ui/%2e%2e%2fCargo.toml",
        "/ui/%2E%2E%2F%2E%2E%2FCargo.toml",
        "/ui/..\\Cargo.toml",
        "/ui/..%5cCargo.toml",
        "/ui/%5c..%5c..%5cCargo.toml",
        "/ui//etc/passwd",
        "/ui/./app.js",
        "/ui/app.js/",
        "/ui/app.js%00",
        "/ui/app%2ejs",
        "/ui/APP.JS",
        "/ui/ui.rs",
        "/ui/src/api/ui.rs",
        "/ui/../../../../etc/passwd",
        "/ui/....//Cargo.toml",
    ] {
        let answer = raw_get(server.addr(), path);
        assert_eq!(answer.status, 404, "{path}: {}", answer.body);
        assert!(
            answer
                .header("content-type")
                .is_some_and(|t| t.starts_with("application/json")),
            "{path}: {:?}",
            answer.headers
        );
        let body: Value = serde_json::from_str(&answer.body)
            .unwrap_or_else(|e| panic!("{path}: {e}: {}", answer.body));
        assert_eq!(body["error"]["code"], "not_found", "{path}");
        assert!(!answer.body.contains("[workspace]"), "{path}");
    }

    // The console is no part of the API's description.
    let openapi = get(server.addr(), "/v1/openapi.json", "").body;
    let paths = openapi["paths"].as_object().expect("paths");
    assert!(paths.keys().all(|p| !p.starts_with("/ui")), "{paths:?}");
}

#[test]
fn a_worker_node_serves_no_console() {
    if !crate::common::on_redis() {
        // With the embedded backend one process serves everything.
        return;
    }
    let worker = Server::start_with_args(&["--role", "worker"]);
    assert_eq!(raw_get(worker.addr(), "/healthz").status, 200);
    for path in ["/ui", "/ui/", "/ui/app.js"] {
        assert_eq!(raw_get(worker.addr(), path).status, 404, "{path}");
    }
}

/// The repository's root and the cargo target directory.
fn dirs() -> (PathBuf, PathBuf) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the repository")
        .to_path_buf();
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .to_path_buf();
    (repo, target)
}

/// Installs chromium and playwright-core (`scripts/ui-test-deps.sh`) once
/// per test process; the test fails when they cannot be installed.
pub(crate) fn browser_deps() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let (repo, target) = dirs();
        let status = Command::new(repo.join("scripts/ui-test-deps.sh"))
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .expect("run scripts/ui-test-deps.sh");
        assert!(status.success(), "scripts/ui-test-deps.sh failed: {status}");
    });
}

#[test]
fn the_console_signs_in_shows_runs_live_and_cancels_in_a_real_browser() {
    browser_deps();
    let server = Server::start();
    let (repo, target) = dirs();
    let out = Command::new("node")
        .arg(repo.join("tests/ui/console.mjs"))
        .env("WEFT_URL", &server.url)
        .env("WEFT_API_KEY", server.default_key())
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tests/ui/console.mjs failed ({}):\n{stdout}\n{stderr}\nserver log:\n{}",
        out.status,
        server.log()
    );
    assert!(stdout.contains("console scenario passed"), "{stdout}");
    for page in [
        "runs",
        "run",
        "drawer",
        "components",
        "workflows",
        "schedules",
    ] {
        let shot = target.join("ui-screenshots").join(format!("{page}.png"));
        assert!(
            stdout.contains(&format!("screenshot {}", shot.display())) && shot.is_file(),
            "no screenshot {}:\n{stdout}",
            shot.display()
        );
    }
}
