//! Redis that refuses writes, nodes that keep dying with the same attempt,
//! and cancellation that must reach other nodes (ARCHITECTURE.md section 11).

use super::*;

/// Submits while Redis may refuse: every answer is 202 or 503, never 500.
fn submit_or_503(addr: &str, key: &str, workflow: &Value) -> Option<String> {
    let reply = post_json(addr, "/v1/runs", key, &json!({ "workflow": workflow }));
    match reply.status {
        202 => Some(reply.body["id"].as_str().unwrap().to_string()),
        503 => None,
        other => panic!("submit answered {other}: {:?}", reply.body),
    }
}

/// Runs in flight while Redis refuses every write for a while, then takes
/// them again: every accepted run finishes and no output is committed twice.
fn ride_out_refusals(refuse: fn(&mut redis::Connection), allow: fn(&mut redis::Connection)) {
    let redis = RedisServer::start();
    let node = Node::start(&redis, &[]);
    let key = default_key(&[&node]);
    lift_limits(&node.addr);
    let workflow = json!({"steps": [
        {"id": "nap", "component": "sleep@1", "input": {"ms": 300}},
        {"id": "after", "component": "echo@1", "input": "${steps.nap.output}"}
    ]});
    let mut ids: Vec<String> = (0..20)
        .map(|_| submit(&node.addr, &key, &workflow))
        .collect();
    let mut conn = redis_conn(&redis);
    refuse(&mut conn);
    let mut refused = 0;
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        match submit_or_503(&node.addr, &key, &workflow) {
            Some(id) => ids.push(id),
            None => refused += 1,
        }
        // Reads still answer; nothing is a 500.
        let read = get(&node.addr, &format!("/v1/runs/{}", ids[0]), &key);
        assert_eq!(read.status, 200, "{}", read.body);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(refused > 0, "Redis never refused a write");
    allow(&mut conn);
    ids.extend((0..5).map(|_| submit(&node.addr, &key, &workflow)));
    let runs = wait_all(&node.addr, &key, &ids, Duration::from_secs(120));
    for (id, run) in ids.iter().zip(&runs) {
        assert_eq!(run["status"], "succeeded", "{run}\n{}", node.log());
        let steps = steps_hash(&mut conn, id);
        assert_eq!(steps.get("c0").map(String::as_str), Some("1"), "{id}");
        assert_eq!(steps.get("c1").map(String::as_str), Some("1"), "{id}");
    }
    let active: Option<i64> = redis::cmd("GET")
        .arg("weft:tenant:default:active")
        .query(&mut conn)
        .unwrap();
    assert_eq!(active.unwrap_or(0), 0, "active-run counter drifted");
    println!(
        "{refused} submissions refused with 503, {} runs finished",
        ids.len()
    );
}

#[test]
fn redis_out_of_memory_loses_no_accepted_run() {
    ride_out_refusals(
        |conn| {
            let _: () = redis::cmd("CONFIG")
                .arg(&["SET", "maxmemory-policy", "noeviction"])
                .query(conn)
                .unwrap();
            let _: () = redis::cmd("CONFIG")
                .arg(&["SET", "maxmemory", "1"])
                .query(conn)
                .unwrap();
        },
        |conn| {
            let _: () = redis::cmd("CONFIG")
                .arg(&["SET", "maxmemory", "0"])
                .query(conn)
                .unwrap();
        },
    );
}

#[test]
fn a_read_only_redis_loses_no_accepted_run() {
    ride_out_refusals(
        |conn| {
            // A replica of a master that is not there (nothing listens on
            // port 1): read-only, and its data is kept.
            let _: () = redis::cmd("REPLICAOF")
                .arg(&["127.0.0.1", "1"])
                .query(conn)
                .unwrap();
        },
        |conn| {
            let _: () = redis::cmd("REPLICAOF")
                .arg(&["NO", "ONE"])
                .query(conn)
                .unwrap();
        },
    );
}

