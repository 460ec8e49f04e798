//! Workflow templates and the run listing over HTTP: publish (201, the same
//! again 200, another document 409), runs by requirement that pin their
//! version, `GET /v1/runs` with its filters and cursors, and what bad input gets.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::http::{get, post_json, request};
use crate::server::{ADMIN_TOKEN, Server};

fn put(server: &Server, key: &str, path: &str, body: &Value) -> crate::http::Answer {
    let body = serde_json::to_vec(body).unwrap();
    request(
        server.addr(),
        "PUT",
        path,
        key,
        Some(("application/json", &body)),
    )
}

/// A template whose one step echoes `tag`, after sleeping `ms`.
fn template(tag: &str, ms: u64) -> Value {
    json!({
        "name": "ignored-for-templates",
        "steps": [
            { "id": "wait", "component": "sleep@1", "input": { "ms": ms } },
            { "id": "say", "component": "echo@1", "needs": ["wait"],
              "input": { "tag": tag, "who": "${input.who}" } }
        ],
        "output": "${steps.say.output}"
    })
}

fn wait_ended(server: &Server, key: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let run = get(server.addr(), &format!("/v1/runs/{id}"), key).body;
        if matches!(
            run["status"].as_str(),
            Some("succeeded" | "failed" | "cancelled")
        ) {
            return run;
        }
        assert!(Instant::now() < deadline, "{run}\n{}", server.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn templates_are_immutable_and_runs_pin_the_version_they_resolved() {
    let server = Server::start();
    let key = server.default_key();
    let path = "/v1/workflows/greet/1.2.0";
    let first = put(&server, &key, path, &template("one", 0));
    assert_eq!(first.status, 201, "{:?}", first.body);
    assert_eq!(first.body["name"], "greet");
    assert_eq!(first.body["version"], "1.2.0");
    assert!(
        first.body["digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );

    // The same document, its keys in another order: nothing changes.
    let reordered: Value = serde_json::from_str(
        r#"{"output": "${steps.say.output}", "steps": [
            {"component": "sleep@1", "id": "wait", "input": {"ms": 0}},
            {"input": {"who": "${input.who}", "tag": "one"}, "needs": ["wait"], "id": "say", "component": "echo@1"}
        ], "name": "ignored-for-templates"}"#,
    )
    .unwrap();
    let again = put(&server, &key, path, &reordered);
    assert_eq!(again.status, 200, "{:?}", again.body);
    assert_eq!(again.body["digest"], first.body["digest"]);
    let other = put(&server, &key, path, &template("two", 0));
    assert_eq!(other.status, 409, "{:?}", other.body);
    assert_eq!(other.body["error"]["code"], "version_exists");

    let read = get(server.addr(), path, &key);
    assert_eq!(read.status, 200);
    assert_eq!(read.body["document"], template("one", 0));
    let listed = get(server.addr(), "/v1/workflows", &key);
    assert_eq!(
        listed.body["workflows"],
        json!([{ "name": "greet", "versions": ["1.2.0"] }])
    );
    // Templates are not components.
    let components = get(server.addr(), "/v1/components", &key);
    let names: Vec<&str> = components.body["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(!names.iter().any(|n| n.contains("greet")), "{names:?}");

    // A run by requirement; a newer matching version published while it
    // runs changes nothing for it.
    let slow = put(
        &server,
        &key,
        "/v1/workflows/greet/1.3.0",
        &template("slow", 1_500),
    );
    assert_eq!(slow.status, 201);
    let submitted = post_json(
        server.addr(),
        "/v1/runs",
        &key,
        &json!({ "workflow": "greet@^1.2", "input": { "who": "ada" } }),
    );
    assert_eq!(submitted.status, 202, "{:?}", submitted.body);
    let id = submitted.body["id"].as_str().unwrap().to_string();
    let newer = put(
        &server,
        &key,
        "/v1/workflows/greet/1.4.0",
        &template("newer", 0),
    );
    assert_eq!(newer.status, 201);
    let run = wait_ended(&server, &key, &id);
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["workflow"], "greet");
    assert_eq!(run["workflow_version"], "1.3.0");
    assert_eq!(run["output"], json!({ "tag": "slow", "who": "ada" }));
    // The next run takes the newest.
    let id = server.submit(&key, &json!("greet@1"), json!({ "who": "bo" }));
    let run = wait_ended(&server, &key, &id);
    assert_eq!(run["workflow_version"], "1.4.0");
    assert_eq!(run["output"]["tag"], "newer");
}

#[test]
fn bad_templates_and_references_are_refused_with_their_reason() {
    let server = Server::start();
    let key = server.default_key();
    // An invalid document is not stored.
    let invalid = put(
        &server,
        &key,
        "/v1/workflows/bad/1.0.0",
        &json!({ "steps": [{ "id": "a", "component": "nope@1" }] }),
    );
    assert_eq!(invalid.status, 422, "{:?}", invalid.body);
    assert_eq!(invalid.body["error"]["code"], "invalid_workflow");
    assert_eq!(
        get(server.addr(), "/v1/workflows/bad/1.0.0", &key).status,
        404
    );
    let name = put(&server, &key, "/v1/workflows/Bad!/1.0.0", &template("x", 0));
    assert_eq!(name.body["error"]["code"], "invalid_name");
    let version = put(&server, &key, "/v1/workflows/ok/one", &template("x", 0));
    assert_eq!(version.body["error"]["code"], "invalid_version");

    for (reference, says) in [
        ("missing@1", "unknown workflow template"),
        ("not a reference", "neither a workflow document"),
        ("greet@>>1", "version"),
    ] {
        let answer = post_json(
            server.addr(),
            "/v1/runs",
            &key,
            &json!({ "workflow": reference }),
        );
        assert_eq!(answer.status, 422, "{reference}: {:?}", answer.body);
        assert_eq!(answer.body["error"]["code"], "invalid_workflow");
        let message = answer.body["error"]["details"][0]["message"]
            .as_str()
            .unwrap();
        assert!(message.contains(says), "{reference}: {message}");
    }
    assert_eq!(
        put(
            &server,
            &key,
            "/v1/workflows/greet/1.0.0",
            &template("x", 0)
        )
        .status,
        201
    );
    let unmatched = post_json(
        server.addr(),
        "/v1/runs",
        &key,
        &json!({ "workflow": "greet@^2" }),
    );
    assert_eq!(unmatched.status, 422);
    let message = unmatched.body["error"]["details"][0]["message"]
        .as_str()
        .unwrap();
    assert!(message.contains("available: 1.0.0"), "{message}");

    // Another tenant sees none of it.
    let other = crate::http::post_json(
        server.addr(),
        "/v1/tenants",
        ADMIN_TOKEN,
        &json!({ "name": "other" }),
    );
    let other_key = other.body["api_key"].as_str().unwrap().to_string();
    assert_eq!(
        get(server.addr(), "/v1/workflows/greet/1.0.0", &other_key).status,
        404
    );
    assert_eq!(
        get(server.addr(), "/v1/workflows", &other_key).body["workflows"],
        json!([])
    );
    let refused = post_json(
        server.addr(),
        "/v1/runs",
        &other_key,
        &json!({ "workflow": "greet@1" }),
    );
    assert_eq!(refused.status, 422);
    // The node still serves.
    assert_eq!(
        get(server.addr(), "/v1/workflows/greet/1.0.0", &key).status,
        200
    );
}

#[test]
fn the_listing_pages_newest_first_and_filters_by_status_and_workflow() {
    let server = Server::start();
    let key = server.default_key();
    let doc = |name: &str| json!({ "name": name, "steps": [{ "id": "a", "component": "echo@1" }] });
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(server.submit(
            &key,
            &doc(if i % 2 == 0 { "even" } else { "odd" }),
            json!({}),
        ));
    }
    let failing =
        json!({ "name": "odd", "steps": [{ "id": "a", "component": "fail@1", "input": {} }] });
    let failed = server.submit(&key, &failing, json!({}));
    for id in &ids {
        wait_ended(&server, &key, id);
    }
    assert_eq!(wait_ended(&server, &key, &failed)["status"], "failed");
    ids.push(failed.clone());
    ids.reverse();

    let mut seen = Vec::new();
    let mut path = "/v1/runs?limit=3".to_string();
    loop {
        let page = get(server.addr(), &path, &key);
        assert_eq!(page.status, 200, "{:?}", page.body);
        let runs = page.body["runs"].as_array().unwrap();
        assert!(runs.len() <= 3);
        for run in runs {
            seen.push(run["id"].as_str().unwrap().to_string());
            for field in ["status", "workflow", "created_at", "finished_at"] {
                assert!(!run[field].is_null(), "{field}: {run}");
            }
        }
        match page.body["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/runs?limit=3&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, ids, "every run once, newest first");

    let failed_only = get(server.addr(), "/v1/runs?status=failed", &key);
    assert_eq!(failed_only.body["runs"].as_array().unwrap().len(), 1);
    assert_eq!(failed_only.body["runs"][0]["id"], failed.as_str());
    let odd = get(
        server.addr(),
        "/v1/runs?workflow=odd&status=succeeded",
        &key,
    );
    assert_eq!(
        odd.body["runs"].as_array().unwrap().len(),
        3,
        "{:?}",
        odd.body
    );

    for bad in [
        "/v1/runs?limit=0",
        "/v1/runs?limit=501",
        "/v1/runs?status=sleeping",
        "/v1/runs?cursor=nonsense",
        "/v1/runs?colour=red",
    ] {
        let answer = get(server.addr(), bad, &key);
        assert_eq!(answer.status, 400, "{bad}: {:?}", answer.body);
        assert_eq!(answer.body["error"]["code"], "bad_request", "{bad}");
    }
    let other = post_json(
        server.addr(),
        "/v1/tenants",
        ADMIN_TOKEN,
        &json!({ "name": "lister" }),
    );
    let other_key = other.body["api_key"].as_str().unwrap().to_string();
    assert_eq!(
        get(server.addr(), "/v1/runs", &other_key).body,
        json!({ "runs": [], "next_cursor": null })
    );
}
