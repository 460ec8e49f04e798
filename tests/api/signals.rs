//! Signals over HTTP and from the command line: sent before, during and
//! after the wait, twice to one waiting step, timed out, to a finished run
//! and to another tenant's run, and what bad signals get.

use serde_json::{Value, json};

use crate::cli::{run as weft_run, stdout_json, weft};
use crate::http::post_json;
use crate::language::{ended, run, wait};
use crate::server::{ADMIN_TOKEN, Server};

fn signal(server: &Server, key: &str, id: &str, name: &str, body: &Value) -> crate::http::Answer {
    post_json(
        server.addr(),
        &format!("/v1/runs/{id}/signals/{name}"),
        key,
        body,
    )
}

#[test]
fn signals_are_taken_before_during_and_after_the_wait_and_refused_once_the_run_ended() {
    let server = Server::start();
    let key = server.default_key();
    let data = server.data_dir();
    // A sleep first, so that the first signal comes before any step waits.
    let doc = json!({ "steps": [
        { "id": "nap", "sleep_ms": 1_000 },
        { "id": "first", "signal": "approved", "needs": ["nap"] },
        { "id": "second", "signal": "approved", "needs": ["first"] },
        { "id": "gap", "sleep_ms": 3_000, "needs": ["second"] },
        { "id": "third", "signal": "approved", "needs": ["gap"] }
    ], "output": {
        "first": "${steps.first.output}",
        "second": "${steps.second.output}",
        "third": "${steps.third.output}"
    } });
    let id = server.submit(&key, &doc, json!({}));

    // Before: kept.
    let before = signal(
        &server,
        &key,
        &id,
        "approved",
        &json!({ "payload": { "by": "ada" } }),
    );
    assert_eq!(before.status, 202, "{:?}", before.body);
    assert_eq!(before.body["status"], "buffered");
    assert_eq!(before.body["buffered"], 1);

    // The first signal step takes the kept one when it is reached; the
    // second then waits.
    let waiting = wait(&server, &key, &id, "the second step to wait", |r| {
        r["steps"]["second"]["status"] == "waiting"
    });
    assert_eq!(waiting["steps"]["first"]["output"], json!({ "by": "ada" }));

    // During, from the command line; then a second one to the same step,
    // which no step waits for any more: kept for the next signal step.
    let during = weft_run(weft(&server.url, &data).args([
        "signal",
        &id,
        "approved",
        "--payload",
        r#"{"by": "grace"}"#,
    ]));
    assert_eq!(during.code, 0, "{}", during.stderr);
    assert_eq!(
        during.stdout.trim(),
        format!("run {id}: signal approved taken by step second")
    );
    let twice = weft_run(weft(&server.url, &data).args([
        "signal",
        &id,
        "approved",
        "--payload",
        r#""again""#,
        "--json",
    ]));
    assert_eq!(twice.code, 0, "{}", twice.stderr);
    assert_eq!(
        stdout_json(&twice)["status"],
        "buffered",
        "{}",
        twice.stdout
    );

    let done = wait(&server, &key, &id, "the run to end", ended);
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        done["output"],
        json!({ "first": { "by": "ada" }, "second": { "by": "grace" }, "third": "again" })
    );

    // After: the run has ended.
    let after = signal(&server, &key, &id, "approved", &json!({}));
    assert_eq!(after.status, 409, "{:?}", after.body);
    assert_eq!(after.body["error"]["code"], "run_finished");
    let late = weft_run(weft(&server.url, &data).args(["signal", &id, "approved"]));
    assert_eq!(late.code, 2, "{}", late.stderr);
    assert_eq!(late.error()["error"]["code"], "run_finished");

    // Another tenant's run, and no run at all: not found.
    let other = post_json(
        server.addr(),
        "/v1/tenants",
        ADMIN_TOKEN,
        &json!({ "name": "other" }),
    );
    let other_key = other.body["api_key"].as_str().unwrap().to_string();
    let waits = json!({ "steps": [{ "id": "w", "signal": "go" }] });
    let mine = server.submit(&key, &waits, json!({}));
    wait(&server, &key, &mine, "the step to wait", |r| {
        r["steps"]["w"]["status"] == "waiting"
    });
    let foreign = signal(&server, &other_key, &mine, "go", &json!({ "payload": 1 }));
    assert_eq!(foreign.status, 404, "{:?}", foreign.body);
    assert_eq!(
        signal(
            &server,
            &key,
            "run_00000000000000000000000000",
            "go",
            &json!({})
        )
        .status,
        404
    );
    let untouched = run(&server, &key, &mine);
    assert_eq!(untouched["steps"]["w"]["status"], "waiting", "{untouched}");

    // Bad names and payloads are refused, and nothing changes.
    let bad_name = signal(&server, &key, &mine, "-go", &json!({}));
    assert_eq!(bad_name.status, 422, "{:?}", bad_name.body);
    assert_eq!(bad_name.body["error"]["code"], "invalid_signal");
    let unknown_field = signal(&server, &key, &mine, "go", &json!({ "data": 1 }));
    assert_eq!(unknown_field.status, 422, "{:?}", unknown_field.body);
    let big = json!({ "payload": "x".repeat((1 << 20) + 1) });
    let too_big = signal(&server, &key, &mine, "go", &big);
    assert_eq!(too_big.status, 413, "{:?}", too_big.body);
    assert_eq!(too_big.body["error"]["code"], "payload_too_large");
    let still = run(&server, &key, &mine);
    assert_eq!(still["steps"]["w"]["status"], "waiting", "{still}");

    // At most 100 kept per name.
    let kept = json!({ "steps": [
        { "id": "nap", "sleep_ms": 60_000 },
        { "id": "w", "signal": "go", "needs": ["nap"] }
    ] });
    let full = server.submit(&key, &kept, json!({}));
    for n in 1..=100 {
        let sent = signal(&server, &key, &full, "go", &json!({ "payload": n }));
        assert_eq!(sent.status, 202, "{n}: {:?}", sent.body);
        assert_eq!(sent.body["buffered"], n);
    }
    let refused = signal(&server, &key, &full, "go", &json!({ "payload": 101 }));
    assert_eq!(refused.status, 409, "{:?}", refused.body);
    assert_eq!(refused.body["error"]["code"], "signal_buffer_full");
}

#[test]
fn a_signal_step_times_out_signal_timeout() {
    let server = Server::start();
    let key = server.default_key();
    let doc = json!({ "steps": [{ "id": "approval", "signal": "approved", "timeout_ms": 300 }] });
    let id = server.submit(&key, &doc, json!({}));
    let done = wait(&server, &key, &id, "the run to end", ended);
    assert_eq!(done["status"], "failed", "{done}");
    let step = &done["steps"]["approval"];
    assert_eq!(step["status"], "failed");
    assert_eq!(step["error"]["code"], "signal_timeout", "{step}");
    assert_eq!(done["error"]["code"], "signal_timeout", "{done}");
    // Too late: the run has ended.
    let late = signal(&server, &key, &id, "approved", &json!({ "payload": true }));
    assert_eq!(late.status, 409);
}
