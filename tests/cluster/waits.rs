//! Waits across nodes: a signal sent to one node is taken once by a run
//! another node handles, and a sleeping run whose node is killed is woken
//! on time by another node.

use std::time::Duration;

use serde_json::{Value, json};
use weft::testing::RedisServer;

use super::http::{get, post_json};
use super::{Node, default_key, redis_conn, steps_hash, submit, wait_all, wait_until};

/// Milliseconds since midnight of an RFC 3339 time of the run JSON.
fn millis_of_day(time: &Value) -> u64 {
    let text = time.as_str().expect("a time");
    let clock = &text[11..];
    let (h, rest) = clock.split_at(2);
    let (m, rest) = rest[1..].split_at(2);
    let seconds: f64 = rest[1..].trim_end_matches('Z').parse().unwrap();
    let h: u64 = h.parse().unwrap();
    let m: u64 = m.parse().unwrap();
    (h * 3_600 + m * 60) * 1_000 + (seconds * 1_000.0).round() as u64
}

#[test]
fn a_signal_sent_to_one_node_is_taken_once_by_a_run_another_node_handles() {
    let redis = RedisServer::start();
    let api = Node::start(&redis, &["--role", "api"]);
    let worker = Node::start(&redis, &["--role", "worker"]);
    let key = default_key(&[&api, &worker]);
    let workflow = json!({ "steps": [
        { "id": "approval", "signal": "approved" },
        { "id": "after", "component": "echo@1", "needs": ["approval"],
          "input": { "by": "${steps.approval.output}" } }
    ], "output": "${steps.after.output.by}" });
    let ids: Vec<String> = (0..20)
        .map(|_| submit(&api.addr, &key, &workflow))
        .collect();
    for id in &ids {
        wait_until(&api.addr, &key, id, &worker, "the step to wait", |run| {
            run["steps"]["approval"]["status"] == "waiting"
        });
    }
    // Two signals to each waiting step at once, through the API node.
    let answers: Vec<(String, Vec<Value>)> = std::thread::scope(|s| {
        let sends: Vec<_> = ids
            .iter()
            .map(|id| {
                let (api, key) = (&api.addr, &key);
                let pair: Vec<_> = ["ada", "grace"]
                    .into_iter()
                    .map(|who| {
                        s.spawn(move || {
                            let path = format!("/v1/runs/{id}/signals/approved");
                            let answer = post_json(api, &path, key, &json!({ "payload": who }));
                            assert_eq!(answer.status, 202, "{:?}", answer.body);
                            answer.body
                        })
                    })
                    .collect();
                (id.clone(), pair)
            })
            .collect();
        sends
            .into_iter()
            .map(|(id, pair)| (id, pair.into_iter().map(|h| h.join().unwrap()).collect()))
            .collect()
    });
    let runs = wait_all(&api.addr, &key, &ids, Duration::from_secs(60));
    let mut conn = redis_conn(&redis);
    for ((id, pair), run) in answers.iter().zip(&runs) {
        let delivered: Vec<&Value> = pair.iter().filter(|a| a["status"] == "delivered").collect();
        assert_eq!(delivered.len(), 1, "taken once: {pair:?}");
        assert_eq!(delivered[0]["step"], "approval");
        assert!(pair.iter().any(|a| a["status"] == "buffered"), "{pair:?}");
        assert_eq!(run["status"], "succeeded", "{run}");
        let output = run["output"].as_str().unwrap();
        assert!(output == "ada" || output == "grace", "{run}");
        assert_eq!(steps_hash(&mut conn, id)["c0"], "1", "one output committed");
    }
}

#[test]
fn a_run_sleeping_30_s_is_woken_on_time_by_another_node_after_its_node_is_killed() {
    let redis = RedisServer::start();
    let api = Node::start(&redis, &["--role", "api"]);
    let mut doomed = Node::start(&redis, &["--role", "worker"]);
    let key = default_key(&[&api, &doomed]);
    let workflow = json!({ "steps": [
        { "id": "nap", "sleep_ms": 30_000 },
        { "id": "after", "component": "echo@1", "needs": ["nap"], "input": { "woke": true } }
    ] });
    let id = submit(&api.addr, &key, &workflow);
    wait_until(&api.addr, &key, &id, &doomed, "the sleep to start", |run| {
        run["steps"]["nap"]["status"] == "waiting"
    });
    doomed.kill_9();
    let survivor = Node::start(&redis, &["--role", "worker"]);
    let run = wait_all(
        &api.addr,
        &key,
        std::slice::from_ref(&id),
        Duration::from_secs(60),
    )
    .remove(0);
    assert_eq!(run["status"], "succeeded", "{run}\n{}", survivor.log());
    let nap = &run["steps"]["nap"];
    let (started, finished) = (
        millis_of_day(&nap["started_at"]),
        millis_of_day(&nap["finished_at"]),
    );
    let finished = if finished < started {
        finished + 86_400_000
    } else {
        finished
    };
    assert!(finished >= started + 30_000, "woke early: {nap}");
    assert!(
        finished <= started + 32_000,
        "woke more than 2 s late: {nap}"
    );
    assert_eq!(nap["attempts"], 1);
    let after = get(&api.addr, &format!("/v1/runs/{id}"), &key).body;
    assert_eq!(after["steps"]["after"]["output"], json!({ "woke": true }));
}
