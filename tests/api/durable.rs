//! A node killed with SIGKILL at any moment loses nothing it accepted: runs
//! that got `202` finish, finished runs keep their output, no step result is
//! recorded twice, idempotency keys still dedupe, and a publish or a tenant
//! creation is there whole or not at all. On the embedded backend this is the
//! file store; on Redis, Redis.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weft::bundled::paths;

use crate::http::{Answer, get, try_request};
use crate::server::{ADMIN_TOKEN, Server};

const RUNS: usize = 300;
const KILLS: usize = 5;

/// Replaces the limits of tenant `default` (those not given take their defaults).
fn set_default_limits(addr: &str, limits: Value) {
    let body = limits.to_string();
    let set = crate::http::request(
        addr,
        "PUT",
        "/v1/tenants/default/limits",
        ADMIN_TOKEN,
        Some(("application/json", body.as_bytes())),
    );
    assert_eq!(set.status, 200, "{:?}", set.body);
}

/// Run `n`: a fan-out of three sleeps and a join, or a chain of three
/// sleeps; every output follows from `n`, so a result recorded twice or
/// mixed up shows.
fn workflow(n: usize) -> Value {
    let sleep = |id: &str, needs: &[&str], value: Value| {
        json!({ "id": id, "component": "sleep@1", "needs": needs,
                "input": { "ms": 150, "value": value } })
    };
    let steps = if n.is_multiple_of(2) {
        vec![
            sleep("a", &[], json!("${input.n}")),
            sleep("b", &[], json!("${input.n}")),
            sleep("c", &[], json!("${input.n}")),
            json!({ "id": "join", "component": "echo@1", "needs": ["a", "b", "c"],
                    "input": { "sum": ["${steps.a.output.value}", "${steps.b.output.value}", "${steps.c.output.value}"] } }),
        ]
    } else {
        vec![
            sleep("a", &[], json!("${input.n}")),
            sleep("b", &["a"], json!("${steps.a.output.value}")),
            sleep("c", &["b"], json!("${steps.b.output.value}")),
        ]
    };
    json!({ "workflow": { "name": format!("crash-{}", n % 2), "steps": steps,
                          "output": { "n": "${input.n}" } },
            "input": { "n": n } })
}

