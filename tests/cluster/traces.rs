//! One run's trace made by several nodes: the attempts are exported by the
//! nodes that ran them, the run's and steps' spans by the node that ended
//! it, and they fit together as one tree.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::json;
use weft::testing::RedisServer;

use crate::common::otlp::Receiver;
use crate::{Node, default_key, lift_limits, submit, wait_all};

#[test]
fn the_spans_of_a_run_spread_over_two_workers_make_one_tree() {
    let redis = RedisServer::start();
    let receiver = Receiver::start();
    let endpoint = receiver.endpoint();
    let otlp = ["--otlp-endpoint", endpoint.as_str()];
    let api = Node::start(&redis, &[&["--role", "api"][..], &otlp].concat());
    let workers = [
        Node::start(
            &redis,
            &[&["--role", "worker", "--concurrency", "2"][..], &otlp].concat(),
        ),
        Node::start(
            &redis,
            &[&["--role", "worker", "--concurrency", "2"][..], &otlp].concat(),
        ),
    ];
    lift_limits(&api.addr);
    let key = default_key(&[&api]);
    // Steps long enough that both workers take some.
    let mut steps: Vec<_> = (0..12)
        .map(|i| json!({ "id": format!("s{i}"), "component": "sleep@1", "input": { "ms": 100 } }))
        .collect();
    steps.push(json!({ "id": "join", "component": "echo@1",
        "needs": (0..12).map(|i| format!("s{i}")).collect::<Vec<_>>(), "input": {} }));
    let id = submit(
        &api.addr,
        &key,
        &json!({ "name": "spread", "steps": steps }),
    );
    let run = wait_all(
        &api.addr,
        &key,
        std::slice::from_ref(&id),
        Duration::from_secs(60),
    )
    .remove(0);
    assert_eq!(run["status"], "succeeded", "{run}");
    let trace = run["trace_id"].as_str().unwrap();

    // 1 run, 13 steps, 13 attempts; the default batch delay is 5 s.
    let spans = receiver.trace(trace, 27);
    assert_eq!(spans.len(), 27, "{spans:#?}");
    let roots: Vec<_> = spans.iter().filter(|s| s.name == "run spread").collect();
    assert_eq!(roots.len(), 1, "the run's span once");
    let root = roots[0];
    let steps: HashMap<&str, _> = spans
        .iter()
        .filter(|s| s.name.starts_with("step "))
        .map(|s| (s.attr("weft.step").unwrap(), s))
        .collect();
    assert_eq!(steps.len(), 13);
    assert!(steps.values().all(|s| s.parent_span_id == root.span_id));
    let mut nodes = HashSet::new();
    for attempt in spans.iter().filter(|s| s.name.starts_with("attempt ")) {
        let step = steps[attempt.attr("weft.step").unwrap()];
        assert_eq!(attempt.parent_span_id, step.span_id, "{attempt:?}");
        nodes.insert(attempt.resource["service.instance.id"].clone());
    }
    assert_eq!(
        nodes.len(),
        2,
        "attempts from both workers: {nodes:?}\n{}\n{}",
        workers[0].log(),
        workers[1].log()
    );
}
