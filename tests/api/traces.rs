//! Traces over OTLP/HTTP: a receiver in the test decodes what `weft serve
//! --otlp-endpoint` exports and checks one trace per run, its parent-child
//! structure and attributes, the caller's `traceparent`; with the receiver
//! down, runs go on and the dropped spans are counted.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::otlp::{Received, Receiver};
use crate::http::{get, metric, try_request};
use crate::language::{ended, wait};
use crate::server::Server;

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn submit_with(server: &Server, key: &str, body: &Value, headers: &[(&str, &str)]) -> Value {
    let bytes = serde_json::to_vec(body).unwrap();
    let answer = try_request(
        server.addr(),
        "POST",
        "/v1/runs",
        key,
        headers,
        Some(("application/json", &bytes)),
    )
    .expect("submit");
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    answer.body
}

fn by_name<'a>(spans: &'a [Received], name: &str) -> Vec<&'a Received> {
    spans.iter().filter(|s| s.name == name).collect()
}

fn one<'a>(spans: &'a [Received], name: &str) -> &'a Received {
    let found = by_name(spans, name);
    assert_eq!(found.len(), 1, "one {name:?} span: {spans:#?}");
    found[0]
}

fn within(inner: &Received, outer: &Received) {
    assert!(
        outer.start <= inner.start && inner.end <= outer.end && inner.start <= inner.end,
        "{} ({}..{}) lies within {} ({}..{})",
        inner.name,
        inner.start,
        inner.end,
        outer.name,
        outer.start,
        outer.end
    );
}

