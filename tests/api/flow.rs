//! Flow control over HTTP: queues an admin declares and the nodes started
//! with them serve, what bad declarations and undeclared queues get,
//! priorities within a saturated tenant, and the limits that share the
//! nodes between tenants.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::millis;
use crate::http::{get, metric, post_json, request};
use crate::language::{ended, run, wait};
use crate::server::{ADMIN_TOKEN, Server};

fn declare(server: &Server, token: &str, name: &str) -> crate::http::Answer {
    request(
        server.addr(),
        "PUT",
        &format!("/v1/queues/{name}"),
        token,
        None,
    )
}

fn on_queue(queue: &str) -> Value {
    json!({ "steps": [
        { "id": "prepare", "component": "echo@1", "input": { "n": 1 } },
        { "id": "train", "component": "echo@1", "queue": queue, "needs": ["prepare"],
          "input": { "n": 2 } }
    ] })
}

#[test]
fn a_step_waits_in_its_queue_until_a_node_serves_it_and_undeclared_queues_are_refused() {
    let mut server = Server::start_with_args(&["--queues", "default"]);
    let key = server.default_key();

    // Declaring is the admin's, with a queue name.
    assert_eq!(declare(&server, &key, "gpu").status, 401);
    let bad = declare(&server, ADMIN_TOKEN, "GPU");
    assert_eq!(bad.status, 422, "{:?}", bad.body);
    assert_eq!(bad.body["error"]["code"], "invalid_queue");
    let created = declare(&server, ADMIN_TOKEN, "gpu");
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(created.body, json!({ "name": "gpu" }));
    assert_eq!(declare(&server, ADMIN_TOKEN, "gpu").status, 200);
    assert_eq!(declare(&server, ADMIN_TOKEN, "default").status, 200);
    let listed = get(server.addr(), "/v1/queues", ADMIN_TOKEN);
    assert_eq!(listed.status, 200);
    let names: Vec<&str> = listed.body["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default", "gpu"]);
    assert_eq!(get(server.addr(), "/v1/queues", &key).status, 401);

    // A queue nobody declared: refused where the document names it.
    for path in ["/v1/workflows/validate", "/v1/runs"] {
        let body = if path == "/v1/runs" {
            json!({ "workflow": on_queue("tpu") })
        } else {
            on_queue("tpu")
        };
        let refused = post_json(server.addr(), path, &key, &body);
        assert_eq!(refused.status, 422, "{path}: {:?}", refused.body);
        assert_eq!(refused.body["error"]["code"], "invalid_workflow");
        assert_eq!(
            refused.body["error"]["details"][0]["path"],
            "/steps/1/queue"
        );
    }

    // No node serves gpu: the step waits, and the queue shows it.
    let id = server.submit(&key, &on_queue("gpu"), json!({}));
    wait(&server, &key, &id, "the first step to end", |r| {
        r["steps"]["prepare"]["status"] == "succeeded"
    });
    std::thread::sleep(Duration::from_millis(1_000));
    let body = run(&server, &key, &id);
    assert_eq!(body["steps"]["train"]["status"], "queued", "{body}");
    let metrics = get(server.addr(), "/metrics", "").body;
    let metrics = metrics.as_str().unwrap_or_default();
    assert_eq!(
        metric(metrics, r#"weft_queue_depth{queue="gpu"}"#),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        metric(metrics, r#"weft_queue_depth{queue="default"}"#),
        Some(0.0)
    );
    let age = metric(metrics, r#"weft_queue_oldest_age_seconds{queue="gpu"}"#).unwrap();
    assert!((0.9..60.0).contains(&age), "oldest age {age}");
    let listed = get(server.addr(), "/v1/queues", ADMIN_TOKEN);
    assert_eq!(listed.body["queues"][1]["depth"], 1, "{:?}", listed.body);

    // The node started again with gpu takes it.
    server.stop();
    server.set_args(&["--queues", "default,gpu"]);
    server.start_again();
    let done = wait(&server, &key, &id, "the run to end", ended);
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["steps"]["train"]["output"], json!({ "n": 2 }));
}

