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
    // and the burst allow. A start is when a node claims the step, which
    // lags the token that let it go (a node's promote interval, its take,
    // a loaded machine): up to half a second of tokens (10) of slack. A
    // limit that did not hold would start the 640 within seconds.
    let first = starts[0];
    let in_30s = starts.iter().filter(|&&t| t < first + 30_000).count();
    assert!(in_30s <= 20 * 30 + 5 + 10, "{in_30s} starts in 30 s");
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
    assert!(busiest <= 20 + 5 + 5, "{busiest} starts in one second");
}

/// The (start, end) of step `s` of each run, by the times the runs record.
fn intervals(runs: &[Value]) -> Vec<(u128, u128)> {
    let mut v: Vec<(u128, u128)> = runs
        .iter()
        .map(|r| {
            assert_eq!(r["status"], "succeeded", "{r}");
            let s = &r["steps"]["s"];
            (millis(&s["started_at"]), millis(&s["finished_at"]))
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_concurrency_key_of_limit_one_is_held_by_one_attempt_across_three_nodes() {
    let redis = RedisServer::start();
    let mut nodes = [
        Node::start(&redis, &["--visibility-timeout", "2s"]),
        Node::start(&redis, &["--visibility-timeout", "2s"]),
        Node::start(&redis, &["--visibility-timeout", "2s"]),
    ];
    let key = default_key(&nodes.iter().collect::<Vec<_>>());
    lift_limits(&nodes[0].addr);
    let workflow = |ms: u64| {
        json!({ "steps": [{ "id": "s", "component": "sleep@1", "input": { "ms": ms },
            "concurrency": { "key": "${input.customer}", "limit": 1 } }] })
    };
    let submit_as = |addr: &str, ms: u64, customer: &str| {
        let reply = super::http::post_json(
            addr,
            "/v1/runs",
            &key,
            &json!({ "workflow": workflow(ms), "input": { "customer": customer } }),
        );
        assert_eq!(reply.status, 202, "{:?}", reply.body);
        reply.body["id"].as_str().unwrap().to_string()
    };
    // 200 runs of one customer, and 20 of others, over the three nodes.
    let same: Vec<String> = (0..200)
        .map(|i| submit_as(&nodes[i % 3].addr, 5, "acme"))
        .collect();
    let others: Vec<String> = (0..20)
        .map(|i| submit_as(&nodes[i % 3].addr, 300, &format!("c{i}")))
        .collect();
    let others = intervals(&wait_all(
        &nodes[0].addr,
        &key,
        &others,
        Duration::from_secs(120),
    ));
    let same = intervals(&wait_all(
        &nodes[0].addr,
        &key,
        &same,
        Duration::from_secs(120),
    ));
    for pair in same.windows(2) {
        assert!(
            pair[0].1 <= pair[1].0,
            "two attempts held acme at once: {pair:?}"
        );
    }
    // The others ran side by side: their 20 sleeps of 300 ms took far less than 6 s.
    let span = others.last().unwrap().1 - others[0].0;
    let acme = same.last().unwrap().1 - same[0].0;
    eprintln!(
        "200 runs of acme one at a time over {acme} ms, none overlapping; 20 other customers' 300 ms runs within {span} ms"
    );
    assert!(span < 3_000, "the other customers' runs took {span} ms");

    // A node dies holding the key: the attempt is delivered again after the
    // lease, and the key's other runs follow.
    let holder = submit_as(&nodes[0].addr, 4_000, "initech");
    let waiter = submit_as(&nodes[1].addr, 5, "initech");
    let mut running_on = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while running_on.is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the holder did not start"
        );
        let cluster = get(&nodes[2].addr, "/v1/cluster", ADMIN).body;
        running_on = cluster["nodes"].as_array().unwrap().iter().find_map(|n| {
            (n["running"].as_u64() == Some(1)).then(|| n["listen"].as_str().unwrap().to_string())
        });
        std::thread::sleep(Duration::from_millis(50));
    }
    let running_on = running_on.unwrap();
    let killed = nodes
        .iter()
        .position(|n| running_on.ends_with(&n.addr))
        .unwrap_or_else(|| panic!("{running_on} is none of the nodes"));
    nodes[killed].kill_9();
    let alive = &nodes[(killed + 1) % 3].addr;
    let runs = wait_all(alive, &key, &[holder, waiter], Duration::from_secs(60));
    let both = intervals(&runs);
    eprintln!(
        "after the kill: the holder ran {:?}, its waiter {:?} (ms since the epoch)",
        both[0], both[1]
    );
    assert!(both[0].1 <= both[1].0, "the key was held twice: {both:?}");
}