#[test]
fn every_run_is_one_trace_of_run_step_and_attempt_spans_below_the_callers_span() {
    let receiver = Receiver::start();
    let server = Server::start_with_env(
        &["--otlp-endpoint", &receiver.endpoint()],
        &[
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_SERVICE_NAME", "weft-under-test"),
        ],
    );
    let key = server.default_key();
    let doc = json!({ "name": "traced", "steps": [
        { "id": "hello", "component": "echo@1", "input": { "who": "ada" } },
        { "id": "flaky", "component": "fail@1", "needs": ["hello"],
          "input": { "code": "flaked", "retryable": true, "succeed_on_attempt": 2 },
          "retry": { "max_attempts": 3, "initial_backoff_ms": 10, "max_backoff_ms": 10 } },
        { "id": "never", "component": "echo@1", "needs": ["flaky"], "when": "false" }
    ] });
    let traceparent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let accepted = submit_with(
        &server,
        &key,
        &json!({ "workflow": doc, "input": {} }),
        &[("traceparent", &traceparent)],
    );
    let id = accepted["id"].as_str().unwrap().to_string();
    let run = wait(&server, &key, &id, "the traced run to end", ended);
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["trace_id"], CALLER_TRACE, "{run}");

    // The run, its three steps (the skipped one too), three attempts.
    let spans = receiver.trace(CALLER_TRACE, 7);
    let root = one(&spans, "run traced");
    assert_eq!(root.parent_span_id, CALLER_SPAN);
    assert_eq!(root.attr("weft.run_id"), Some(id.as_str()));
    assert_eq!(root.attr("weft.tenant"), Some("default"));
    assert_eq!(root.attr("weft.workflow"), Some("traced"));
    assert_eq!(root.attr("weft.outcome"), Some("succeeded"));
    assert_eq!(root.status, 1, "ok");
    assert_eq!(
        root.resource.get("service.name").map(String::as_str),
        Some("weft-under-test")
    );

    let mut steps = HashMap::new();
    for step in ["hello", "flaky", "never"] {
        let span = one(&spans, &format!("step {step}"));
        assert_eq!(span.parent_span_id, root.span_id, "{span:?}");
        assert_eq!(span.attr("weft.step"), Some(step));
        assert_eq!(span.attr("weft.run_id"), Some(id.as_str()));
        within(span, root);
        steps.insert(step, span);
    }
    assert_eq!(steps["never"].attr("weft.outcome"), Some("skipped"));
    assert_eq!(steps["flaky"].attr("weft.attempts"), Some("2"));
    assert_eq!(
        steps["hello"].attr("weft.component.digest"),
        run["steps"]["hello"]["digest"].as_str()
    );

    let hello = one(&spans, "attempt hello");
    assert_eq!(hello.parent_span_id, steps["hello"].span_id);
    assert_eq!(hello.attr("weft.attempt"), Some("1"));
    assert_eq!(hello.attr("weft.outcome"), Some("succeeded"));
    assert_eq!(hello.attr("weft.component"), Some("echo@1"));
    assert_eq!(
        hello.attr("weft.component.digest"),
        run["steps"]["hello"]["digest"].as_str()
    );
    within(hello, steps["hello"]);

    let mut flaky = by_name(&spans, "attempt flaky");
    flaky.sort_by_key(|s| s.attr("weft.attempt").map(str::to_string));
    assert_eq!(flaky.len(), 2, "{spans:#?}");
    assert_eq!(flaky[0].attr("weft.attempt"), Some("1"));
    assert_eq!(flaky[0].attr("weft.outcome"), Some("retried"));
    assert_eq!(flaky[0].attr("weft.error.code"), Some("flaked"));
    assert_eq!(flaky[0].status, 2, "an error");
    assert_eq!(flaky[1].attr("weft.attempt"), Some("2"));
    assert_eq!(flaky[1].attr("weft.outcome"), Some("succeeded"));
    assert!(flaky[1].attr("weft.error.code").is_none());
    for attempt in &flaky {
        assert_eq!(attempt.parent_span_id, steps["flaky"].span_id);
        within(attempt, steps["flaky"]);
    }
    assert!(flaky[0].end <= flaky[1].start);
    assert_eq!(spans.len(), 7, "nothing else in the trace: {spans:#?}");

    // Without a traceparent, or with one that is not valid, a run starts a
    // trace of its own; a failed run's span says why.
    let failing = json!({ "name": "broken", "steps": [
        { "id": "boom", "component": "fail@1", "input": { "code": "kaput" } }
    ] });
    let mut traces = Vec::new();
    for headers in [vec![], vec![("traceparent", "00-not-a-trace-01")]] {
        let accepted = submit_with(
            &server,
            &key,
            &json!({ "workflow": failing, "input": {} }),
            &headers,
        );
        let id = accepted["id"].as_str().unwrap().to_string();
        let run = wait(&server, &key, &id, "the failing run to end", ended);
        assert_eq!(run["status"], "failed");
        let trace = run["trace_id"].as_str().expect("a trace id").to_string();
        assert_eq!(trace.len(), 32);
        assert!(trace.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(trace, CALLER_TRACE);
        let spans = receiver.trace(&trace, 3);
        let root = one(&spans, "run broken");
        assert_eq!(root.parent_span_id, "", "a root span");
        assert_eq!(root.status, 2);
        assert_eq!(root.attr("weft.outcome"), Some("failed"));
        assert_eq!(root.attr("weft.error.code"), Some("kaput"));
        let attempt = one(&spans, "attempt boom");
        assert_eq!(attempt.attr("weft.outcome"), Some("failed"));
        assert_eq!(attempt.attr("weft.error.code"), Some("kaput"));
        assert!(
            spans
                .iter()
                .all(|s| s.attr("weft.run_id") == Some(id.as_str()))
        );
        traces.push(trace);
    }
    assert_ne!(traces[0], traces[1], "one trace per run");

    // An unsampled caller's run is traced (its id is kept) but not exported.
    let quiet_trace = "0af7651916cd43dd8448eb211c80319c";
    let accepted = submit_with(
        &server,
        &key,
        &json!({ "workflow": failing, "input": {} }),
        &[(
            "traceparent",
            &format!("00-{quiet_trace}-b7ad6b7169203331-00"),
        )],
    );
    let quiet = accepted["id"].as_str().unwrap().to_string();
    let run = wait(&server, &key, &quiet, "the unsampled run to end", ended);
    assert_eq!(run["trace_id"], quiet_trace);
    // A run after it is exported; by then the unsampled one would have been.
    let accepted = submit_with(
        &server,
        &key,
        &json!({ "workflow": failing, "input": {} }),
        &[],
    );
    let after = accepted["id"].as_str().unwrap().to_string();
    let run = wait(&server, &key, &after, "the last run to end", ended);
    receiver.trace(run["trace_id"].as_str().unwrap(), 3);
    assert!(
        receiver.spans().iter().all(|s| s.trace_id != quiet_trace),
        "spans of an unsampled trace were exported"
    );

    let metrics = get(server.addr(), "/metrics", "").body;
    let metrics = metrics.as_str().unwrap_or_default();
    assert!(
        metric(metrics, "weft_trace_spans_exported_total").unwrap_or(0.0) >= 16.0,
        "{metrics}"
    );
}

