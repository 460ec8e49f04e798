//! Sub-workflow steps over HTTP: the child's output passed through, a
//! failed child failing the step `child_failed`, a cancel of the parent
//! reaching the child, and nesting past five deep refused at validation.

use serde_json::{Value, json};

use crate::http::{get, post_json, request};
use crate::language::{ended, run, wait};
use crate::server::Server;

/// Publishes `doc` as template `name` 1.0.0.
pub(crate) fn publish(server: &Server, key: &str, name: &str, doc: &Value) {
    let body = serde_json::to_vec(doc).unwrap();
    let answer = request(
        server.addr(),
        "PUT",
        &format!("/v1/workflows/{name}/1.0.0"),
        key,
        Some(("application/json", &body)),
    );
    assert_eq!(answer.status, 201, "{name}: {:?}", answer.body);
}

#[test]
fn a_child_run_passes_its_output_up_and_a_failed_child_fails_the_step() {
    let server = Server::start();
    let key = server.default_key();
    publish(
        &server,
        &key,
        "shipping",
        &json!({
            "steps": [{ "id": "pack", "component": "echo@1", "input": { "parcel": "${input.parcel}" } }],
            "output": { "shipped": "${steps.pack.output.parcel}" }
        }),
    );
    publish(
        &server,
        &key,
        "broken",
        &json!({
            "steps": [{ "id": "boom", "component": "fail@1", "input": { "code": "no_stock" } }]
        }),
    );
    let parent = json!({ "name": "orders", "steps": [
        { "id": "ship", "workflow": "shipping@^1", "input": { "parcel": "${input.parcel}" } },
        { "id": "after", "component": "echo@1", "input": { "got": "${steps.ship.output.shipped}" } }
    ], "output": "${steps.after.output.got}" });
    let id = server.submit(&key, &parent, json!({ "parcel": "p-42" }));
    let done = wait(&server, &key, &id, "the parent to end", ended);
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["output"], "p-42");
    let ship = &done["steps"]["ship"];
    assert_eq!(ship["output"], json!({ "shipped": "p-42" }));
    assert_eq!(ship["workflow"], "shipping@1.0.0");
    let child_id = ship["run"].as_str().expect("the child's id").to_string();
    let child = run(&server, &key, &child_id);
    assert_eq!(child["status"], "succeeded", "{child}");
    assert_eq!(child["parent"], id.as_str());
    assert_eq!(child["workflow"], "shipping");
    assert_eq!(child["workflow_version"], "1.0.0");
    assert_eq!(child["input"], json!({ "parcel": "p-42" }));
    let listed = get(server.addr(), "/v1/runs?workflow=shipping", &key).body;
    assert_eq!(listed["runs"][0]["id"], child_id.as_str());
    assert_eq!(listed["runs"][0]["parent"], id.as_str());

    let failing = json!({ "steps": [{ "id": "ship", "workflow": "broken@1" }] });
    let id = server.submit(&key, &failing, json!({}));
    let done = wait(&server, &key, &id, "the parent to fail", ended);
    assert_eq!(done["status"], "failed", "{done}");
    let ship = &done["steps"]["ship"];
    assert_eq!(ship["error"]["code"], "child_failed", "{ship}");
    assert!(
        ship["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no_stock"),
        "{ship}"
    );
    assert_eq!(done["error"]["code"], "child_failed");
    let child = run(&server, &key, ship["run"].as_str().unwrap());
    assert_eq!(child["status"], "failed");

    // An unknown template is refused at submission.
    let unknown = json!({ "steps": [{ "id": "ship", "workflow": "nowhere@1" }] });
    let refused = post_json(
        server.addr(),
        "/v1/runs",
        &key,
        &json!({ "workflow": unknown }),
    );
    assert_eq!(refused.status, 422, "{:?}", refused.body);
    assert_eq!(
        refused.body["error"]["details"][0]["path"],
        "/steps/0/workflow"
    );
}

#[test]
fn cancelling_a_parent_cancels_its_child() {
    let server = Server::start();
    let key = server.default_key();
    publish(
        &server,
        &key,
        "slow",
        &json!({
            "steps": [{ "id": "nap", "component": "sleep@1", "input": { "ms": 30000 } }]
        }),
    );
    let parent = json!({ "steps": [{ "id": "ship", "workflow": "slow@1" }] });
    let id = server.submit(&key, &parent, json!({}));
    let waiting = wait(&server, &key, &id, "the child to start", |r| {
        r["steps"]["ship"]["status"] == "waiting"
    });
    let child_id = waiting["steps"]["ship"]["run"]
        .as_str()
        .unwrap()
        .to_string();
    wait(&server, &key, &child_id, "the child's step to run", |r| {
        r["steps"]["nap"]["status"] == "running"
    });
    let cancelled = post_json(
        server.addr(),
        &format!("/v1/runs/{id}/cancel"),
        &key,
        &json!({}),
    );
    assert_eq!(cancelled.status, 202, "{:?}", cancelled.body);
    let child = wait(&server, &key, &child_id, "the child to end", ended);
    assert_eq!(child["status"], "cancelled", "{child}");
    let parent = run(&server, &key, &id);
    assert_eq!(parent["status"], "cancelled");
    assert_eq!(parent["steps"]["ship"]["status"], "cancelled");
}

