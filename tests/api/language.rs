//! The workflow language, version 2, over HTTP: validation problems with
//! pointers, the items endpoint, the document schema, cancelling a run
//! mid-for_each or into its compensations, item and compensation events,
//! and compensations carried on after the node is killed.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::http::{get, post_json, request};
use crate::server::Server;

fn cancel(server: &Server, key: &str, id: &str) -> crate::http::Answer {
    post_json(
        server.addr(),
        &format!("/v1/runs/{id}/cancel"),
        key,
        &json!({}),
    )
}

pub(crate) fn run(server: &Server, key: &str, id: &str) -> Value {
    let answer = get(server.addr(), &format!("/v1/runs/{id}"), key);
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    answer.body
}

/// Polls until `done` holds for the run, for at most 60 s.
pub(crate) fn wait(
    server: &Server,
    key: &str,
    id: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body = run(server, key, id);
        if done(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {body}\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub(crate) fn ended(body: &Value) -> bool {
    matches!(
        body["status"].as_str(),
        Some("succeeded" | "failed" | "cancelled")
    )
}

#[test]
fn bad_documents_get_one_problem_each_with_its_pointer() {
    let server = Server::start();
    let key = server.default_key();
    let step = |extra: Value| {
        let mut s = json!({ "id": "a", "component": "echo@1" });
        for (k, v) in extra.as_object().unwrap() {
            s[k] = v.clone();
        }
        json!({ "steps": [s] })
    };
    let cases = [
        (step(json!({ "when": "input.x >" })), "/steps/0/when"),
        (
            step(json!({ "when": "steps.nope.output == 1" })),
            "/steps/0/when",
        ),
        (
            step(json!({ "for_each": "not a reference" })),
            "/steps/0/for_each",
        ),
        (
            step(json!({ "for_each": "${input.list}", "max_concurrency": 0 })),
            "/steps/0/max_concurrency",
        ),
        (
            step(json!({ "for_each": "${input.list}", "max_concurrency": 5000 })),
            "/steps/0/max_concurrency",
        ),
        (step(json!({ "on_error": "maybe" })), "/steps/0/on_error"),
        (
            step(json!({ "compensate": { "input": {} } })),
            "/steps/0/compensate",
        ),
        (step(json!({ "input": "${item}" })), "/steps/0/input"),
    ];
    for (workflow, pointer) in cases {
        let answer = post_json(
            server.addr(),
            "/v1/runs",
            &key,
            &json!({ "workflow": workflow }),
        );
        assert_eq!(answer.status, 422, "{workflow}: {:?}", answer.body);
        assert_eq!(answer.body["error"]["code"], "invalid_workflow");
        let details = answer.body["error"]["details"].as_array().unwrap();
        assert_eq!(details.len(), 1, "{workflow}: {details:?}");
        assert_eq!(details[0]["path"], pointer, "{workflow}: {details:?}");
    }
    // The node is up and serves valid documents.
    let id = server.submit(
        &key,
        &step(json!({ "when": "input.go", "input": "ok" })),
        json!({ "go": true }),
    );
    assert_eq!(
        wait(&server, &key, &id, "run", ended)["status"],
        "succeeded"
    );
}

#[test]
fn the_document_schema_is_served_and_covers_the_new_fields() {
    let server = Server::start();
    let answer = get(server.addr(), "/v1/workflows/schema", "");
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let step = &answer.body["$defs"]["step"]["properties"];
    for field in [
        "for_each",
        "max_concurrency",
        "when",
        "on_error",
        "compensate",
    ] {
        assert!(step.get(field).is_some(), "{field} missing from the schema");
    }
    assert_eq!(step["max_concurrency"]["maximum"], 1000);
    // The copy in docs/ is the served one.
    let docs: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/workflow.schema.json"
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        docs, answer.body,
        "docs/workflow.schema.json is out of date"
    );
}

#[test]
fn the_items_of_a_for_each_page_in_order_and_bad_queries_are_refused() {
    let server = Server::start();
    let key = server.default_key();
    let workflow = json!({ "steps": [
        { "id": "each", "component": "echo@1", "for_each": "${input.list}",
          "max_concurrency": 50, "input": { "n": "${index}", "v": "${item}" } }
    ] });
    let list: Vec<Value> = (0..250).map(|i| json!(i * 2)).collect();
    let id = server.submit(&key, &workflow, json!({ "list": list }));
    let body = wait(&server, &key, &id, "run", ended);
    assert_eq!(body["status"], "succeeded", "{body}");
    assert_eq!(body["steps"]["each"]["items"]["total"], 250);

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/runs/{id}/steps/each/items?limit=100&cursor={c}"),
            None => format!("/v1/runs/{id}/steps/each/items?limit=100"),
        };
        let page = get(server.addr(), &path, &key);
        assert_eq!(page.status, 200, "{:?}", page.body);
        pages += 1;
        for item in page.body["items"].as_array().unwrap() {
            assert_eq!(item["status"], "succeeded");
            assert_eq!(item["attempts"], 1);
            seen.push((item["index"].as_u64().unwrap(), item["output"].clone()));
        }
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 250);
    for (i, (index, output)) in seen.iter().enumerate() {
        assert_eq!(*index, i as u64);
        assert_eq!(*output, json!({ "n": i, "v": i * 2 }));
    }
    for bad in ["limit=0", "limit=5000", "cursor=abc", "limit=x"] {
        let answer = get(
            server.addr(),
            &format!("/v1/runs/{id}/steps/each/items?{bad}"),
            &key,
        );
        assert_eq!(answer.status, 400, "{bad}: {:?}", answer.body);
    }
    let missing = get(
        server.addr(),
        &format!("/v1/runs/{id}/steps/nope/items"),
        &key,
    );
    assert_eq!(missing.status, 404);
    let other = get(server.addr(), "/v1/runs/run_nope/steps/each/items", &key);
    assert_eq!(other.status, 404);
}

