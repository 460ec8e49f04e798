//! Validating, submitting, following and cancelling runs.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::Api;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_is_accepted_followed_and_read() {
    let api = Api::new().await;
    let reply = api
        .post(
            "/v1/runs",
            &api.acme,
            json!({
                "workflow": {
                    "steps": [{"id": "a", "component": "echo@1", "input": {"n": "${input.n}"}}],
                    "output": "${steps.a.output.n}"
                },
                "input": {"n": 7}
            }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    let id = reply.body["id"].as_str().unwrap();
    assert_eq!(reply.body["status"], "queued");
    assert_eq!(reply.headers[header::LOCATION], format!("/v1/runs/{id}"));
    let run = api.finished(id).await;
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["output"], 7);
    let step = &run["steps"]["a"];
    assert_eq!(step["attempts"], 1);
    assert!(step["digest"].as_str().unwrap().starts_with("sha256:"));
    // Another tenant cannot see it, nor cancel it, nor follow it.
    for reply in [
        api.get(&format!("/v1/runs/{id}"), &api.other).await,
        api.post(&format!("/v1/runs/{id}/cancel"), &api.other, json!({}))
            .await,
        api.get(&format!("/v1/runs/{id}/events"), &api.other).await,
    ] {
        assert_eq!(
            (reply.status, reply.code()),
            (StatusCode::NOT_FOUND, "not_found")
        );
    }
    let cancel = api
        .post(&format!("/v1/runs/{id}/cancel"), &api.acme, json!({}))
        .await;
    assert_eq!(
        (cancel.status, cancel.code()),
        (StatusCode::CONFLICT, "run_finished")
    );
    let unknown = api.get("/v1/runs/run_nope", &api.acme).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_reports_every_problem_with_its_pointer() {
    let api = Api::new().await;
    let ok = api
        .post(
            "/v1/workflows/validate",
            &api.acme,
            json!({"steps": [{"id": "a", "component": "echo@1"}]}),
        )
        .await;
    assert_eq!(
        (ok.status, &ok.body),
        (StatusCode::OK, &json!({"valid": true}))
    );
    let bad = json!({
        "steps": [
            {"id": "a", "component": "echo@2"},
            {"id": "a", "component": "nope@1"},
            {"id": "b", "component": "echo@1", "needs": ["zz"], "limits": {"memory_mb": 65}}
        ]
    });
    let reply = api
        .post("/v1/workflows/validate", &api.acme, bad.clone())
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_workflow")
    );
    let paths: Vec<&str> = reply.body["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    for want in [
        "/steps/0/component",
        "/steps/1/id",
        "/steps/1/component",
        "/steps/2/needs/0",
    ] {
        assert!(paths.contains(&want), "{want} not in {paths:?}");
    }
    // Within the schema, but above the tenant's memory limit: refused on its own.
    let greedy =
        json!({"steps": [{"id": "b", "component": "echo@1", "limits": {"memory_mb": 65}}]});
    let reply = api.post("/v1/workflows/validate", &api.acme, greedy).await;
    assert_eq!(
        reply.body["error"]["details"][0]["path"],
        "/steps/0/limits/memory_mb"
    );
    let run = api
        .post("/v1/runs", &api.acme, json!({"workflow": bad}))
        .await;
    assert_eq!(run.code(), "invalid_workflow");
    let typed = json!({
        "workflow": {
            "input_schema": {"type": "object", "required": ["n"]},
            "steps": [{"id": "a", "component": "echo@1"}]
        },
        "input": {"m": 1}
    });
    let reply = api.post("/v1/runs", &api.acme, typed).await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input")
    );
    assert_eq!(reply.body["error"]["details"][0]["path"], "/input");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_return_the_first_run() {
    let api = Api::new().await;
    let body =
        json!({"workflow": {"steps": [{"id": "a", "component": "echo@1"}]}, "input": {"x": 1}});
    let send = |key: &'static str, body: Value| {
        Request::post("/v1/runs")
            .header(header::AUTHORIZATION, format!("Bearer {}", api.acme))
            .header(header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", key)
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap()
    };
    let first = api.send(send("order-17", body.clone())).await;
    let again = api.send(send("order-17", body.clone())).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(first.body["id"], again.body["id"]);
    assert_eq!(
        first.headers[header::LOCATION],
        again.headers[header::LOCATION]
    );
    let mut changed = body.clone();
    changed["input"]["x"] = json!(2);
    let reused = api.send(send("order-17", changed)).await;
    assert_eq!(
        (reused.status, reused.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
    );
    // Keys are per tenant.
    let theirs = Request::post("/v1/runs")
        .header(header::AUTHORIZATION, format!("Bearer {}", api.other))
        .header(header::CONTENT_TYPE, "application/json")
        .header("idempotency-key", "order-17")
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap();
    let theirs = api.send(theirs).await;
    assert_eq!(theirs.status, StatusCode::ACCEPTED);
    assert_ne!(theirs.body["id"], first.body["id"]);
    let too_long = api
        .send(send(Box::leak("k".repeat(256).into_boxed_str()), body))
        .await;
    assert_eq!(
        (too_long.status, too_long.code()),
        (StatusCode::BAD_REQUEST, "bad_request")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_stops_a_running_step() {
    let api = Api::new().await;
    let id = api
        .submit(json!({"steps": [
            {"id": "slow", "component": "sleep@1", "input": {"ms": 20000}},
            {"id": "after", "component": "echo@1", "needs": ["slow"]}
        ]}))
        .await;
    // Wait until the step runs.
    for _ in 0..200 {
        let run = api.get(&format!("/v1/runs/{id}"), &api.acme).await;
        if run.body["steps"]["slow"]["status"] == "running" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let started = std::time::Instant::now();
    let cancel = api
        .post(&format!("/v1/runs/{id}/cancel"), &api.acme, json!({}))
        .await;
    assert_eq!(cancel.status, StatusCode::ACCEPTED);
    assert_eq!(cancel.body, json!({"id": id, "status": "cancelled"}));
    let run = api.finished(&id).await;
    assert_eq!(run["status"], "cancelled");
    assert_eq!(run["steps"]["slow"]["status"], "cancelled");
    assert_eq!(run["steps"]["after"]["status"], "skipped");
    // The worker slot is free again well before the step's 20 s.
    let next = api
        .submit(json!({"steps": [{"id": "a", "component": "echo@1"}]}))
        .await;
    assert_eq!(api.finished(&next).await["status"], "succeeded");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

/// Reads an event stream to its end and returns `(event, data)` pairs.
async fn read_events(api: &Api, id: &str) -> Vec<(String, Value)> {
    let request = Request::get(format!("/v1/runs/{id}/events"))
        .header(header::AUTHORIZATION, format!("Bearer {}", api.acme))
        .body(Body::empty())
        .unwrap();
    let response = api.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    let body = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        response.into_body().collect(),
    )
    .await
    .expect("the stream ends when the run does")
    .unwrap()
    .to_bytes();
    let text = String::from_utf8(body.to_vec()).unwrap();
    text.split("\n\n")
        .filter_map(|block| {
            let mut event = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event: ") {
                    event = Some(e.to_string());
                }
                if let Some(d) = line.strip_prefix("data: ") {
                    data = Some(serde_json::from_str(d).unwrap());
                }
            }
            Some((event?, data?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_show_each_change_until_the_run_ends() {
    let api = Api::new().await;
    let id = api
        .submit(json!({"steps": [
            {"id": "wait", "component": "sleep@1", "input": {"ms": 300}},
            {"id": "flaky", "component": "fail@1", "needs": ["wait"],
             "input": {"retryable": true, "succeed_on_attempt": 2},
             "retry": {"max_attempts": 2, "initial_backoff_ms": 1}}
        ]}))
        .await;
    let events = read_events(&api, &id).await;
    let (last_event, last) = events.last().unwrap();
    assert_eq!(
        (last_event.as_str(), &last["status"]),
        ("run", &json!("succeeded"))
    );
    let flaky: Vec<(String, u64)> = events
        .iter()
        .filter(|(_, d)| d["step"] == "flaky")
        .map(|(_, d)| {
            (
                d["status"].as_str().unwrap().to_string(),
                d["attempt"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(flaky.contains(&("running".into(), 1)), "{flaky:?}");
    assert!(flaky.contains(&("running".into(), 2)), "{flaky:?}");
    assert_eq!(flaky.last().unwrap(), &("succeeded".to_string(), 2));
    let failed_attempt = events
        .iter()
        .find(|(_, d)| d["step"] == "flaky" && d["error"].is_object())
        .expect("the failed attempt's event carries its error");
    assert_eq!(failed_attempt.1["error"]["code"], "fail");
    // Every event is a RunEvent of the document.
    for (name, data) in &events {
        assert_eq!(data["type"], name.as_str());
        assert_eq!(data["run"], id.as_str());
    }

    // Following a run that has ended gives its state and ends at once.
    let again = read_events(&api, &id).await;
    assert_eq!(again.last().unwrap().1["status"], "succeeded");
    assert_eq!(again.len(), 3, "{again:?}");
}