#[test]
fn with_the_tenant_saturated_priority_nine_runs_finish_before_priority_one_runs_submitted_earlier()
{
    let server = Server::start();
    let key = server.default_key();
    // One attempt of the tenant at a time, held by a long step first.
    server.set_limits("default", json!({ "concurrent_steps": 1 }));
    let sleep = |ms: u64| json!({ "steps": [{ "id": "s", "component": "sleep@1", "input": { "ms": ms } }] });
    let submit = |ms: u64, priority: u8| {
        let answer = post_json(
            server.addr(),
            "/v1/runs",
            &key,
            &json!({ "workflow": sleep(ms), "priority": priority }),
        );
        assert_eq!(answer.status, 202, "{:?}", answer.body);
        answer.body["id"].as_str().unwrap().to_string()
    };
    let blocker = submit(800, 5);
    wait(&server, &key, &blocker, "the long step to run", |r| {
        r["steps"]["s"]["status"] == "running"
    });
    let low: Vec<String> = (0..4).map(|_| submit(20, 1)).collect();
    let high: Vec<String> = (0..4).map(|_| submit(20, 9)).collect();
    let finished = |ids: &[String]| -> Vec<u128> {
        ids.iter()
            .map(|id| {
                let done = wait(&server, &key, id, "the run to end", ended);
                assert_eq!(done["status"], "succeeded", "{done}");
                millis(&done["finished_at"])
            })
            .collect()
    };
    let (low, high) = (finished(&low), finished(&high));
    let last_high = high.iter().max().unwrap();
    let first_low = low.iter().min().unwrap();
    assert!(
        last_high <= first_low,
        "a priority-1 run ended at {first_low}, before the last priority-9 one at {last_high}"
    );

    // Out of range: refused, nothing submitted.
    let refused = post_json(
        server.addr(),
        "/v1/runs",
        &key,
        &json!({ "workflow": sleep(1), "priority": 10 }),
    );
    assert_eq!(refused.status, 422, "{:?}", refused.body);
    assert_eq!(refused.body["error"]["code"], "invalid_request");
}

#[test]
fn weight_and_concurrent_steps_are_limits_with_their_ranges() {
    let server = Server::start();
    let put = |limits: Value| {
        let bytes = serde_json::to_vec(&limits).unwrap();
        request(
            server.addr(),
            "PUT",
            "/v1/tenants/default/limits",
            ADMIN_TOKEN,
            Some(("application/json", &bytes)),
        )
    };
    for bad in [
        json!({ "weight": 0 }),
        json!({ "weight": 1001 }),
        json!({ "concurrent_steps": 0 }),
    ] {
        let answer = put(bad.clone());
        assert_eq!(answer.status, 422, "{bad}: {:?}", answer.body);
    }
    let set = put(json!({ "weight": 3, "concurrent_steps": 50 }));
    assert_eq!(set.status, 200, "{:?}", set.body);
    let tenant = get(server.addr(), "/v1/tenants/default", ADMIN_TOKEN);
    assert_eq!(tenant.body["limits"]["weight"], 3, "{:?}", tenant.body);
    assert_eq!(tenant.body["limits"]["concurrent_steps"], 50);
}

#[test]
fn a_run_delayed_three_seconds_is_scheduled_starts_on_time_and_survives_a_restart() {
    let mut server = Server::start();
    let key = server.default_key();
    let doc = json!({ "steps": [{ "id": "s", "component": "echo@1", "input": { "n": 1 } }] });
    let submit = |server: &Server, body: Value| post_json(server.addr(), "/v1/runs", &key, &body);
    let answer = submit(&server, json!({ "workflow": doc, "delay_ms": 3_000 }));
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    assert_eq!(answer.body["status"], "scheduled");
    let id = answer.body["id"].as_str().unwrap().to_string();
    let body = run(&server, &key, &id);
    assert_eq!(body["status"], "scheduled", "{body}");
    let due = millis(&body["created_at"]) + 3_000;
    assert_eq!(millis(&body["start_at"]), due);

    // The node restarts meanwhile; the run starts at its time all the same.
    server.restart();
    assert_eq!(run(&server, &key, &id)["status"], "scheduled");
    let done = wait(&server, &key, &id, "the run to end", ended);
    assert_eq!(done["status"], "succeeded", "{done}");
    let started = millis(&done["started_at"]);
    eprintln!(
        "the delayed run started {} ms after it was due",
        started as i128 - due as i128
    );
    assert!(
        started >= due && started - due < 100,
        "due at {due}, started at {started}"
    );

    // Cancelled while scheduled: it ends, and its step never runs.
    let later = submit(
        &server,
        json!({ "workflow": doc, "start_at": "2099-01-01T00:00:00Z" }),
    );
    assert_eq!(
        later.status, 422,
        "more than 365 days ahead: {:?}",
        later.body
    );
    let answer = submit(&server, json!({ "workflow": doc, "delay_ms": 60_000 }));
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    let id = answer.body["id"].as_str().unwrap();
    let cancelled = post_json(
        server.addr(),
        &format!("/v1/runs/{id}/cancel"),
        &key,
        &json!({}),
    );
    assert_eq!(cancelled.status, 202, "{:?}", cancelled.body);
    let body = run(&server, &key, id);
    assert_eq!(body["status"], "cancelled", "{body}");
    assert_eq!(body["steps"]["s"]["status"], "skipped");

    // What bad times get.
    for bad in [
        json!({ "workflow": doc, "delay_ms": 1_000, "start_at": "2030-01-01T00:00:00Z" }),
        json!({ "workflow": doc, "start_at": "tomorrow" }),
        json!({ "workflow": doc, "delay_ms": 31_536_000_001_u64 }),
    ] {
        let refused = submit(&server, bad.clone());
        assert_eq!(refused.status, 422, "{bad}: {:?}", refused.body);
        assert_eq!(refused.body["error"]["code"], "invalid_request");
    }
}

