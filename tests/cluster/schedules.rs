//! A schedule on three nodes: every tick starts exactly one run, whichever
//! nodes fire it, also while one of them is killed and another joins.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weft::testing::RedisServer;

use super::common::millis;
use super::http::{get, post_json, request};
use super::{Node, default_key};

#[test]
fn an_every_second_schedule_on_three_nodes_starts_one_run_a_tick_for_sixty_seconds() {
    let redis = RedisServer::start();
    let mut nodes = [
        Node::start(&redis, &[]),
        Node::start(&redis, &[]),
        Node::start(&redis, &[]),
    ];
    let key = default_key(&nodes.iter().collect::<Vec<_>>());
    let template = json!({ "steps": [
        { "id": "say", "component": "echo@1", "input": { "at": "${input.at}" } }
    ] });
    let body = serde_json::to_vec(&template).unwrap();
    let published = request(
        &nodes[0].addr,
        "PUT",
        "/v1/workflows/beat/1.0.0",
        &key,
        Some(("application/json", &body)),
    );
    assert_eq!(published.status, 201, "{:?}", published.body);
    let schedule = json!({ "name": "beat", "cron": "* * * * * *", "workflow": "beat@^1",
        "input": { "at": "tick" }, "overlap": "allow" });
    let created = post_json(&nodes[1].addr, "/v1/schedules", &key, &schedule);
    assert_eq!(created.status, 201, "{:?}", created.body);
    let from = millis(&created.body["created_at"]);

    // Half way, a node dies and another takes its place.
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(30));
    nodes[0].kill_9();
    nodes[0] = Node::start(&redis, &[]);
    std::thread::sleep(Duration::from_secs(60).saturating_sub(started.elapsed()));
    let paused = post_json(&nodes[2].addr, "/v1/schedules/beat/pause", &key, &json!({}));
    assert_eq!(paused.status, 200, "{:?}", paused.body);
    let until = millis(&paused.body["last_tick"]);
    // A tick a node fired as the pause landed may still be starting.
    std::thread::sleep(Duration::from_secs(1));

    let page = get(&nodes[1].addr, "/v1/runs?workflow=beat&limit=500", &key).body;
    let mut ticks: Vec<u128> = page["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let id = r["id"].as_str().unwrap();
            let run: Value = get(&nodes[1].addr, &format!("/v1/runs/{id}"), &key).body;
            assert_eq!(run["schedule"], "beat", "{run}");
            millis(&run["scheduled_for"])
        })
        .collect();
    ticks.sort_unstable();
    let expected = (until / 1_000 - from / 1_000) as usize;
    eprintln!(
        "{} runs for the {expected} ticks from {from} to {until}",
        ticks.len()
    );
    let mut distinct = ticks.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), ticks.len(), "a tick ran twice: {ticks:?}");
    assert!(
        ticks.len().abs_diff(expected) <= 1 && ticks.len() >= 59,
        "{} runs for {expected} ticks: {ticks:?}",
        ticks.len()
    );
    for pair in ticks.windows(2) {
        assert_eq!(pair[1] - pair[0], 1_000, "a tick did not run: {ticks:?}");
    }
}