/// Submits run `n` with its idempotency key until an answer comes, however
/// often the server is down meanwhile; the run's id.
fn submit(addr: &str, key: &str, n: usize) -> String {
    let body = serde_json::to_vec(&workflow(n)).unwrap();
    let idem = format!("crash-run-{n}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let answer = try_request(
            addr,
            "POST",
            "/v1/runs",
            key,
            &[("Idempotency-Key", &idem)],
            Some(("application/json", &body)),
        );
        match answer {
            Ok(Answer { status: 202, body }) => return body["id"].as_str().unwrap().to_string(),
            Ok(Answer { status, body }) if status >= 500 || status == 429 => {
                let _ = body;
            }
            Ok(Answer { status, body }) => panic!("run {n}: {status} {body}"),
            Err(_) => {}
        }
        assert!(Instant::now() < deadline, "run {n} was never accepted");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What a finished run must hold.
fn check_finished(n: usize, run: &Value) {
    assert_eq!(run["status"], "succeeded", "run {n}: {run}");
    assert_eq!(run["output"], json!({ "n": n }), "run {n}");
    for (id, step) in run["steps"].as_object().unwrap() {
        assert_eq!(step["status"], "succeeded", "run {n} step {id}");
        // A step whose result was recorded and then run again would show a
        // second attempt or another output.
        assert_eq!(step["attempts"], 1, "run {n} step {id}: {step}");
        if id == "join" {
            assert_eq!(step["output"], json!({ "sum": [n, n, n] }), "run {n}");
        } else {
            assert_eq!(
                step["output"],
                json!({ "slept_ms": 150, "value": n }),
                "run {n}"
            );
        }
    }
}

#[test]
fn accepted_runs_survive_five_kills_of_the_node() {
    let mut server = Server::start();
    let addr = server.addr().to_string();
    let key = server.default_key();
    set_default_limits(
        &addr,
        json!({ "runs_per_second": 10000, "concurrent_runs": 10000 }),
    );

    // Submitted at a steady pace while the node is killed and started again.
    let accepted: Arc<Mutex<HashMap<usize, String>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let submitter = {
        let (accepted, done, addr, key) =
            (accepted.clone(), done.clone(), addr.clone(), key.clone());
        std::thread::spawn(move || {
            for n in 0..RUNS {
                let id = submit(&addr, &key, n);
                accepted.lock().unwrap().insert(n, id);
                std::thread::sleep(Duration::from_millis(25));
            }
            done.store(true, Ordering::SeqCst);
        })
    };

    // Finished runs as seen before a kill, to compare with after it.
    let mut seen: HashMap<usize, Value> = HashMap::new();
    for kill in 1..=KILLS {
        std::thread::sleep(Duration::from_millis(700 + 100 * kill as u64));
        let ids: Vec<(usize, String)> = accepted
            .lock()
            .unwrap()
            .iter()
            .map(|(n, id)| (*n, id.clone()))
            .collect();
        for (n, id) in &ids {
            if seen.contains_key(n) {
                continue;
            }
            if let Ok(answer) =
                try_request(&addr, "GET", &format!("/v1/runs/{id}"), &key, &[], None)
                && answer.body["status"] == "succeeded"
            {
                seen.insert(*n, answer.body);
            }
        }
        let running = try_request(&addr, "GET", "/metrics", "", &[], None)
            .map(|m| crate::http::metric(m.body.as_str().unwrap_or(""), "weft_steps_running"))
            .ok()
            .flatten()
            .unwrap_or(0.0);
        eprintln!(
            "kill {kill}: {} runs accepted, {} seen finished, {running} steps running",
            ids.len(),
            seen.len()
        );
        assert!(
            ids.len() > seen.len(),
            "kill {kill} came when no run was going: the test proves nothing"
        );
        server.kill();
        server.start_again();
    }
    submitter.join().expect("the submitter");
    assert!(done.load(Ordering::SeqCst));
    assert!(
        !seen.is_empty(),
        "no run finished between kills: the test proves nothing"
    );

    let accepted = accepted.lock().unwrap().clone();
    assert_eq!(accepted.len(), RUNS);
    let deadline = Instant::now() + Duration::from_secs(120);
    for (n, id) in &accepted {
        let run = loop {
            let run = get(&addr, &format!("/v1/runs/{id}"), &key);
            assert_eq!(run.status, 200, "run {n} ({id}) was lost: {:?}", run.body);
            let status = run.body["status"].as_str().unwrap_or_default().to_string();
            if status == "succeeded" || status == "failed" || status == "cancelled" {
                break run.body;
            }
            assert!(
                Instant::now() < deadline,
                "run {n} did not finish: {}",
                run.body
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        check_finished(*n, &run);
        if let Some(before) = seen.get(n) {
            assert_eq!(&run, before, "run {n} changed after it had finished");
        }
    }

    // Every key still names its run.
    for (n, id) in &accepted {
        assert_eq!(
            &submit(&addr, &key, *n),
            id,
            "run {n}: its idempotency key was lost"
        );
    }
    server.stop();
}

#[test]
fn a_publish_or_tenant_creation_cut_by_a_kill_is_whole_or_absent() {
    let mut server = Server::start();
    let addr = server.addr().to_string();
    let key = server.default_key();
    set_default_limits(&addr, json!({ "publishes_per_minute": 100000 }));
    let bytes = std::fs::read(paths::TEXT).unwrap();
    let digest = {
        use sha2::Digest;
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)))
    };
    let mut attempted_versions = 0;
    let mut attempted_tenants = 0;
    let mut tenant_keys: HashMap<String, String> = HashMap::new();
    for round in 0..3 {
        // Publishes and tenant creations back to back, cut by a kill.
        let worker = {
            let (addr, key, bytes) = (addr.clone(), key.clone(), bytes.clone());
            let start = attempted_versions;
            std::thread::spawn(move || {
                let mut created = Vec::new();
                for i in start..start + 1_000 {
                    let version = format!("/v1/components/cut/1.0.{i}");
                    let put = try_request(
                        &addr,
                        "PUT",
                        &version,
                        &key,
                        &[],
                        Some(("application/wasm", &bytes)),
                    );
                    let tenant = format!("t{i}");
                    let made = try_request(
                        &addr,
                        "POST",
                        "/v1/tenants",
                        ADMIN_TOKEN,
                        &[],
                        Some((
                            "application/json",
                            json!({ "name": tenant }).to_string().as_bytes(),
                        )),
                    );
                    match (put, made) {
                        (Ok(p), Ok(t)) => {
                            assert!(p.status == 201, "publish {i}: {} {}", p.status, p.body);
                            assert!(t.status == 201, "tenant {i}: {} {}", t.status, t.body);
                            created.push((tenant, t.body["api_key"].as_str().unwrap().to_string()));
                        }
                        _ => return (i + 1, created),
                    }
                }
                (start + 1_000, created)
            })
        };
        std::thread::sleep(Duration::from_millis(400 + 300 * round));
        server.kill();
        let (attempted, created) = worker.join().unwrap();
        attempted_versions = attempted;
        attempted_tenants = attempted;
        tenant_keys.extend(created);
        server.start_again();
    }
    assert!(
        tenant_keys.len() > 3,
        "too few creations before the kills to show anything"
    );

    for i in 0..attempted_versions {
        let path = format!("/v1/components/cut/1.0.{i}");
        let got = get(&addr, &path, &key);
        match got.status {
            200 => {
                assert_eq!(got.body["digest"], digest.as_str(), "version {i}");
                assert_eq!(got.body["size"], bytes.len(), "version {i}");
            }
            404 => {}
            other => panic!("version {i}: {other} {}", got.body),
        }
        // The same bytes again: created if it was lost, unchanged if kept.
        let again = crate::http::request(
            &addr,
            "PUT",
            &path,
            &key,
            Some(("application/wasm", &bytes)),
        );
        let expected = if got.status == 200 { 200 } else { 201 };
        assert_eq!(again.status, expected, "version {i}: {}", again.body);
    }
    for i in 0..attempted_tenants {
        let name = format!("t{i}");
        let got = get(&addr, &format!("/v1/tenants/{name}"), ADMIN_TOKEN);
        match got.status {
            200 => assert_eq!(got.body["tenant"], name.as_str()),
            404 => assert!(
                !tenant_keys.contains_key(&name),
                "tenant {name} got 201 and was lost"
            ),
            other => panic!("tenant {name}: {other} {}", got.body),
        }
    }
    // The keys handed out work after the kills.
    for (name, tenant_key) in tenant_keys.iter().take(20) {
        let components = get(&addr, "/v1/components", tenant_key);
        assert_eq!(
            components.status, 200,
            "the key of tenant {name} no longer works"
        );
    }
    server.stop();
}