#[test]
fn rate_limits_are_the_tenants_and_steps_that_name_one_start_within_it() {
    let server = Server::start();
    let key = server.default_key();
    let other = server.create_tenant("other");
    let put = |key: &str, name: &str, body: &Value| {
        let bytes = serde_json::to_vec(body).unwrap();
        request(
            server.addr(),
            "PUT",
            &format!("/v1/rate-limits/{name}"),
            key,
            Some(("application/json", &bytes)),
        )
    };
    // What bad declarations get.
    for (name, body) in [
        ("Bad", json!({ "per_second": 1 })),
        ("api", json!({ "per_second": 0 })),
        ("api", json!({ "per_second": -1 })),
        ("api", json!({ "per_second": 2_000_000 })),
        ("api", json!({ "per_second": 1, "burst": 0 })),
    ] {
        let refused = put(&key, name, &body);
        assert_eq!(refused.status, 422, "{name} {body}: {:?}", refused.body);
        assert_eq!(refused.body["error"]["code"], "invalid_rate_limit");
    }
    assert_eq!(
        put(&key, "api", &json!({ "per_second": 5, "extra": 1 })).status,
        422
    );
    let created = put(&key, "api", &json!({ "per_second": 4, "burst": 1 }));
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(
        created.body,
        json!({ "name": "api", "per_second": 4.0, "burst": 1 })
    );
    assert_eq!(
        put(&key, "api", &json!({ "per_second": 4, "burst": 1 })).status,
        200
    );
    let listed = get(server.addr(), "/v1/rate-limits", &key);
    assert_eq!(
        listed.body["rate_limits"][0]["name"], "api",
        "{:?}",
        listed.body
    );
    assert_eq!(get(server.addr(), "/v1/rate-limits/api", &key).status, 200);
    // Another tenant sees none of it.
    assert_eq!(
        get(server.addr(), "/v1/rate-limits/api", &other).status,
        404
    );
    assert_eq!(
        get(server.addr(), "/v1/rate-limits", &other).body,
        json!({ "rate_limits": [] })
    );

    // A step naming a limit the tenant has not set: refused where it names it.
    let doc = |limit: &str| json!({ "steps": [{ "id": "call", "component": "echo@1", "rate_limit": limit, "input": { "n": 1 } }] });
    let refused = post_json(
        server.addr(),
        "/v1/runs",
        &key,
        &json!({ "workflow": doc("nope") }),
    );
    assert_eq!(refused.status, 422, "{:?}", refused.body);
    assert_eq!(
        refused.body["error"]["details"][0]["path"],
        "/steps/0/rate_limit"
    );

    // Eight runs at once under 4 a second, burst 1: their starts are spaced.
    let ids: Vec<String> = (0..8)
        .map(|_| server.submit(&key, &doc("api"), json!({})))
        .collect();
    let mut starts: Vec<u128> = ids
        .iter()
        .map(|id| {
            let done = wait(&server, &key, id, "the run to end", ended);
            assert_eq!(done["status"], "succeeded", "{done}");
            millis(&done["steps"]["call"]["started_at"])
        })
        .collect();
    starts.sort();
    let span = starts[7] - starts[0];
    assert!(
        span >= 1_600,
        "8 starts at 4/s with a burst of 1 took {span} ms"
    );

    // Deleted: gone, and a document naming it is refused again.
    let deleted = request(server.addr(), "DELETE", "/v1/rate-limits/api", &key, None);
    assert_eq!(deleted.status, 204);
    let again = request(server.addr(), "DELETE", "/v1/rate-limits/api", &key, None);
    assert_eq!(again.status, 404);
    let refused = post_json(
        server.addr(),
        "/v1/runs",
        &key,
        &json!({ "workflow": doc("api") }),
    );
    assert_eq!(refused.status, 422);
}