#[test]
fn cancelling_mid_for_each_stops_the_items_and_starts_no_more() {
    let server = Server::start();
    let key = server.default_key();
    let workflow = json!({ "steps": [
        { "id": "each", "component": "sleep@1", "for_each": "${input.list}",
          "max_concurrency": 2, "input": { "ms": 400 } }
    ] });
    let id = server.submit(&key, &workflow, json!({ "list": vec![0; 20] }));
    wait(&server, &key, &id, "items running", |b| {
        b["steps"]["each"]["items"]["counts"]["running"].as_u64() >= Some(1)
    });
    let answer = cancel(&server, &key, &id);
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    let body = run(&server, &key, &id);
    assert_eq!(body["status"], "cancelled");
    let each = &body["steps"]["each"];
    assert_eq!(each["status"], "cancelled");
    let counts = each["items"]["counts"].clone();
    assert!(counts["cancelled"].as_u64().unwrap() >= 1, "{counts}");
    assert!(counts["pending"].as_u64().unwrap() >= 10, "{counts}");
    std::thread::sleep(Duration::from_millis(900));
    let later = run(&server, &key, &id);
    assert_eq!(
        later["steps"]["each"]["items"]["counts"], counts,
        "items went on"
    );
}

/// Reads the events stream of a run until it ends; returns `(event, data)`.
pub(crate) fn events(server: &Server, key: &str, id: &str) -> Vec<(String, Value)> {
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        stream,
        "GET /v1/runs/{id}/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let mut out = Vec::new();
    let mut name = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return out;
        }
        // Chunk sizes of the chunked body come on lines of their own.
        if let Some(event) = line.trim_end().strip_prefix("event: ") {
            name = event.to_string();
        } else if let Some(data) = line.trim_end().strip_prefix("data: ") {
            let data: Value = serde_json::from_str(data).unwrap();
            let last = name == "run"
                && matches!(
                    data["status"].as_str(),
                    Some("succeeded" | "failed" | "cancelled")
                );
            out.push((name.clone(), data));
            if last {
                return out;
            }
        }
    }
}