#[test]
fn sub_workflows_nest_five_deep_and_a_sixth_level_is_refused_at_validation() {
    let server = Server::start();
    let key = server.default_key();
    // level6 runs a component; level k calls level k+1.
    publish(
        &server,
        &key,
        "level6",
        &json!({
            "steps": [{ "id": "leaf", "component": "echo@1", "input": { "depth": 6 } }],
            "output": "${steps.leaf.output.depth}"
        }),
    );
    for k in (1..=5).rev() {
        publish(
            &server,
            &key,
            &format!("level{k}"),
            &json!({
                "steps": [{ "id": "down", "workflow": format!("level{}@1", k + 1) }],
                "output": "${steps.down.output}"
            }),
        );
    }
    // A root calling level2: children at depths 1 to 5.
    let five = json!({ "steps": [{ "id": "top", "workflow": "level2@1" }], "output": "${steps.top.output}" });
    let id = server.submit(&key, &five, json!({}));
    let done = wait(&server, &key, &id, "five levels to end", ended);
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["output"], 6);

    // A root calling level1: level6 would be a child at depth 6.
    let six = json!({ "steps": [{ "id": "top", "workflow": "level1@1" }] });
    for path in ["/v1/runs", "/v1/workflows/validate"] {
        let body = if path == "/v1/runs" {
            json!({ "workflow": six })
        } else {
            six.clone()
        };
        let refused = post_json(server.addr(), path, &key, &body);
        assert_eq!(refused.status, 422, "{path}: {:?}", refused.body);
        assert_eq!(refused.body["error"]["code"], "invalid_workflow");
        let message = refused.body["error"]["details"][0]["message"]
            .as_str()
            .unwrap();
        assert!(message.contains("at most 5 deep"), "{message}");
    }
}

#[test]
fn a_tree_of_sub_workflows_past_its_budgets_is_refused_and_the_node_stays_up() {
    let server = Server::start();
    let key = server.default_key();
    // A template of about 300 KB, started by 20 steps: 6 MB of documents.
    publish(
        &server,
        &key,
        "bulky",
        &json!({
            "steps": [{ "id": "a", "component": "echo@1", "input": { "pad": "x".repeat(300_000) } }]
        }),
    );
    let steps: Vec<Value> = (0..20)
        .map(|i| json!({ "id": format!("s{i}"), "workflow": "bulky@1" }))
        .collect();
    let refused = post_json(
        server.addr(),
        "/v1/runs",
        &key,
        &json!({ "workflow": { "steps": steps } }),
    );
    assert_eq!(refused.status, 422, "{:?}", refused.body);
    let message = refused.body["error"]["details"][0]["message"]
        .as_str()
        .unwrap();
    assert!(message.contains("larger than 4 MiB together"), "{message}");
    assert_eq!(get(server.addr(), "/healthz", "").status, 200);

    // The root's steps and its children's count against steps_per_run.
    let limits = request(
        server.addr(),
        "PUT",
        "/v1/tenants/default/limits",
        crate::server::ADMIN_TOKEN,
        Some(("application/json", br#"{"steps_per_run": 3}"#)),
    );
    assert_eq!(limits.status, 200, "{:?}", limits.body);
    publish(
        &server,
        &key,
        "pair",
        &json!({ "steps": [
        { "id": "a", "component": "echo@1" },
        { "id": "b", "component": "echo@1" }
    ] }),
    );
    let one = json!({ "steps": [{ "id": "p", "workflow": "pair@1" }] });
    let id = server.submit(&key, &one, json!({}));
    assert_eq!(
        wait(&server, &key, &id, "three steps to end", ended)["status"],
        "succeeded"
    );
    let two = json!({ "steps": [
        { "id": "p", "workflow": "pair@1" },
        { "id": "q", "component": "echo@1" }
    ] });
    let refused = post_json(server.addr(), "/v1/runs", &key, &json!({ "workflow": two }));
    assert_eq!(refused.status, 422, "{:?}", refused.body);
    let message = refused.body["error"]["details"][0]["message"]
        .as_str()
        .unwrap();
    assert!(message.contains("steps_per_run (3)"), "{message}");
}
