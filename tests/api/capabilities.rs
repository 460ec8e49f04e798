//! Steps that act on the world: outgoing HTTP to a real local server (plain
//! and TLS with a test CA) under the tenant's and the step's allow-lists,
//! its budgets, and secrets set over HTTP, read by Rust, Python and
//! JavaScript components, and shown nowhere. Publishing them: `publishing.rs`.

use std::process::Command;

use serde_json::{Value, json};

use crate::common::target::{TEXT, Target};
use crate::common::{on_redis, polyglot};
use crate::http::{self, get};
use crate::language::{ended, events, wait};
use crate::server::{ADMIN_TOKEN, Server};

pub(crate) fn put_secret(server: &Server, key: &str, name: &str, body: &Value) -> http::Answer {
    let bytes = serde_json::to_vec(body).unwrap();
    http::request(
        server.addr(),
        "PUT",
        &format!("/v1/secrets/{name}"),
        key,
        Some(("application/json", &bytes)),
    )
}

pub(crate) fn publish(
    server: &Server,
    key: &str,
    name: &str,
    path: &std::path::Path,
) -> http::Answer {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    http::request(
        server.addr(),
        "PUT",
        &format!("/v1/components/{name}/1.0.0"),
        key,
        Some(("application/wasm", &bytes)),
    )
}

/// A `fetch@1` step that runs once and lets the run go on when it fails.
fn fetch(id: &str, url: &str, allow: &[&str], extra: Value) -> Value {
    let mut step = json!({
        "id": id,
        "component": "fetch@1",
        "input": {"url": url},
        "http": {"allow": allow},
        "retry": {"max_attempts": 1},
        "on_error": "continue",
    });
    for (k, v) in extra.as_object().unwrap() {
        if k == "input" {
            for (ik, iv) in v.as_object().unwrap() {
                step["input"][ik] = iv.clone();
            }
        } else {
            step[k] = v.clone();
        }
    }
    step
}

