//! Hostile input against a real `weft serve`: every attack gets its exact
//! status or step error, nothing is redelivered, and the node goes on serving
//! others (ARCHITECTURE.md section 11). Runs on either backend.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::http::{self, get, post_json};
use crate::server::{ADMIN_TOKEN, Server};

/// A second tenant, to show that others are unaffected; returns its key.
fn other_tenant(server: &Server, name: &str) -> String {
    let created = post_json(
        server.addr(),
        "/v1/tenants",
        ADMIN_TOKEN,
        &json!({"name": name}),
    );
    assert_eq!(created.status, 201, "{:?}", created.body);
    let key = created.body["api_key"].as_str().unwrap().to_string();
    publish_test_component(server, &key, "echo", weft::bundled::paths::ECHO);
    key
}

fn submit(server: &Server, key: &str, workflow: Value, input: Value) -> String {
    server.submit(key, &workflow, input)
}

/// Polls the run until it ends, for at most 120 s.
fn finished(server: &Server, key: &str, run: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let answer = get(server.addr(), &format!("/v1/runs/{run}"), key);
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        let status = answer.body["status"].as_str().unwrap_or("").to_string();
        if matches!(status.as_str(), "succeeded" | "failed" | "cancelled") {
            return answer.body;
        }
        assert!(
            Instant::now() < deadline,
            "run {run} did not end:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The node still runs another tenant's work.
fn others_are_served(server: &Server, key: &str) {
    let run = submit(
        server,
        key,
        json!({"steps": [{"id": "e", "component": "echo@1", "input": {"ok": true}}],
               "output": "${steps.e.output.ok}"}),
        json!({}),
    );
    let done = finished(server, key, &run);
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["output"], json!(true));
}

fn big_input() -> Value {
    json!({"big": "x".repeat(1 << 20)})
}

#[test]
fn template_amplification_fails_input_too_large_without_building_it() {
    let server = Server::start();
    let key = server.default_key();
    let other = other_tenant(&server, "bystander");
    for copies in [1_000usize, 100_000] {
        let refs = vec![Value::String("${input.big}".into()); copies];
        let run = submit(
            &server,
            &key,
            json!({"steps": [{"id": "amp", "component": "echo@1", "input": {"copies": refs},
                              "retry": {"max_attempts": 3, "initial_backoff_ms": 0}}]}),
            big_input(),
        );
        let done = finished(&server, &key, &run);
        assert_eq!(done["status"], "failed", "{done}");
        let step = &done["steps"]["amp"];
        assert_eq!(step["error"]["code"], "input_too_large", "{step}");
        // Not retried, whatever the step's retry policy, and not redelivered.
        assert_eq!(step["attempts"], 1, "{step}");
        assert_eq!(step["error"]["retryable"], false);
    }
    // The same through the run's output template.
    let refs = vec![Value::String("${input.big}".into()); 1_000];
    let run = submit(
        &server,
        &key,
        json!({"steps": [{"id": "e", "component": "echo@1", "input": {}}], "output": refs}),
        big_input(),
    );
    let done = finished(&server, &key, &run);
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["error"]["code"], "input_too_large", "{done}");
    assert_eq!(done["output"], Value::Null);
    others_are_served(&server, &other);
}

/// Sends a document to `/v1/workflows/validate` and returns the status and
/// the raw size of the answer.
fn validate(server: &Server, key: &str, document: &[u8]) -> (u16, usize, Value) {
    let answer = http::request(
        server.addr(),
        "POST",
        "/v1/workflows/validate",
        key,
        Some(("application/json", document)),
    );
    let size = serde_json::to_vec(&answer.body).unwrap().len();
    (answer.status, size, answer.body)
}

