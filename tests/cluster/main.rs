//! Several `weft serve` nodes on one real `redis-server`: work spread over the
//! nodes, a node killed mid-step, Redis restarted under load.

mod capabilities;
#[path = "../common/mod.rs"]
mod common;
mod flow;
#[path = "../api/http.rs"]
mod http;
mod refusals;
mod schedules;
mod traces;
mod waits;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weft::testing::RedisServer;

use http::{get, post_json};

const ADMIN: &str = "cluster-admin";

/// One `weft serve` process on the shared Redis.
struct Node {
    child: Child,
    addr: String,
    dir: tempfile::TempDir,
}

impl Node {
    fn start(redis: &RedisServer, args: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("weft-node-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let addr = format!("127.0.0.1:{}", weft::testing::free_port());
        let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_weft"));
        weft::testing::clear_weft_env(&mut command);
        let child = command
            .args(["serve", "--listen", &addr, "--admin-token", ADMIN])
            .args(["--redis", &redis.url()])
            .arg("--data-dir")
            .arg(dir.path().join("weft"))
            .env("WEFT_CACHE_DIR", common::data_dir())
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start weft serve");
        let node = Self { child, addr, dir };
        node.wait_ready();
        node
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while std::net::TcpStream::connect(&self.addr).is_err()
            || get(&self.addr, "/healthz", "").status != 200
        {
            assert!(
                Instant::now() < deadline,
                "node did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    fn kill_9(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The API key of tenant `default`, whichever node created it.
fn default_key(nodes: &[&Node]) -> String {
    nodes
        .iter()
        .find_map(|n| std::fs::read_to_string(n.dir.path().join("weft/api-key")).ok())
        .expect("one node created tenant default")
        .trim()
        .to_string()
}

fn redis_conn(redis: &RedisServer) -> redis::Connection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap()
}

/// The steps hash of a run, straight from Redis.
fn steps_hash(conn: &mut redis::Connection, run: &str) -> HashMap<String, String> {
    redis::cmd("HGETALL")
        .arg(format!("weft:{{run:{run}}}:steps"))
        .query(conn)
        .unwrap()
}

/// Waits until every run has ended and returns them.
fn wait_all(addr: &str, key: &str, ids: &[String], within: Duration) -> Vec<Value> {
    let deadline = Instant::now() + within;
    let mut done = Vec::new();
    for id in ids {
        loop {
            let run = get(addr, &format!("/v1/runs/{id}"), key).body;
            if ["succeeded", "failed", "cancelled"].contains(&run["status"].as_str().unwrap_or(""))
            {
                done.push(run);
                break;
            }
            assert!(Instant::now() < deadline, "run {id} did not end: {run}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    done
}

/// Polls run `id` until `done` holds, for at most 30 s; `node`'s log tells
/// why when it does not.
fn wait_until(
    addr: &str,
    key: &str,
    id: &str,
    node: &Node,
    what: &str,
    done: impl Fn(&Value) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done(&get(addr, &format!("/v1/runs/{id}"), key).body) {
        assert!(Instant::now() < deadline, "{what}:\n{}", node.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn submit(addr: &str, key: &str, workflow: &Value) -> String {
    let reply = post_json(addr, "/v1/runs", key, &json!({ "workflow": workflow }));
    assert_eq!(reply.status, 202, "{}", reply.body);
    reply.body["id"].as_str().unwrap().to_string()
}

fn lift_limits(addr: &str) {
    let reply = http::request(
        addr,
        "PUT",
        "/v1/tenants/default/limits",
        ADMIN,
        Some((
            "application/json",
            br#"{"runs_per_second": 100000, "concurrent_runs": 100000}"#,
        )),
    );
    assert_eq!(reply.status, 200, "{:?}", reply.body);
}

#[test]
fn three_nodes_run_500_fan_out_workflows_and_commit_each_output_once() {
    let redis = RedisServer::start();
    let nodes = [
        Node::start(&redis, &[]),
        Node::start(&redis, &[]),
        Node::start(&redis, &[]),
    ];
    let key = default_key(&nodes.iter().collect::<Vec<_>>());
    lift_limits(&nodes[0].addr);
    let workflow = json!({
        "steps": [
            {"id": "a", "component": "echo@1", "input": {"n": 1}},
            {"id": "b", "component": "echo@1", "input": {"n": 2}},
            {"id": "c", "component": "echo@1", "input": {"n": 3}},
            {"id": "d", "component": "echo@1", "input": {"n": 4}},
            {"id": "join", "component": "echo@1",
             "input": {"sum": ["${steps.a.output.n}", "${steps.b.output.n}", "${steps.c.output.n}", "${steps.d.output.n}"]}}
        ],
        "output": "${steps.join.output.sum}"
    });
    let ids: Vec<String> = (0..500)
        .map(|i| submit(&nodes[i % 3].addr, &key, &workflow))
        .collect();
    let runs = wait_all(&nodes[1].addr, &key, &ids, Duration::from_secs(300));
    for run in &runs {
        assert_eq!(run["status"], "succeeded", "{run}");
        assert_eq!(run["output"], json!([1, 2, 3, 4]));
    }
    // Each output was committed exactly once.
    let mut conn = redis_conn(&redis);
    for id in &ids {
        let steps = steps_hash(&mut conn, id);
        for i in 0..5 {
            assert_eq!(
                steps.get(&format!("c{i}")).map(String::as_str),
                Some("1"),
                "run {id} step {i}"
            );
        }
    }
    // The work was spread: every node ran steps.
    for node in &nodes {
        let metrics = get(&node.addr, "/metrics", "").body;
        let ran = http::metric(
            metrics.as_str().unwrap(),
            "weft_steps_total{status=\"succeeded\",code=\"\"}",
        )
        .unwrap_or(0.0);
        assert!(ran > 0.0, "a node ran nothing:\n{}", node.log());
    }
    // Every node is listed, and nothing is left in the queue.
    let cluster = get(&nodes[2].addr, "/v1/cluster", ADMIN).body;
    assert_eq!(cluster["backend"], "redis");
    assert_eq!(cluster["nodes"].as_array().unwrap().len(), 3, "{cluster}");
    assert_eq!(cluster["queues"][0]["depth"], 0, "{cluster}");
}

#[test]
fn a_killed_node_loses_no_run_and_its_steps_are_picked_up_in_time() {
    let redis = RedisServer::start();
    let visibility = Duration::from_secs(2);
    let args = ["--visibility-timeout", "2s"];
    let api = Node::start(&redis, &["--role", "api"]);
    let mut doomed = Node::start(&redis, &args);
    let key = default_key(&[&api, &doomed]);
    lift_limits(&api.addr);
    let workflow = json!({"steps": [
        {"id": "nap", "component": "sleep@1", "input": {"ms": 3000}},
        {"id": "after", "component": "echo@1", "input": "${steps.nap.output}"}
    ]});
    let ids: Vec<String> = (0..20)
        .map(|_| submit(&api.addr, &key, &workflow))
        .collect();
    // Wait until the doomed node runs steps, then kill it mid-step.
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&api.addr, &format!("/v1/runs/{}", ids[19]), &key).body["steps"]["nap"]["status"]
        != "running"
    {
        assert!(
            Instant::now() < deadline,
            "no step started:\n{}",
            doomed.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    doomed.kill_9();
    let killed_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let survivor = Node::start(&redis, &args);

    let runs = wait_all(&api.addr, &key, &ids, Duration::from_secs(120));
    let mut conn = redis_conn(&redis);
    let mut picked_up = 0;
    for (run, id) in runs.iter().zip(&ids) {
        assert_eq!(run["status"], "succeeded", "{run}\n{}", survivor.log());
        let steps = steps_hash(&mut conn, id);
        for i in 0..2 {
            assert_eq!(
                steps.get(&format!("c{i}")).map(String::as_str),
                Some("1"),
                "run {id} step {i}"
            );
        }
        // Steps the dead node held were claimed again by the survivor.
        let reclaimed: u64 = steps["r0"].parse().unwrap();
        let first: u64 = steps["t0"].parse().unwrap();
        if first < killed_at && reclaimed > killed_at {
            picked_up += 1;
            let late = reclaimed - killed_at;
            assert!(
                late <= (visibility + Duration::from_secs(2)).as_millis() as u64,
                "run {id}: lost work picked up {late} ms after the kill"
            );
        }
    }
    assert!(picked_up > 0, "no step was running on the killed node");
}

#[test]
fn nodes_ride_out_a_redis_restart_and_lose_no_accepted_run() {
    let mut redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let node = Node::start(&redis, &[]);
    let key = default_key(&[&node]);
    lift_limits(&node.addr);
    let workflow = json!({"steps": [
        {"id": "nap", "component": "sleep@1", "input": {"ms": 700}},
        {"id": "after", "component": "echo@1", "input": "${steps.nap.output}"}
    ]});
    let mut ids: Vec<String> = (0..30)
        .map(|_| submit(&node.addr, &key, &workflow))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    redis.stop();
    // While Redis is away the node says it is not ready, and stays up.
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&node.addr, "/readyz", "").status != 503 {
        assert!(
            Instant::now() < deadline,
            "/readyz stayed 200 with Redis down"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(get(&node.addr, "/healthz", "").status, 200);
    std::thread::sleep(Duration::from_secs(1));
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&node.addr, "/readyz", "").status != 200 {
        assert!(
            Instant::now() < deadline,
            "/readyz did not recover:\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    ids.extend((0..10).map(|_| submit(&node.addr, &key, &workflow)));
    let runs = wait_all(&node.addr, &key, &ids, Duration::from_secs(120));
    for run in &runs {
        assert_eq!(run["status"], "succeeded", "{run}\n{}", node.log());
    }
}

#[test]
fn a_compensation_is_carried_on_by_another_node_when_its_node_is_killed() {
    let redis = RedisServer::start();
    let args = ["--visibility-timeout", "2s"];
    let api = Node::start(&redis, &["--role", "api"]);
    let mut doomed = Node::start(&redis, &args);
    let key = default_key(&[&api, &doomed]);
    let workflow = json!({"steps": [
        {"id": "charge", "component": "echo@1", "input": {"id": "ch_9"},
         "compensate": {"component": "sleep@1",
                        "input": {"ms": 1500, "value": "${steps.charge.output.id}"}}},
        {"id": "ship", "component": "fail@1", "needs": ["charge"], "input": {"code": "no_stock"}}
    ]});
    let id = submit(&api.addr, &key, &workflow);
    wait_until(
        &api.addr,
        &key,
        &id,
        &doomed,
        "no compensation started",
        |run| run["steps"]["charge"]["compensation"]["status"] == "running",
    );
    doomed.kill_9();
    assert_eq!(
        get(&api.addr, &format!("/v1/runs/{id}"), &key).body["status"],
        "compensating"
    );
    let survivor = Node::start(&redis, &args);
    let run = wait_all(&api.addr, &key, &[id], Duration::from_secs(60)).remove(0);
    assert_eq!(run["status"], "failed", "{run}\n{}", survivor.log());
    assert_eq!(run["error"]["step"], "ship");
    let compensation = &run["steps"]["charge"]["compensation"];
    assert_eq!(compensation["status"], "succeeded", "{run}");
    assert_eq!(
        compensation["attempts"], 1,
        "delivered again as the same attempt"
    );
    assert_eq!(compensation["output"]["value"], "ch_9");
}

#[test]
fn a_for_each_is_carried_on_by_another_node_when_its_node_is_killed() {
    let redis = RedisServer::start();
    let args = ["--visibility-timeout", "2s"];
    let api = Node::start(&redis, &["--role", "api"]);
    let mut doomed = Node::start(&redis, &args);
    let key = default_key(&[&api, &doomed]);
    let workflow = json!({"steps": [
        {"id": "each", "component": "sleep@1", "for_each": "${input.list}",
         "max_concurrency": 5, "input": {"ms": 100, "value": "${index}"}}
    ], "output": "${steps.each.output}"});
    let reply = post_json(
        &api.addr,
        "/v1/runs",
        &key,
        &json!({ "workflow": workflow, "input": { "list": vec![0; 60] } }),
    );
    assert_eq!(reply.status, 202, "{}", reply.body);
    let id = reply.body["id"].as_str().unwrap().to_string();
    wait_until(&api.addr, &key, &id, &doomed, "no items ran", |run| {
        run["steps"]["each"]["items"]["counts"]["succeeded"].as_u64() >= Some(10)
    });
    doomed.kill_9();
    let survivor = Node::start(&redis, &args);
    let run = wait_all(&api.addr, &key, &[id], Duration::from_secs(60)).remove(0);
    assert_eq!(run["status"], "succeeded", "{run}\n{}", survivor.log());
    let output = run["output"].as_array().unwrap();
    assert_eq!(output.len(), 60);
    for (i, o) in output.iter().enumerate() {
        assert_eq!(o["value"], i, "item {i}");
    }
}