fn logs(step: &Value) -> String {
    step["logs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| l["message"].as_str().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn requests_go_out_only_where_tenant_and_step_both_allow_within_the_budgets() {
    let scratch = tempfile::tempdir().unwrap();
    let target = Target::start(scratch.path());
    let ca = target.ca_pem.to_str().unwrap().to_string();
    let server = Server::start_with_args(&["--http-ca-file", &ca]);
    let key = server.default_key();
    let (p, t) = (target.port, target.tls_port);
    let plain = format!("127.0.0.1:{p}");
    let tls = format!("127.0.0.1:{t}");
    server.set_limits(
        "default",
        json!({
            "allowed_hosts": [plain, tls, "api.other.test"],
            "http_requests": 3,
            "http_response_bytes": 1000,
        }),
    );
    let localhost = format!("localhost:{p}");
    let doc = json!({ "steps": [
        fetch("plain", &target.url("/json"), &[&plain], json!({})),
        fetch("tls", &target.tls_url("/json"), &[&tls], json!({})),
        // Allowed by the tenant, not by the step (which names the other port).
        fetch("not_step", &target.url("/json"), &[&tls], json!({})),
        // Allowed by the step, not by the tenant.
        fetch("not_tenant", "http://api.unlisted.test/x", &["api.unlisted.test"], json!({})),
        fetch("ip_literal", &format!("http://[::1]:{p}/json"), &[&format!("[::1]:{p}")], json!({})),
        fetch("localhost", &format!("http://localhost:{p}/json"), &[&localhost], json!({})),
        fetch("metadata", "http://169.254.169.254/latest/meta-data/", &["169.254.169.254"], json!({})),
        fetch(
            "redirect",
            &target.url(&format!("/redirect?to=http://localhost:{p}/json")),
            &[&plain, &localhost],
            json!({}),
        ),
        fetch("too_many", &target.url("/json"), &[&plain], json!({"input": {"repeat": 4}})),
        fetch("too_big", &target.url("/big?bytes=5000"), &[&plain], json!({})),
        fetch("hang", &target.url("/hang"), &[&plain], json!({"timeout_ms": 2000})),
    ]});
    let id = server.submit(&key, &doc, json!({}));
    let run = wait(&server, &key, &id, "the run to end", ended);
    let steps = &run["steps"];

    for ok in ["plain", "tls"] {
        assert_eq!(steps[ok]["status"], "succeeded", "{ok}: {}", steps[ok]);
        assert_eq!(steps[ok]["output"]["body"]["ok"], true);
        assert!(
            logs(&steps[ok]).contains("/json -> 200"),
            "{}",
            logs(&steps[ok])
        );
    }
    let refused = [
        ("not_step", "is not in the step's"),
        ("not_tenant", "is not in the tenant's allowed_hosts"),
        ("ip_literal", "is not in the tenant's allowed_hosts"),
        ("localhost", "is not in the tenant's allowed_hosts"),
        ("metadata", "is not in the tenant's allowed_hosts"),
        ("redirect", "localhost"),
    ];
    for (name, why) in refused {
        let step = &steps[name];
        assert_eq!(step["status"], "failed", "{name}: {step}");
        assert_eq!(step["error"]["code"], "http_error", "{name}: {step}");
        assert!(
            step["error"]["message"]
                .as_str()
                .unwrap()
                .contains("denied"),
            "{name}: {step}"
        );
        let log = logs(step);
        assert!(
            log.contains("refused") && log.contains(why),
            "{name}: {log}"
        );
        // No query and no headers in the request log.
        assert!(!log.contains("?to="), "{name}: {log}");
    }
    // The redirect's first hop reached the server; the second never did.
    assert!(logs(&steps["redirect"]).contains("/redirect -> 302"));
    assert_eq!(steps["too_many"]["error"]["code"], "http_requests_exceeded");
    assert!(
        steps["too_many"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("more than 3 requests")
    );
    assert_eq!(steps["too_big"]["error"]["code"], "http_response_too_large");
    assert!(
        steps["too_big"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1000 bytes")
    );
    assert_eq!(
        steps["hang"]["error"]["code"], "timeout",
        "{}",
        steps["hang"]
    );
    // Nothing the server saw came from a refused step.
    let paths: Vec<String> = target.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(
        paths.iter().filter(|p| *p == "/json").count(),
        2 + 3,
        "{paths:?}"
    );
    assert!(!paths.iter().any(|p| p == "/x" || p.starts_with("/latest")));

    // A tenant that names only the host, not its loopback address, does not reach it.
    let acme = server.create_tenant("acme");
    let set = crate::cli::run(crate::cli::weft(&server.url, &server.data_dir()).args([
        "tenant",
        "limits",
        "acme",
        "--set",
        &format!("allowed_hosts={localhost}"),
        "--admin-token",
        ADMIN_TOKEN,
    ]));
    assert_eq!(set.code, 0, "{}", set.stderr);
    assert!(set.stdout.contains(&localhost), "{}", set.stdout);
    let published = publish(
        &server,
        &acme,
        "fetch",
        std::path::Path::new(weft::bundled::paths::FETCH),
    );
    assert!(
        matches!(published.status, 200 | 201),
        "{:?}",
        published.body
    );
    let doc = json!({ "steps": [
        fetch("by_name", &format!("http://localhost:{p}/json"), &[&localhost], json!({})),
    ]});
    let id = server.submit(&acme, &doc, json!({}));
    let run = wait(&server, &acme, &id, "the run to end", ended);
    let step = &run["steps"]["by_name"];
    assert_eq!(step["error"]["code"], "http_error", "{step}");
    let log = logs(step);
    assert!(
        log.contains("resolves to") && log.contains("loopback"),
        "{log}"
    );

    // A node that does not trust the test CA refuses the same server's
    // certificate: TLS is verified, not merely spoken.
    let untrusting = Server::start();
    let untrusting_key = untrusting.default_key();
    untrusting.set_limits("default", json!({"allowed_hosts": [tls]}));
    let doc = json!({ "steps": [fetch("tls", &target.tls_url("/json"), &[&tls], json!({}))] });
    let id = untrusting.submit(&untrusting_key, &doc, json!({}));
    let run = wait(&untrusting, &untrusting_key, &id, "the run to end", ended);
    let step = &run["steps"]["tls"];
    assert_eq!(step["error"]["code"], "http_error", "{step}");
    let log = logs(step);
    assert!(
        log.contains("failed") && log.to_lowercase().contains("certificate"),
        "{log}"
    );

    // An allow entry that is not a host pattern fails validation.
    let bad =
        json!({ "steps": [fetch("bad", &target.url("/json"), &["http://x.com/path"], json!({}))] });
    let answer = http::post_json(server.addr(), "/v1/workflows/validate", &key, &bad);
    assert_eq!(answer.status, 422, "{:?}", answer.body);
    assert_eq!(
        answer.body["error"]["details"][0]["path"],
        "/steps/0/http/allow/0"
    );
    // And so does a tenant entry.
    let bytes = serde_json::to_vec(&json!({"allowed_hosts": ["https://x.com"]})).unwrap();
    let answer = http::request(
        server.addr(),
        "PUT",
        "/v1/tenants/default/limits",
        ADMIN_TOKEN,
        Some(("application/json", &bytes)),
    );
    assert_eq!(answer.status, 422, "{:?}", answer.body);
    assert_eq!(
        answer.body["error"]["details"][0]["path"],
        "/allowed_hosts/0"
    );
}

const SECRET: &str = "sk_test_7Hq2weftZx91Lm";

#[test]
fn secrets_are_set_listed_used_by_rust_python_and_js_deleted_and_shown_nowhere() {
    let scratch = tempfile::tempdir().unwrap();
    let target = Target::start(scratch.path());
    let server = Server::start_with_env(&[], &[("WEFT_LOG", "debug")]);
    let key = server.default_key();
    let plain = format!("127.0.0.1:{}", target.port);
    server.set_limits("default", json!({"allowed_hosts": [plain]}));

    // The Python and JavaScript examples publish with the default limits.
    for (name, file) in [("fetch-json", "fetch-json"), ("summarize", "summarize")] {
        let answer = publish(&server, &key, name, &polyglot(file));
        assert_eq!(answer.status, 201, "{name}: {:?}", answer.body);
    }
    // Built against weft:step@0.1.0 before 0.2.0 existed: runs beside them unchanged.
    let old = publish(
        &server,
        &key,
        "oldlog",
        std::path::Path::new(crate::common::OLD_LOG),
    );
    assert_eq!(old.status, 201, "{:?}", old.body);
    let leak = publish(
        &server,
        &key,
        "leak",
        std::path::Path::new(weft::bundled::paths::LEAK),
    );
    assert_eq!(leak.status, 201, "{:?}", leak.body);

    // Set, set again, list.
    let created = put_secret(&server, &key, "api_token", &json!({"value": "first"}));
    assert_eq!(created.status, 201, "{:?}", created.body);
    let replaced = put_secret(&server, &key, "api_token", &json!({"value": SECRET}));
    assert_eq!(replaced.status, 200, "{:?}", replaced.body);
    let listed = get(server.addr(), "/v1/secrets", &key);
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body["secrets"][0]["name"], "api_token");
    assert!(listed.body["secrets"][0]["updated_at"].is_string());
    assert!(!listed.body.to_string().contains(SECRET));

    // Bad secrets: a clear code each, nothing stored.
    let big = "x".repeat(64 * 1024 + 1);
    for (name, body, status, code) in [
        ("api_token", json!({"value": big}), 413, "secret_too_large"),
        ("Bad-Name", json!({"value": "v"}), 422, "invalid_secret"),
        ("other", json!({"value": 5}), 422, "invalid_request"),
        (
            "other",
            json!({"value": "v", "extra": 1}),
            422,
            "invalid_request",
        ),
    ] {
        let answer = put_secret(&server, &key, name, &body);
        assert_eq!(answer.status, status, "{name}: {:?}", answer.body);
        assert_eq!(answer.body["error"]["code"], code);
    }

    // A step listing a secret that does not exist is refused at submission.
    let unknown = json!({ "steps": [{"id": "s", "component": "leak@1", "input": {"secret": "nope"}, "secrets": ["nope"]}] });
    let answer = http::post_json(
        server.addr(),
        "/v1/runs",
        &key,
        &json!({"workflow": unknown}),
    );
    assert_eq!(answer.status, 422, "{:?}", answer.body);
    assert_eq!(
        answer.body["error"]["details"][0]["path"],
        "/steps/0/secrets/0"
    );

    let http = json!({"allow": [plain]});
    let doc = json!({ "steps": [
        {"id": "rust", "component": "fetch@1", "input": {"url": target.url("/echo-auth")},
         "http": http, "secrets": ["api_token"]},
        {"id": "python", "component": "fetch-json@1", "input": {"url": target.url("/json")},
         "http": http, "secrets": ["api_token"]},
        {"id": "js", "component": "summarize@1", "input": {"url": target.url("/text"), "max_words": 4},
         "http": http, "secrets": ["api_token"]},
        {"id": "leak", "component": "leak@1", "input": {"secret": "api_token"}, "secrets": ["api_token"]},
        {"id": "leak_error", "component": "leak@1", "input": {"secret": "api_token", "fail": true},
         "secrets": ["api_token"], "retry": {"max_attempts": 1}, "on_error": "continue"},
        {"id": "old", "component": "oldlog@1", "input": {"message": "from 0.1.0"}},
        // A step that does not list the secret does not get it.
        {"id": "ungranted", "component": "leak@1", "input": {"secret": "api_token"}},
    ]});
    let id = server.submit(&key, &doc, json!({}));
    let stream = events(&server, &key, &id);
    let run = wait(&server, &key, &id, "the run to end", ended);
    let steps = &run["steps"];
    for name in ["rust", "python", "js", "leak", "old", "ungranted"] {
        assert_eq!(
            steps[name]["status"], "succeeded",
            "{name}: {}",
            steps[name]
        );
    }
    // Each language sent the secret to the server ...
    let sent: Vec<_> = target
        .seen()
        .into_iter()
        .filter(|s| s.authorization.as_deref() == Some(&format!("Bearer {SECRET}")))
        .map(|s| s.path)
        .collect();
    for path in ["/echo-auth", "/json", "/text"] {
        assert!(
            sent.iter().any(|p| p == path),
            "{path} not sent with the secret: {sent:?}"
        );
    }
    // ... and read what came back.
    assert_eq!(steps["python"]["output"]["body"]["authorized"], true);
    assert_eq!(
        steps["js"]["output"]["summary"],
        TEXT.split(' ').take(4).collect::<Vec<_>>().join(" ")
    );
    assert_eq!(steps["js"]["output"]["words"], TEXT.split(' ').count());
    // What the step shows of it is `***`: its output, log, stdout, stderr and error.
    assert_eq!(
        steps["rust"]["output"]["body"]["authorization"],
        "Bearer ***"
    );
    assert_eq!(steps["leak"]["output"]["value"], "***");
    assert_eq!(steps["leak"]["output"]["found"], true);
    let leak_log = logs(&steps["leak"]);
    assert!(leak_log.contains("the secret is ***"), "{leak_log}");
    assert!(
        leak_log.contains("stdout: ***") && leak_log.contains("stderr: ***"),
        "{leak_log}"
    );
    assert_eq!(
        steps["leak_error"]["error"]["message"],
        "failing with *** in the message"
    );
    assert_eq!(steps["ungranted"]["output"]["found"], false);
    assert_eq!(steps["old"]["output"]["logged"], 5);
    assert!(logs(&steps["old"]).contains("from 0.1.0"));

    let run_text = run.to_string();
    let events_text = serde_json::to_string(&stream).unwrap();
    assert!(!run_text.contains(SECRET), "{run_text}");
    assert!(!events_text.contains(SECRET), "{events_text}");
    assert!(events_text.contains("succeeded"), "{events_text}");
    let listing = get(server.addr(), "/v1/runs", &key);
    assert!(!listing.body.to_string().contains(SECRET));
    let log = server.log();
    assert!(
        log.contains("the secret is ***"),
        "the server logs guest lines at debug"
    );
    assert!(!log.contains(SECRET), "the server's log shows the secret");

    // At rest: the data directory, or every key of Redis, holds no plaintext.
    match server.redis_port() {
        Some(port) => {
            let dumped = redis_dump(port);
            assert!(dumped.len() > 1000, "the dump read almost nothing");
            assert!(
                !contains(&dumped, SECRET.as_bytes()),
                "Redis holds the secret in plaintext"
            );
            assert!(
                contains(&dumped, b"api_token"),
                "the dump did not read the secrets"
            );
        }
        None => {
            let mut files = 0;
            for path in walk(&server.data_dir()) {
                let bytes = std::fs::read(&path).unwrap();
                files += 1;
                assert!(
                    !contains(&bytes, SECRET.as_bytes()),
                    "{} holds the secret",
                    path.display()
                );
            }
            assert!(files > 3, "read {files} files");
            let mode = std::fs::metadata(server.data_dir().join("secrets-key")).unwrap();
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(mode.permissions().mode() & 0o777, 0o600);
        }
    }

    // Another tenant sees none of them and cannot use them; it may keep
    // 1,000 of its own, and the next is refused with nothing lost.
    let acme = server.create_tenant("acme");
    assert_eq!(
        get(server.addr(), "/v1/secrets", &acme).body["secrets"],
        json!([])
    );
    for i in 0..1000 {
        let answer = put_secret(&server, &acme, &format!("s{i}"), &json!({"value": "v"}));
        assert_eq!(answer.status, 201, "{i}: {:?}", answer.body);
    }
    let over = put_secret(&server, &acme, "one_more", &json!({"value": "v"}));
    assert_eq!(over.status, 409, "{:?}", over.body);
    assert_eq!(over.body["error"]["code"], "too_many_secrets");
    let kept = get(server.addr(), "/v1/secrets", &acme).body;
    assert_eq!(kept["secrets"].as_array().unwrap().len(), 1000);
    assert_eq!(
        get(server.addr(), "/v1/secrets", &key).body["secrets"][0]["name"],
        "api_token"
    );

    // Deleted: gone from the list, and a second delete is a 404.
    let deleted = http::request(server.addr(), "DELETE", "/v1/secrets/api_token", &key, None);
    assert_eq!(deleted.status, 204);
    let again = http::request(server.addr(), "DELETE", "/v1/secrets/api_token", &key, None);
    assert_eq!(again.status, 404);
    assert_eq!(
        get(server.addr(), "/v1/secrets", &key).body["secrets"],
        json!([])
    );
    let answer = http::post_json(server.addr(), "/v1/runs", &key, &json!({"workflow": doc}));
    assert_eq!(answer.status, 422, "{:?}", answer.body);
    assert!(on_redis() || server.data_dir().join("secrets-key").exists());
}

/// Every key of the Redis on `port`, as `redis-cli --scan` lists them, dumped.
fn redis_dump(port: u16) -> Vec<u8> {
    let cli = weft::testing::redis_cli();
    let port = port.to_string();
    let keys = Command::new(&cli)
        .args(["-p", &port, "--scan"])
        .output()
        .expect("redis-cli --scan");
    assert!(keys.status.success());
    let mut all = Vec::new();
    for key in String::from_utf8(keys.stdout).unwrap().lines() {
        all.extend_from_slice(key.as_bytes());
        let dump = Command::new(&cli)
            .args(["-p", &port, "--no-raw", "DUMP", key])
            .output()
            .expect("redis-cli DUMP");
        all.extend_from_slice(&dump.stdout);
    }
    all
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
