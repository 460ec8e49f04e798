//! Secrets and outgoing HTTP across nodes: a secret set through one node is
//! opened by the worker node that runs the step (every node has the same
//! key), and a node without the key refuses secrets instead of guessing.

use serde_json::json;
use weft::testing::RedisServer;

use super::common::target::Target;
use super::http::{post_json, request};
use super::{ADMIN, Node, default_key, submit, wait_all};

const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const SECRET: &str = "cluster-secret-5b7e";

#[test]
fn a_secret_set_on_one_node_is_used_by_a_step_on_another_and_a_node_without_the_key_refuses() {
    let scratch = tempfile::tempdir().unwrap();
    let target = Target::start(scratch.path());
    let redis = RedisServer::start();
    let api = Node::start(&redis, &["--role", "api", "--secrets-key", KEY]);
    let mut worker = Node::start(&redis, &["--role", "worker", "--secrets-key", KEY]);
    let key = default_key(&[&api, &worker]);
    let host = format!("127.0.0.1:{}", target.port);
    let limits = serde_json::to_vec(&json!({"allowed_hosts": [host]})).unwrap();
    let set = request(
        &api.addr,
        "PUT",
        "/v1/tenants/default/limits",
        ADMIN,
        Some(("application/json", &limits)),
    );
    assert_eq!(set.status, 200, "{}", set.body);
    let value = serde_json::to_vec(&json!({"value": SECRET})).unwrap();
    let put = request(
        &api.addr,
        "PUT",
        "/v1/secrets/api_token",
        &key,
        Some(("application/json", &value)),
    );
    assert_eq!(put.status, 201, "{}", put.body);

    let workflow = json!({ "steps": [
        {"id": "call", "component": "fetch@1", "input": {"url": target.url("/echo-auth")},
         "http": {"allow": [host]}, "secrets": ["api_token"], "retry": {"max_attempts": 1}}
    ]});
    let id = submit(&api.addr, &key, &workflow);
    let run = &wait_all(&api.addr, &key, &[id], std::time::Duration::from_secs(60))[0];
    assert_eq!(run["status"], "succeeded", "{run}\n{}", worker.log());
    assert_eq!(
        run["steps"]["call"]["output"]["body"]["authorization"],
        "Bearer ***"
    );
    assert!(
        target
            .seen()
            .iter()
            .any(|s| s.authorization.as_deref() == Some(&format!("Bearer {SECRET}")))
    );

    // A node without the key: its API refuses secrets, and a step it runs
    // that lists one fails `secrets_unavailable`; nothing else is harmed.
    worker.kill_9();
    let keyless = Node::start(&redis, &[]);
    let refused = request(
        &keyless.addr,
        "PUT",
        "/v1/secrets/other",
        &key,
        Some(("application/json", &value)),
    );
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.body["error"]["code"], "secrets_unavailable");
    let id = submit(&api.addr, &key, &workflow);
    let plain = submit(
        &api.addr,
        &key,
        &json!({"steps": [{"id": "e", "component": "echo@1", "input": {"x": 1}}]}),
    );
    let runs = wait_all(
        &api.addr,
        &key,
        &[id, plain],
        std::time::Duration::from_secs(60),
    );
    assert_eq!(
        runs[0]["steps"]["call"]["error"]["code"], "secrets_unavailable",
        "{}",
        runs[0]
    );
    assert_eq!(runs[1]["status"], "succeeded", "{}", runs[1]);
    for node in [&api, &keyless] {
        assert!(!node.log().contains(SECRET));
    }
    let listed = post_json(&api.addr, "/v1/workflows/validate", &key, &workflow);
    assert_eq!(listed.status, 200, "{}", listed.body);
}