#[test]
fn an_attempt_whose_nodes_keep_dying_fails_delivery_limit() {
    let redis = RedisServer::start();
    let api = Node::start(&redis, &["--role", "api"]);
    let key = default_key(&[&api]);
    let workflow =
        json!({"steps": [{"id": "nap", "component": "sleep@1", "input": {"ms": 10000}}]});
    let run = submit(&api.addr, &key, &workflow);
    let mut conn = redis_conn(&redis);
    let mut kills = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = get(&api.addr, &format!("/v1/runs/{run}"), &key).body["status"].clone();
        if status == "failed" || status == "succeeded" {
            break;
        }
        assert!(kills < 8, "still {status} after {kills} kills");
        let mut worker = Node::start(&redis, &["--role", "worker", "--visibility-timeout", "1s"]);
        // Wait until this worker holds the attempt (one more delivery), then kill it.
        let delivered = |conn: &mut redis::Connection| -> u32 {
            steps_hash(conn, &run)
                .get("v0")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        while delivered(&mut conn) <= kills
            && get(&api.addr, &format!("/v1/runs/{run}"), &key).body["status"] == "running"
            || delivered(&mut conn) == 0
        {
            assert!(
                Instant::now() < deadline,
                "not delivered again:\n{}",
                worker.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        if delivered(&mut conn) > 5 {
            // The delivery past the limit is not run: it fails at once.
            let done = wait_all(
                &api.addr,
                &key,
                std::slice::from_ref(&run),
                Duration::from_secs(10),
            );
            assert_eq!(done[0]["status"], "failed");
            break;
        }
        worker.kill_9();
        kills += 1;
    }
    let done = get(&api.addr, &format!("/v1/runs/{run}"), &key).body;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(
        done["steps"]["nap"]["error"]["code"], "delivery_limit",
        "{done}"
    );
    assert_eq!(kills, 5, "{done}");
    // Nothing keeps delivering it.
    let pending: Vec<Value> = redis::cmd("XPENDING")
        .arg(&["weft:queue:ready", "workers"])
        .query::<redis::Value>(&mut conn)
        .map(|_| Vec::new())
        .unwrap();
    assert!(pending.is_empty());
}

/// `weft_steps_running` of a node, from its metrics.
fn running_on(node: &Node) -> f64 {
    let text = get(&node.addr, "/metrics", "").body;
    http::metric(text.as_str().unwrap_or(""), "weft_steps_running").unwrap_or(0.0)
}

#[test]
fn cancelling_through_an_api_node_stops_attempts_on_every_worker() {
    let redis = RedisServer::start();
    let api = Node::start(&redis, &["--role", "api"]);
    let workers = [
        Node::start(&redis, &["--role", "worker", "--concurrency", "4"]),
        Node::start(&redis, &["--role", "worker", "--concurrency", "4"]),
    ];
    let key = default_key(&[&api]);
    let steps: Vec<Value> = (0..8)
        .map(|i| json!({"id": format!("nap{i}"), "component": "sleep@1", "input": {"ms": 60000}}))
        .collect();
    let run = submit(&api.addr, &key, &json!({"steps": steps}));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !workers.iter().all(|w| running_on(w) >= 1.0)
        || workers.iter().map(running_on).sum::<f64>() < 8.0
    {
        assert!(
            Instant::now() < deadline,
            "steps did not start on both workers"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let cancelled = post_json(
        &api.addr,
        &format!("/v1/runs/{run}/cancel"),
        &key,
        &json!({}),
    );
    assert_eq!(cancelled.status, 202, "{}", cancelled.body);
    let at = Instant::now();
    while workers.iter().map(running_on).sum::<f64>() > 0.0 {
        assert!(
            at.elapsed() < Duration::from_secs(10),
            "attempts still running {:?} after the cancel",
            at.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("every attempt stopped {:?} after the cancel", at.elapsed());
}
