//! Flow control across nodes: a step of a queue runs only on the nodes
//! started with that queue, and a tenant's `concurrent_steps` holds for the
//! whole cluster.

use std::time::Duration;

use serde_json::{Value, json};
use weft::testing::RedisServer;

use super::common::millis;
use super::http::{get, request};
use super::{ADMIN, Node, default_key, lift_limits, submit, wait_all};

#[test]
fn a_step_of_a_queue_runs_only_on_a_node_started_with_it() {
    let redis = RedisServer::start();
    let plain = Node::start(&redis, &["--queues", "default"]);
    let key = default_key(&[&plain]);
    let declared = request(&plain.addr, "PUT", "/v1/queues/gpu", ADMIN, None);
    assert_eq!(declared.status, 201, "{:?}", declared.body);
    let workflow = json!({ "steps": [
        { "id": "prepare", "component": "echo@1", "input": { "n": 1 } },
        { "id": "train", "component": "echo@1", "queue": "gpu", "needs": ["prepare"], "input": { "n": 2 } },
        { "id": "report", "component": "echo@1", "needs": ["train"], "input": { "n": 3 } }
    ], "output": "${steps.report.output.n}" });
    let id = submit(&plain.addr, &key, &workflow);
    std::thread::sleep(Duration::from_millis(1_500));
    let run = get(&plain.addr, &format!("/v1/runs/{id}"), &key).body;
    assert_eq!(run["steps"]["prepare"]["status"], "succeeded", "{run}");
    assert_eq!(
        run["steps"]["train"]["status"], "queued",
        "a node without the queue took its step: {run}"
    );
    let queues = get(&plain.addr, "/v1/queues", ADMIN).body;
    assert_eq!(queues["queues"][1]["name"], "gpu");
    assert_eq!(queues["queues"][1]["depth"], 1, "{queues}");

    // A node of the gpu queue only: it runs the gpu step, and the plain
    // node the step after it.
    let gpu = Node::start(&redis, &["--queues", "gpu"]);
    let runs = wait_all(&plain.addr, &key, &[id], Duration::from_secs(30));
    assert_eq!(runs[0]["status"], "succeeded", "{}\n{}", runs[0], gpu.log());
    assert_eq!(runs[0]["output"], 3);
    let queues = get(&gpu.addr, "/v1/queues", ADMIN).body;
    assert_eq!(queues["queues"][1]["depth"], 0, "{queues}");
}

/// The most attempts running at once, from their start and end times.
fn most_at_once(runs: &[Value]) -> usize {
    let mut edges: Vec<(u128, i32)> = Vec::new();
    for run in runs {
        let step = &run["steps"]["s"];
        edges.push((millis(&step["started_at"]), 1));
        edges.push((millis(&step["finished_at"]), -1));
    }
    // An end and a start at the same millisecond do not overlap.
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    most as usize
}

#[test]
fn concurrent_steps_caps_a_tenant_across_the_cluster() {
    let redis = RedisServer::start();
    let nodes = [Node::start(&redis, &[]), Node::start(&redis, &[])];
    let key = default_key(&nodes.iter().collect::<Vec<_>>());
    lift_limits(&nodes[0].addr);
    let capped = request(
        &nodes[0].addr,
        "PUT",
        "/v1/tenants/default/limits",
        ADMIN,
        Some(("application/json", br#"{"concurrent_steps": 3}"#)),
    );
    assert_eq!(capped.status, 200, "{:?}", capped.body);
    let workflow =
        json!({ "steps": [{ "id": "s", "component": "sleep@1", "input": { "ms": 150 } }] });
    let ids: Vec<String> = (0..24)
        .map(|i| submit(&nodes[i % 2].addr, &key, &workflow))
        .collect();
    let runs = wait_all(&nodes[1].addr, &key, &ids, Duration::from_secs(120));
    for run in &runs {
        assert_eq!(run["status"], "succeeded", "{run}");
    }
    let most = most_at_once(&runs);
    assert!(most <= 3, "{most} attempts of the tenant ran at once");
    assert!(
        most >= 2,
        "the two nodes ran the tenant's steps side by side ({most})"
    );
}

#[test]
fn a_rate_limit_holds_across_three_nodes() {
    let redis = RedisServer::start();
    let nodes = [
        Node::start(&redis, &[]),
        Node::start(&redis, &[]),
        Node::start(&redis, &[]),
    ];
    let key = default_key(&nodes.iter().collect::<Vec<_>>());
    lift_limits(&nodes[0].addr);
    let set = request(
        &nodes[0].addr,
        "PUT",
        "/v1/rate-limits/partner",
        &key,
        Some(("application/json", br#"{"per_second": 20, "burst": 5}"#)),
    );
    assert_eq!(set.status, 201, "{:?}", set.body);
    let workflow = json!({ "steps": [{ "id": "s", "component": "echo@1", "rate_limit": "partner", "input": {} }] });
    // More than 30 s of starts, submitted to every node.
    let ids: Vec<String> = (0..640)
        .map(|i| submit(&nodes[i % 3].addr, &key, &workflow))
        .collect();
    let runs = wait_all(&nodes[1].addr, &key, &ids, Duration::from_secs(120));
    let mut starts: Vec<u128> = runs
        .iter()
        .map(|r| {
            assert_eq!(r["status"], "succeeded", "{r}");
            millis(&r["steps"]["s"]["started_at"])
        })
        .collect();
    starts.sort();
    // Over the first 30 s, and over any one second, no more than the rate
    // and the burst allow (a few ms of the starts' own times aside).
    let first = starts[0];
    let in_30s = starts.iter().filter(|&&t| t < first + 30_000).count();
    assert!(in_30s <= 20 * 30 + 5, "{in_30s} starts in 30 s");
    assert!(in_30s >= 20 * 30 * 9 / 10, "only {in_30s} starts in 30 s");
    let busiest = (0..starts.len())
        .map(|k| {
            starts[k..]
                .iter()
                .take_while(|&&u| u < starts[k] + 1_000)
                .count()
        })
        .max()
        .unwrap();
    eprintln!("starts in the first 30 s: {in_30s}; in the busiest second: {busiest}");
    assert!(busiest <= 20 + 5 + 1, "{busiest} starts in one second");
}