#[test]
fn with_the_collector_down_runs_go_on_and_dropped_spans_are_counted() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = Server::start_with_env(
        &["--otlp-endpoint", &format!("http://127.0.0.1:{port}")],
        &[("OTEL_BSP_SCHEDULE_DELAY", "50")],
    );
    let key = server.default_key();
    let doc = json!({ "steps": [
        { "id": "a", "component": "echo@1", "input": { "n": 1 } },
        { "id": "b", "component": "echo@1", "needs": ["a"], "input": { "n": 2 } }
    ] });
    let started = Instant::now();
    let ids: Vec<String> = (0..10)
        .map(|_| server.submit(&key, &doc, json!({})))
        .collect();
    for id in &ids {
        let run = wait(&server, &key, id, "a run beside a dead collector", ended);
        assert_eq!(run["status"], "succeeded", "{run}");
    }
    let took = started.elapsed();
    // 10 runs of 2 steps: 30 spans, every one dropped.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = get(server.addr(), "/metrics", "").body;
        let metrics = metrics.as_str().unwrap_or_default().to_string();
        let dropped = metric(
            &metrics,
            "weft_trace_spans_dropped_total{reason=\"export\"}",
        )
        .unwrap_or(0.0);
        if dropped >= 30.0 {
            assert_eq!(
                metric(&metrics, "weft_trace_spans_exported_total"),
                Some(0.0)
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "dropped spans: {dropped}\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(took < Duration::from_secs(30), "the runs took {took:?}");
    // The node is still up and serving.
    assert_eq!(get(server.addr(), "/healthz", "").status, 200);
}

#[test]
fn a_child_run_is_in_its_parents_trace_below_the_step_that_started_it() {
    let receiver = Receiver::start();
    let server = Server::start_with_env(
        &["--otlp-endpoint", &receiver.endpoint()],
        &[("OTEL_BSP_SCHEDULE_DELAY", "100")],
    );
    let key = server.default_key();
    crate::subworkflows::publish(
        &server,
        &key,
        "shipping",
        &json!({ "steps": [{ "id": "pack", "component": "echo@1", "input": { "p": 1 } }] }),
    );
    let parent = json!({ "name": "orders", "steps": [
        { "id": "ship", "workflow": "shipping@^1", "input": {} }
    ] });
    let id = server.submit(&key, &parent, json!({}));
    let done = wait(&server, &key, &id, "the parent to end", ended);
    assert_eq!(done["status"], "succeeded", "{done}");
    let child_id = done["steps"]["ship"]["run"].as_str().unwrap().to_string();
    let child = crate::language::run(&server, &key, &child_id);
    let trace = done["trace_id"].as_str().unwrap();
    assert_eq!(child["trace_id"], trace, "{child}");

    // Parent run and step, child run, step and attempt.
    let spans = receiver.trace(trace, 5);
    let ship = one(&spans, "step ship");
    let child_root = one(&spans, "run shipping");
    assert_eq!(child_root.parent_span_id, ship.span_id);
    assert_eq!(child_root.attr("weft.parent_run"), Some(id.as_str()));
    assert_eq!(child_root.attr("weft.run_id"), Some(child_id.as_str()));
    let pack = one(&spans, "step pack");
    assert_eq!(pack.parent_span_id, child_root.span_id);
    assert_eq!(one(&spans, "attempt pack").parent_span_id, pack.span_id);
    assert_eq!(one(&spans, "run orders").parent_span_id, "");
}

#[test]
fn a_secret_a_step_shows_in_its_error_is_in_no_span() {
    const SECRET: &str = "tr4ce-s3cret-value";
    let receiver = Receiver::start();
    let server = Server::start_with_env(
        &["--otlp-endpoint", &receiver.endpoint()],
        &[("OTEL_BSP_SCHEDULE_DELAY", "100")],
    );
    let key = server.default_key();
    let leak = crate::capabilities::publish(
        &server,
        &key,
        "leak",
        std::path::Path::new(weft::bundled::paths::LEAK),
    );
    assert_eq!(leak.status, 201, "{:?}", leak.body);
    let put =
        crate::capabilities::put_secret(&server, &key, "api_token", &json!({ "value": SECRET }));
    assert_eq!(put.status, 201, "{:?}", put.body);
    let doc = json!({ "name": "leaky", "steps": [
        { "id": "tell", "component": "leak@1", "input": { "secret": "api_token", "fail": true },
          "secrets": ["api_token"] }
    ] });
    let id = server.submit(&key, &doc, json!({}));
    let run = wait(&server, &key, &id, "the leaking run to end", ended);
    assert_eq!(run["status"], "failed", "{run}");
    let spans = receiver.trace(run["trace_id"].as_str().unwrap(), 3);
    let attempt = one(&spans, "attempt tell");
    assert_eq!(attempt.attr("weft.error.code"), Some("leaked"));
    assert!(attempt.status_message.contains("***"), "{attempt:?}");
    let text = format!("{spans:?}");
    assert!(!text.contains(SECRET), "the secret is in a span: {text}");
}

#[test]
fn spans_go_to_an_https_collector_whose_ca_is_given_and_not_to_one_that_is_not_trusted() {
    let receiver = Receiver::start_tls();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("collector-ca.pem");
    std::fs::write(&ca, receiver.ca_pem.as_ref().unwrap()).unwrap();
    let doc = json!({ "name": "secure", "steps": [
        { "id": "a", "component": "echo@1", "input": {} }
    ] });
    let trusting = Server::start_with_env(
        &["--otlp-endpoint", &receiver.endpoint()],
        &[
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", ca.to_str().unwrap()),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-collector-key=k%3D1"),
        ],
    );
    let key = trusting.default_key();
    let id = trusting.submit(&key, &doc, json!({}));
    let run = wait(&trusting, &key, &id, "the run to end", ended);
    let spans = receiver.trace(run["trace_id"].as_str().unwrap(), 3);
    assert_eq!(
        one(&spans, "run secure").attr("weft.run_id"),
        Some(id.as_str())
    );

    // Without the CA, the collector's certificate is not trusted: dropped.
    let doubting = Server::start_with_env(
        &["--otlp-endpoint", &receiver.endpoint()],
        &[("OTEL_BSP_SCHEDULE_DELAY", "50")],
    );
    let key = doubting.default_key();
    let id = doubting.submit(&key, &doc, json!({}));
    let run = wait(&doubting, &key, &id, "the run to end", ended);
    assert_eq!(run["status"], "succeeded");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = get(doubting.addr(), "/metrics", "").body;
        let metrics = metrics.as_str().unwrap_or_default().to_string();
        let dropped = metric(
            &metrics,
            "weft_trace_spans_dropped_total{reason=\"export\"}",
        );
        if dropped.unwrap_or(0.0) >= 3.0 {
            break;
        }
        assert!(Instant::now() < deadline, "{metrics}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let trace = run["trace_id"].as_str().unwrap();
    assert!(receiver.spans().iter().all(|s| s.trace_id != trace));
}