fn millis(at: &Value) -> i64 {
    let at = at.as_str().unwrap();
    // RFC 3339 with milliseconds: ...THH:MM:SS.mmmZ
    let time = at.split('T').nth(1).unwrap().trim_end_matches('Z');
    let mut parts = time.split(':');
    let h: i64 = parts.next().unwrap().parse().unwrap();
    let m: i64 = parts.next().unwrap().parse().unwrap();
    let s: f64 = parts.next().unwrap().parse().unwrap();
    (h * 3_600_000) + (m * 60_000) + (s * 1000.0).round() as i64
}

#[test]
fn item_progress_is_batched_and_compensations_are_events() {
    let server = Server::start();
    let key = server.default_key();
    let workflow = json!({ "steps": [
        { "id": "each", "component": "sleep@1", "for_each": "${input.list}",
          "max_concurrency": 10, "input": { "ms": 20 },
          "compensate": { "component": "echo@1", "input": { "undo": "${steps.each.output[0]}" } } },
        { "id": "boom", "component": "fail@1", "needs": ["each"], "input": { "code": "no" } }
    ] });
    let id = server.submit(&key, &workflow, json!({ "list": vec![0; 300] }));
    let events = events(&server, &key, &id);
    let items: Vec<i64> = events
        .iter()
        .filter(|(name, _)| name == "items")
        .map(|(_, data)| millis(&data["at"]))
        .collect();
    assert!(items.len() >= 2, "{events:?}");
    for pair in items.windows(2) {
        assert!(
            pair[1] - pair[0] >= 100,
            "two item events {} ms apart",
            pair[1] - pair[0]
        );
    }
    let compensation: Vec<&Value> = events
        .iter()
        .filter(|(name, _)| name == "compensation")
        .map(|(_, data)| data)
        .collect();
    let statuses: Vec<&str> = compensation
        .iter()
        .map(|d| d["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["queued", "running", "succeeded"],
        "{compensation:?}"
    );
    assert_eq!(compensation[0]["step"], "each");
    let body = run(&server, &key, &id);
    assert_eq!(body["status"], "failed");
    assert_eq!(
        body["steps"]["each"]["compensation"]["output"],
        json!({ "undo": { "slept_ms": 20 } })
    );
}

/// A run whose step `a` succeeded, with a compensation that sleeps
/// `compensation_ms`, followed by `b`, which sleeps `b_ms` then fails.
fn saga(compensation_ms: u64, b_ms: u64) -> Value {
    json!({ "steps": [
        { "id": "a", "component": "echo@1", "input": { "charge": "ch_1" },
          "compensate": { "component": "sleep@1",
                          "input": { "ms": compensation_ms, "value": "${steps.a.output.charge}" } } },
        { "id": "wait", "component": "sleep@1", "needs": ["a"], "input": { "ms": b_ms } },
        { "id": "b", "component": "fail@1", "needs": ["wait"], "input": { "code": "declined" } }
    ] })
}

#[test]
fn a_cancelled_run_is_compensating_until_its_compensations_end() {
    let server = Server::start();
    let key = server.default_key();
    let id = server.submit(&key, &saga(3_000, 10_000), json!({}));
    wait(&server, &key, &id, "wait running", |b| {
        b["steps"]["wait"]["status"] == "running"
    });
    let answer = cancel(&server, &key, &id);
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    assert_eq!(answer.body["status"], "compensating");
    assert_eq!(run(&server, &key, &id)["status"], "compensating");
    let body = wait(&server, &key, &id, "run", ended);
    assert_eq!(body["status"], "cancelled");
    assert!(body.get("error").is_none(), "{body}");
    let compensation = &body["steps"]["a"]["compensation"];
    assert_eq!(compensation["status"], "succeeded", "{body}");
    assert_eq!(compensation["output"]["value"], "ch_1");
    assert_eq!(body["steps"]["wait"]["status"], "cancelled");
    assert!(body["steps"]["wait"].get("compensation").is_none());
}

#[test]
fn compensations_go_on_after_the_embedded_node_is_killed() {
    let mut server = Server::start_embedded();
    let key = server.default_key();
    let id = server.submit(&key, &saga(2_000, 10), json!({}));
    wait(&server, &key, &id, "compensation running", |b| {
        b["steps"]["a"]["compensation"]["status"] == "running"
    });
    server.kill();
    server.start_again();
    let body = wait(&server, &key, &id, "run", ended);
    assert_eq!(body["status"], "failed", "{body}");
    assert_eq!(body["error"]["step"], "b");
    let compensation = &body["steps"]["a"]["compensation"];
    assert_eq!(compensation["status"], "succeeded", "{body}");
    assert_eq!(
        compensation["attempts"], 1,
        "delivered again as the same attempt"
    );
    assert_eq!(compensation["output"]["value"], "ch_1");
}

#[test]
fn a_for_each_goes_on_after_the_embedded_node_is_killed() {
    let mut server = Server::start_embedded();
    let key = server.default_key();
    let workflow = json!({ "steps": [
        { "id": "each", "component": "sleep@1", "for_each": "${input.list}",
          "max_concurrency": 4, "input": { "ms": 100, "value": "${index}" } }
    ], "output": "${steps.each.output}" });
    let id = server.submit(&key, &workflow, json!({ "list": vec![0; 40] }));
    wait(&server, &key, &id, "some items done", |b| {
        b["steps"]["each"]["items"]["counts"]["succeeded"].as_u64() >= Some(8)
    });
    server.kill();
    server.start_again();
    let body = wait(&server, &key, &id, "run", ended);
    assert_eq!(body["status"], "succeeded", "{body}");
    let output = body["output"].as_array().unwrap();
    assert_eq!(output.len(), 40);
    for (i, o) in output.iter().enumerate() {
        assert_eq!(o["value"], i, "item {i}");
    }
    let page = request(
        server.addr(),
        "GET",
        &format!("/v1/runs/{id}/steps/each/items?limit=1000"),
        &key,
        None,
    );
    for item in page.body["items"].as_array().unwrap() {
        assert_eq!(item["attempts"], 1, "{item}");
    }
}

#[test]
fn a_run_sleeping_30_s_survives_a_kill_of_its_node_and_wakes_on_time() {
    let mut server = Server::start();
    let key = server.default_key();
    let doc = json!({ "steps": [
        { "id": "nap", "sleep_ms": 30_000 },
        { "id": "after", "component": "echo@1", "needs": ["nap"], "input": { "slept": "${steps.nap.output}" } }
    ], "output": "${steps.after.output}" });
    let id = server.submit(&key, &doc, json!({}));
    let waiting = wait(&server, &key, &id, "the sleep to start", |r| {
        r["steps"]["nap"]["status"] == "waiting"
    });
    assert_eq!(waiting["status"], "running");
    assert_eq!(waiting["steps"]["nap"]["attempts"], 1);
    // The node dies while the run sleeps; the wait is in the store, not in the node.
    server.kill();
    server.start_again();
    let done = wait(&server, &key, &id, "the run to end", ended);
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["output"], json!({ "slept": null }));
    let nap = &done["steps"]["nap"];
    // Within one day: the time of day in milliseconds is enough.
    let (started, finished) = (millis(&nap["started_at"]), millis(&nap["finished_at"]));
    let finished = if finished < started {
        finished + 86_400_000
    } else {
        finished
    };
    assert!(finished >= started + 30_000, "woke early: {nap}");
    assert!(finished <= started + 30_000 + 2_000, "woke late: {nap}");
    assert_eq!(nap["attempts"], 1);
}

#[test]
fn a_run_sleeping_2_s_resumes_on_time() {
    let server = Server::start();
    let key = server.default_key();
    let doc = json!({ "steps": [
        { "id": "nap", "sleep_ms": 2_000 },
        { "id": "after", "component": "echo@1", "needs": ["nap"], "input": { "woke": true } }
    ], "output": "${steps.after.output}" });
    let id = server.submit(&key, &doc, json!({}));
    let done = wait(&server, &key, &id, "the run to end", ended);
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["output"], json!({ "woke": true }));
    let nap = &done["steps"]["nap"];
    assert_eq!(nap["status"], "succeeded");
    assert_eq!(nap["output"], Value::Null);
    let slept = nap["duration_ms"].as_u64().expect("a duration");
    // The precision under load is measured by `benches/timers.rs`; here, on time.
    assert!((2_000..4_000).contains(&slept), "slept {slept} ms: {nap}");
}
