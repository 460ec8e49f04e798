//! Validation reports every problem at once, with JSON Pointer paths, and exit code 2.

use serde_json::json;

use crate::common::{exec, output, weft};

#[test]
fn every_problem_is_reported_at_once_with_its_pointer() {
    let workflow = json!({
        "name": "broken",
        "steps": [
            { "id": "a", "component": "echo@1.0.0", "input": {} },
            { "id": "a", "component": "echo@1.0.0", "input": {} },
            { "id": "b", "component": "echo@1.0.0", "needs": ["ghost"] },
            { "id": "c", "component": "echo@1.0.0", "input": { "x": "${steps.phantom.output}" } },
            { "id": "d", "component": "echo@1.0.0", "input": "${steps.e.output}" },
            { "id": "e", "component": "echo@1.0.0", "input": "${steps.d.output}" },
            { "id": "f", "component": "nosuch@1.0.0" },
            { "id": "g", "component": "echo@^2" },
            { "id": "h", "component": "echo@1.0.0", "timeout_ms": "soon" }
        ]
    });
    let out = exec(&workflow, &json!({}));
    assert_eq!(out.code, 2, "stdout: {}", out.stdout);
    assert!(out.stdout.is_empty(), "nothing runs: {}", out.stdout);
    let paths = out.problem_paths();
    for expected in [
        "/steps/1/id",
        "/steps/2/needs/0",
        "/steps/3/input/x",
        "/steps/6/component",
        "/steps/7/component",
        "/steps/8/timeout_ms",
    ] {
        assert!(
            paths.iter().any(|p| p == expected),
            "no problem at {expected}: {paths:?}"
        );
    }
    let details = out.error()["error"]["details"].clone();
    let message_at = |path: &str| -> String {
        details
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["path"] == path)
            .map(|d| d["message"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
            .join(" | ")
    };
    assert!(message_at("/steps/2/needs/0").contains("ghost"));
    assert!(message_at("/steps/3/input/x").contains("phantom"));
    assert!(message_at("/steps/6/component").contains("nosuch"));
    assert!(
        message_at("/steps/7/component").contains("1.0.0"),
        "lists available versions"
    );
    let cycle = details
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["message"].as_str().unwrap())
        .find(|m| m.contains("cycle"))
        .expect("a cycle problem");
    assert!(cycle.contains('d') && cycle.contains('e'), "{cycle}");
}

#[test]
fn schema_errors_point_into_the_document() {
    let workflow = json!({
        "steps": [ { "id": "Not Valid", "component": "echo@1.0.0", "retry": { "max_attempts": 0 } } ],
        "unknown_field": true
    });
    let out = exec(&workflow, &json!({}));
    assert_eq!(out.code, 2);
    let paths = out.problem_paths();
    assert!(paths.iter().any(|p| p == "/steps/0/id"), "{paths:?}");
    assert!(
        paths.iter().any(|p| p == "/steps/0/retry/max_attempts"),
        "{paths:?}"
    );
    assert!(
        out.stderr.contains("unknown_field"),
        "unknown top-level fields are named: {}",
        out.stderr
    );
}

#[test]
fn input_breaking_input_schema_is_refused() {
    let workflow = json!({
        "input_schema": {
            "type": "object",
            "required": ["order"],
            "properties": { "count": { "type": "integer" } }
        },
        "steps": [ { "id": "a", "component": "echo@1.0.0", "input": "${input}" } ]
    });
    let out = exec(&workflow, &json!({ "count": "many" }));
    assert_eq!(out.code, 2);
    assert_eq!(out.error()["error"]["code"], "invalid_input");
    let paths = out.problem_paths();
    assert!(
        paths.iter().any(|p| p == "/input"),
        "missing `order`: {paths:?}"
    );
    assert!(paths.iter().any(|p| p == "/input/count"), "{paths:?}");

    let ok = exec(&workflow, &json!({ "order": 1, "count": 3 }));
    assert_eq!(ok.code, 0, "{}", ok.stderr);
}

#[test]
fn exit_codes_are_0_1_and_2() {
    let good = json!({ "steps": [ { "id": "a", "component": "echo@1.0.0", "input": {} } ] });
    let failing = json!({ "steps": [ { "id": "a", "component": "fail@1.0.0", "input": {} } ] });
    let invalid = json!({ "steps": [ { "id": "a", "component": "echo@9.9.9" } ] });
    assert_eq!(exec(&good, &json!({})).code, 0);
    assert_eq!(exec(&failing, &json!({})).code, 1);
    assert_eq!(exec(&invalid, &json!({})).code, 2);
}

#[test]
fn a_document_that_is_not_json_is_refused_with_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wf.json");
    std::fs::write(&file, "{ \"steps\": [ ").unwrap();
    let out = output(weft().arg("exec").arg(&file).output().unwrap());
    assert_eq!(out.code, 2);
    assert_eq!(out.error()["error"]["code"], "invalid_workflow");
}

#[test]
fn input_that_is_not_json_is_refused_with_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wf.json");
    std::fs::write(&file, r#"{"steps":[{"id":"a","component":"echo@1"}]}"#).unwrap();
    let out = output(
        weft()
            .arg("exec")
            .arg(&file)
            .args(["--input", "{nope"])
            .output()
            .unwrap(),
    );
    assert_eq!(out.code, 2);
    assert_eq!(out.error()["error"]["code"], "invalid_input");
}

#[test]
fn a_sub_workflow_is_refused_with_what_to_do_instead() {
    let workflow = json!({ "steps": [
        { "id": "a", "component": "echo@1" },
        { "id": "ship", "workflow": "shipping@1", "needs": ["a"] }
    ] });
    let out = exec(&workflow, &json!({}));
    assert_eq!(out.code, 2, "stdout: {}", out.stdout);
    assert_eq!(out.problem_paths(), vec!["/steps/1/workflow".to_string()]);
    let message = out.error()["error"]["details"][0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains("weft serve"), "{message}");
}