/// `weft serve` on `dir` (embedded backend), waited for: it must refuse.
fn refused_start(dir: &std::path::Path) -> String {
    let out = crate::common::weft()
        .args(["serve", "--listen"])
        .arg(format!("127.0.0.1:{}", crate::server::free_port()))
        .arg("--data-dir")
        .arg(dir)
        .env("WEFT_LOG", "warn")
        .output()
        .expect("run weft serve");
    assert!(
        !out.status.success(),
        "a second weft serve started on {}",
        dir.display()
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_second_server_on_one_data_directory_refuses_to_start() {
    let server = Server::start_embedded();
    let stderr = refused_start(&server.data_dir());
    assert!(stderr.contains("is in use by process"), "{stderr}");
    // The first one goes on unharmed.
    let health = get(server.addr(), "/healthz", "");
    assert_eq!(health.status, 200);
}

#[test]
fn a_store_of_a_newer_weft_is_refused_naming_both_versions_and_left_alone() {
    let mut server = Server::start_embedded();
    let key = server.default_key();
    let run = crate::http::post_json(
        server.addr(),
        "/v1/runs",
        &key,
        &json!({ "workflow": { "steps": [ { "id": "a", "component": "echo@1", "input": { "x": 1 } } ] } }),
    );
    assert_eq!(run.status, 202);
    server.stop();
    let file = server.data_dir().join("weft.db");
    {
        let conn = rusqlite::Connection::open(&file).unwrap();
        // Everything in the main file, so that comparing it compares it all.
        conn.execute_batch("PRAGMA journal_mode = DELETE; PRAGMA user_version = 99;")
            .unwrap();
    }
    let before = std::fs::read(&file).unwrap();
    let stderr = refused_start(&server.data_dir());
    assert!(stderr.contains("schema version 99"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "up to {}",
            weft::backend::memory::store::SCHEMA_VERSION
        )),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&file).unwrap(),
        before,
        "the newer file was changed"
    );
}