#[test]
fn pathological_documents_get_a_short_422_or_400() {
    let server = Server::start();
    let key = server.default_key();
    let other = other_tenant(&server, "bystander");
    let step = |i: usize| json!({"id": format!("s{i}"), "component": "noop@1"});

    // 100,000 steps: over steps_per_run, refused on the count alone.
    let many: Vec<Value> = (0..100_000).map(step).collect();
    let doc = serde_json::to_vec(&json!({"steps": many})).unwrap();
    let (status, size, body) = validate(&server, &key, &doc);
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_workflow");
    assert!(size < 64 << 10, "answer of {size} bytes");
    assert!(
        body["error"]["details"][0]["message"]
            .as_str()
            .unwrap()
            .contains("steps_per_run")
    );

    // With the limit raised, the validator itself meets the shapes.
    server.set_limits("default", json!({"steps_per_run": 1_000_000}));
    let same_id: Vec<Value> = (0..100_000).map(|_| step(0)).collect();
    let unknown_needs: Vec<String> = (0..100_000).map(|i| format!("ghost{i}")).collect();
    let shapes = [
        ("100,000 duplicate ids", json!({"steps": same_id})),
        (
            "100,000 unknown needs",
            json!({"steps": [{"id": "a", "component": "noop@1", "needs": unknown_needs}]}),
        ),
        (
            "one huge id",
            json!({"steps": [{"id": "a".repeat(3 << 20), "component": "noop@1"}]}),
        ),
    ];
    for (what, doc) in shapes {
        let doc = serde_json::to_vec(&doc).unwrap();
        assert!(doc.len() <= 4 << 20, "{what}: {} bytes", doc.len());
        let started = Instant::now();
        let (status, size, body) = validate(&server, &key, &doc);
        println!("{what}: {status} in {:?}, {size} bytes", started.elapsed());
        assert_eq!(status, 422, "{what}: {body}");
        assert!(size < 64 << 10, "{what}: answer of {size} bytes");
        let details = body["error"]["details"].as_array().unwrap();
        assert!(details.len() <= 100, "{what}: {} problems", details.len());
        if details.len() == 100 {
            assert_eq!(body["error"]["truncated"], true, "{what}");
        }
    }

    // Nesting deeper than 64: 400, before any parsing.
    let deep = format!(
        r#"{{"steps": [{{"id": "a", "component": "noop@1", "input": {}1{}}}]}}"#,
        "[".repeat(1 << 20),
        "]".repeat(1 << 20)
    );
    let (status, size, body) = validate(&server, &key, deep.as_bytes());
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "malformed_json");
    assert!(size < 64 << 10);
    let just_over = format!(
        r#"{{"steps": [], "x": {}1{}}}"#,
        "[".repeat(64),
        "]".repeat(64)
    );
    assert_eq!(validate(&server, &key, just_over.as_bytes()).0, 400);
    others_are_served(&server, &other);
}

#[test]
fn a_step_output_nested_too_deep_is_invalid_output() {
    let server = Server::start();
    let key = server.default_key();
    // 60 levels in the input fit in the request; the template nests them ten
    // deeper, and the echoed output is over the budget of 64.
    let mut nested = json!(1);
    for _ in 0..60 {
        nested = json!([nested]);
    }
    let mut template = json!("${input.n}");
    for _ in 0..10 {
        template = json!([template]);
    }
    let run = submit(
        &server,
        &key,
        json!({"steps": [{"id": "e", "component": "echo@1", "input": template}]}),
        json!({"n": nested}),
    );
    let done = finished(&server, &key, &run);
    assert_eq!(
        done["steps"]["e"]["error"]["code"], "invalid_output",
        "{done}"
    );
    // The run is readable: nothing stored makes a later GET fail.
    assert_eq!(
        get(server.addr(), &format!("/v1/runs/{run}"), &key).status,
        200
    );
}