#[test]
fn a_concurrency_key_must_resolve_for_the_input_and_may_name_the_input_only() {
    let server = Server::start();
    let key = server.default_key();
    let doc = |key: &str| {
        json!({ "steps": [{ "id": "s", "component": "echo@1", "input": {},
            "concurrency": { "key": key, "limit": 1 } }] })
    };
    let submit = |doc: Value, input: Value| {
        post_json(
            server.addr(),
            "/v1/runs",
            &key,
            &json!({ "workflow": doc, "input": input }),
        )
    };
    let refers = submit(
        json!({ "steps": [
            { "id": "a", "component": "echo@1", "input": {} },
            { "id": "s", "component": "echo@1", "input": {},
              "concurrency": { "key": "${steps.a.output.x}" } }
        ] }),
        json!({}),
    );
    assert_eq!(refers.status, 422, "{:?}", refers.body);
    assert_eq!(
        refers.body["error"]["details"][0]["path"],
        "/steps/1/concurrency/key"
    );
    let missing = submit(doc("${input.customer}"), json!({}));
    assert_eq!(missing.status, 422, "{:?}", missing.body);
    assert_eq!(missing.body["error"]["code"], "invalid_input");
    assert_eq!(
        missing.body["error"]["details"][0]["path"],
        "/steps/0/concurrency/key"
    );
    let bad_limit = submit(
        json!({ "steps": [{ "id": "s", "component": "echo@1", "concurrency": { "key": "k", "limit": 0 } }] }),
        json!({}),
    );
    assert_eq!(bad_limit.status, 422, "{:?}", bad_limit.body);
    let fine = submit(doc("customer-${input.customer}"), json!({ "customer": 7 }));
    assert_eq!(fine.status, 202, "{:?}", fine.body);
    let id = fine.body["id"].as_str().unwrap();
    let done = wait(&server, &key, id, "the run to end", ended);
    assert_eq!(done["status"], "succeeded", "{done}");
}

#[test]
fn the_command_line_declares_queues_sets_rate_limits_and_submits_with_priority_and_delay() {
    use crate::cli::{run as weft_run, weft};
    let server = Server::start();
    let data = server.data_dir();
    let cmd = || {
        let mut c = weft(&server.url, &data);
        c.env("WEFT_ADMIN_TOKEN", ADMIN_TOKEN);
        c
    };
    let declared = weft_run(cmd().args(["queue", "declare", "gpu"]));
    assert_eq!(declared.code, 0, "{}", declared.stderr);
    assert!(
        declared.stderr.contains("queue gpu declared"),
        "{}",
        declared.stderr
    );
    let listed = weft_run(cmd().args(["queue", "list"]));
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    assert!(
        listed.stdout.contains("QUEUE") && listed.stdout.contains("gpu"),
        "{}",
        listed.stdout
    );
    let bad = weft_run(cmd().args(["queue", "declare", "GPU"]));
    assert_eq!(bad.code, 2, "{}", bad.stderr);

    let set = weft_run(cmd().args(["rate-limit", "set", "partner", "--per-second", "2.5"]));
    assert_eq!(set.code, 0, "{}", set.stderr);
    let set: Value = serde_json::from_str(&set.stdout).unwrap();
    assert_eq!(
        set,
        json!({ "name": "partner", "per_second": 2.5, "burst": 3 })
    );
    let listed = weft_run(cmd().args(["rate-limit", "list", "--json"]));
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    assert!(listed.stdout.contains("partner"), "{}", listed.stdout);
    let deleted = weft_run(cmd().args(["rate-limit", "delete", "partner"]));
    assert_eq!(deleted.code, 0, "{}", deleted.stderr);
    let again = weft_run(cmd().args(["rate-limit", "delete", "partner"]));
    assert_eq!(again.code, 2, "{}", again.stderr);

    let doc = server.scratch().join("one.json");
    std::fs::write(
        &doc,
        json!({ "steps": [{ "id": "s", "component": "echo@1", "input": {} }] }).to_string(),
    )
    .unwrap();
    let submitted =
        weft_run(
            cmd()
                .arg("submit")
                .arg(&doc)
                .args(["--priority", "9", "--delay", "2s"]),
        );
    assert_eq!(submitted.code, 0, "{}", submitted.stderr);
    let answer: Value = serde_json::from_str(&submitted.stdout).unwrap();
    assert_eq!(answer["status"], "scheduled", "{answer}");
    let key = server.default_key();
    let body = run(&server, &key, answer["id"].as_str().unwrap());
    assert_eq!(body["priority"], 9, "{body}");
    let out_of_range = weft_run(cmd().arg("submit").arg(&doc).args(["--priority", "10"]));
    assert_eq!(out_of_range.code, 2, "{}", out_of_range.stderr);
}