#[test]
fn a_fan_out_past_run_bytes_fails_run_too_large() {
    let server = Server::start();
    let key = server.default_key();
    server.set_limits("default", json!({"run_bytes": 32 << 20}));
    // 60 outputs of 1,000 KiB pass 32 MiB.
    let steps: Vec<Value> = (0..60)
        .map(|i| json!({"id": format!("h{i}"), "component": "huge@1", "input": {"size_kb": 1000}}))
        .collect();
    publish_test_component(&server, &key, "huge", weft::bundled::paths::HUGE);
    let run = submit(&server, &key, json!({"steps": steps}), json!({}));
    let done = finished(&server, &key, &run);
    assert_eq!(done["status"], "failed", "{}", done["error"]);
    assert_eq!(done["error"]["code"], "run_too_large", "{}", done["error"]);
    let stored: usize = done["steps"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(|s| s["output"]["data"].as_str())
        .map(str::len)
        .sum();
    assert!(stored <= 32 << 20, "stored {stored} bytes");
    assert!(stored > 16 << 20, "stored only {stored} bytes");
}

fn publish_test_component(server: &Server, key: &str, name: &str, path: &str) {
    let bytes = std::fs::read(path).unwrap();
    let answer = http::request(
        server.addr(),
        "PUT",
        &format!("/v1/components/{name}/1.0.0"),
        key,
        Some(("application/wasm", &bytes)),
    );
    assert!(matches!(answer.status, 200 | 201), "{:?}", answer.body);
}

#[test]
fn publishing_is_refused_before_anything_is_stored() {
    let server = Server::start();
    let key = server.default_key();
    let spin = std::fs::read(weft::bundled::paths::SPIN).unwrap();
    // Other bytes under a published version: 409 before compiling.
    let put = |name: &str, version: &str, bytes: &[u8], key: &str| {
        http::request(
            server.addr(),
            "PUT",
            &format!("/v1/components/{name}/{version}"),
            key,
            Some(("application/wasm", bytes)),
        )
    };
    let conflict = put("echo", "1.0.0", &spin, &key);
    assert_eq!(conflict.status, 409, "{:?}", conflict.body);

    // Storage: a tenant whose quota is below one more blob gets 413 quota_exceeded.
    let small = other_tenant(&server, "small");
    // Room for the echo component it already has and one more blob.
    let echo = std::fs::metadata(weft::bundled::paths::ECHO).unwrap().len() as usize;
    server.set_limits("small", json!({"storage_bytes": echo + spin.len() + 10}));
    assert_eq!(put("spin", "1.0.0", &spin, &small).status, 201);
    // The same bytes again cost nothing.
    assert_eq!(put("spin2", "1.0.0", &spin, &small).status, 201);
    let trap = std::fs::read(weft::bundled::paths::TRAP).unwrap();
    let over = put("trap", "1.0.0", &trap, &small);
    assert_eq!(over.status, 413, "{:?}", over.body);
    assert_eq!(over.body["error"]["code"], "quota_exceeded");
    assert_eq!(
        get(server.addr(), "/v1/components/trap/1.0.0", &small).status,
        404
    );

    // Rate: publishes_per_minute.
    let busy = other_tenant(&server, "busy");
    server.set_limits("busy", json!({"publishes_per_minute": 2}));
    assert_eq!(put("a", "1.0.0", &spin, &busy).status, 201);
    assert_eq!(put("a", "1.0.1", &spin, &busy).status, 201);
    let limited = put("a", "1.0.2", &spin, &busy);
    assert_eq!(limited.status, 429, "{:?}", limited.body);
    assert_eq!(limited.body["error"]["code"], "rate_limited");
    // Other tenants publish on.
    assert_eq!(put("b", "1.0.0", &spin, &key).status, 201);
}

#[test]
fn concurrent_creates_of_one_tenant_make_one() {
    let server = Server::start();
    let addr = server.addr().to_string();
    let answers: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let addr = addr.clone();
                s.spawn(move || {
                    post_json(&addr, "/v1/tenants", ADMIN_TOKEN, &json!({"name": "twin"})).status
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        answers.iter().filter(|s| **s == 201).count(),
        1,
        "{answers:?}"
    );
    assert_eq!(
        answers.iter().filter(|s| **s == 409).count(),
        7,
        "{answers:?}"
    );
}

#[test]
fn distinct_error_codes_add_no_metric_series() {
    let server = Server::start();
    let key = server.default_key();
    server.set_limits("default", json!({"runs_per_second": 100_000}));
    let series = |server: &Server| -> Vec<String> {
        let text = get(server.addr(), "/metrics", "").body;
        text.as_str()
            .unwrap_or("")
            .lines()
            .filter(|l| l.starts_with("weft_steps_total{"))
            .map(|l| l.rsplit_once(' ').map_or(l, |(s, _)| s).to_string())
            .collect()
    };
    let ids: Vec<String> = (0..1_000)
        .map(|i| {
            submit(
                &server,
                &key,
                json!({"steps": [{"id": "f", "component": "fail@1",
                                  "input": {"code": format!("own_code_{i}")}}]}),
                json!({}),
            )
        })
        .collect();
    for id in &ids {
        assert_eq!(finished(&server, &key, id)["status"], "failed");
    }
    let seen = series(&server);
    println!(
        "weft_steps_total series after 1,000 distinct codes: {}",
        seen.len()
    );
    assert!(seen.len() <= 2, "{seen:#?}");
    assert!(seen.iter().all(|s| !s.contains("own_code")), "{seen:#?}");
    assert!(
        seen.iter().any(|s| s.contains(r#"code="component""#)),
        "{seen:#?}"
    );
}
