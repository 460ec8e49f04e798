//! Whole documents: what a valid one becomes, what garbage does, and run input checks.

use serde_json::json;

use super::*;

#[test]
fn architecture_example_validates() {
    let Validated { workflow, pins } = validate(&example(), &registry).unwrap();
    assert_eq!(pins, ["parse@1.0.0", "price@1.2.5", "notify@1.4.0"]);
    assert_eq!(workflow.name, "orders");
    assert_eq!(workflow.description.as_deref(), Some("price an order"));
    assert_eq!(
        workflow.input_schema,
        Some(json!({ "type": "object", "required": ["order"] }))
    );
    let ids: Vec<&str> = workflow.steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["parse", "price", "notify"]);
    assert_eq!(workflow.steps[1].deps, [0]);
    assert_eq!(workflow.steps[2].deps, [1]);
    assert_eq!(workflow.steps[2].needs, ["price"]);
    assert_eq!(workflow.dependents(0), [1]);
    assert_eq!(workflow.dependents(1), [2]);
    assert!(workflow.dependents(2).is_empty());
    assert!(workflow.dependents(99).is_empty());
    assert_eq!(workflow.roots().collect::<Vec<_>>(), [0]);
    assert_eq!(workflow.step_index("notify"), Some(2));
    assert_eq!(workflow.step_index("nope"), None);

    let price = &workflow.steps[1];
    assert_eq!(price.component().unwrap().name, "price");
    assert_eq!(price.component().unwrap().raw, "price@^1.2");
    assert_eq!(
        price.component().unwrap().requirement,
        VersionReq::parse("^1.2").unwrap()
    );
    assert_eq!(
        price.retry,
        RetryPolicy {
            max_attempts: 5,
            initial_backoff_ms: 100,
            max_backoff_ms: 10_000
        }
    );
    assert_eq!(price.timeout_ms, Some(2000));
    assert_eq!(
        price.limits,
        StepLimits {
            fuel: Some(500_000_000),
            memory_mb: Some(64)
        }
    );
    assert_eq!(
        workflow.steps[0]
            .component()
            .unwrap()
            .requirement
            .to_string(),
        "=1.0.0"
    );

    let notify = &workflow.steps[2];
    assert_eq!(notify.retry, RetryPolicy::default());
    assert_eq!(
        notify.retry,
        RetryPolicy {
            max_attempts: 1,
            initial_backoff_ms: 100,
            max_backoff_ms: 10_000
        }
    );
    assert_eq!(notify.timeout_ms, None);
    assert_eq!(notify.timeout_ms_or_default(), 30_000);
    assert_eq!(notify.limits, StepLimits::default());
    assert!(notify.input.is_literal());

    // The output template resolves against step outputs.
    let priced = json!({"total": 12.5});
    let output = workflow
        .output
        .as_ref()
        .unwrap()
        .resolve(&|root| (root == Root::Step(1)).then_some(&priced));
    assert_eq!(output.unwrap(), json!({"total": 12.5}));
}

#[test]
fn defaults_for_a_minimal_document() {
    let workflow = validate(
        &doc_with(json!([{"id": "a", "component": "parse@1"}])),
        &registry,
    )
    .unwrap()
    .workflow;
    assert_eq!(workflow.name, "workflow");
    assert_eq!(workflow.description, None);
    assert_eq!(workflow.input_schema, None);
    assert!(workflow.output.is_none());
    let input = workflow.steps[0].input.resolve(&|_| None).unwrap();
    assert_eq!(input, json!({}));
}

#[test]
fn dependencies_merge_needs_and_references() {
    let doc = doc_with(json!([
        {"id": "a", "component": "parse@1"},
        {"id": "b", "component": "parse@1"},
        {"id": "c", "component": "parse@1", "needs": ["b"],
         "input": ["${steps.b.output}", "${steps.a.output.x}", "${steps.a.output.y}", "${input}"]},
        {"id": "d", "component": "parse@1", "needs": ["c", "a"]},
    ]));
    let workflow = validate(&doc, &registry).unwrap().workflow;
    assert_eq!(workflow.steps[2].deps, [0, 1]);
    assert_eq!(workflow.steps[2].needs, ["b"]);
    assert_eq!(workflow.steps[3].deps, [0, 2]);
    assert_eq!(workflow.steps[3].needs, ["c", "a"]);
    assert_eq!(workflow.dependents(0), [2, 3]);
    assert_eq!(workflow.roots().collect::<Vec<_>>(), [0, 1]);
}

#[test]
fn problems_serialize_as_path_and_message() {
    let p = Problem::new("/steps/0/id", "bad");
    assert_eq!(
        serde_json::to_value(&p).unwrap(),
        json!({"path": "/steps/0/id", "message": "bad"})
    );
    assert_eq!(p.to_string(), "/steps/0/id: bad");
    assert_eq!(Problem::new("", "no").to_string(), "(document): no");
}

#[test]
fn garbage_documents_never_panic() {
    let garbage = [
        json!(null),
        json!(7),
        json!("steps"),
        json!([[{}]]),
        json!({"steps": null}),
        json!({"steps": [null, 1, "a", [], {}]}),
        json!({"steps": [{"id": 5, "component": 5, "input": 5, "needs": 5, "retry": 5, "timeout_ms": "x", "limits": []}]}),
        json!({"steps": [{"id": [], "component": {}, "needs": [1, null, {}], "retry": {"max_attempts": "3", "max_backoff_ms": -1.5}}]}),
        json!({"steps": [{"id": "a", "component": "parse@1", "limits": {"fuel": 1e300, "memory_mb": 1e300}, "timeout_ms": 1e300}]}),
        json!({"steps": [{"id": "a", "component": "@@@"}, {"id": "a", "component": "parse@@1"}]}),
        json!({"steps": [{"id": "a", "component": "parse@1", "input": "${${${}}}$${"}], "output": "${"}),
        json!({"steps": [{"id": "a", "component": "parse@1", "input": "${steps.a.output[18446744073709551616]}"}]}),
        json!({"steps": [{"id": "é", "component": "é@1", "needs": ["é"], "input": "${steps.é.output}"}]}),
        json!({"input_schema": {"$ref": "#/nowhere"}, "steps": [{"id": "a", "component": "parse@1"}]}),
        json!({"input_schema": {"$ref": "https://example.com/x.json"}, "steps": [{"id": "a", "component": "parse@1"}]}),
        json!({"steps": [{"id": "a", "component": "parse@1", "input": {"": {"~": {"/": "${input.}"}}}}]}),
    ];
    for doc in garbage {
        let found = problems(&doc);
        assert!(!found.is_empty(), "{doc} should be invalid");
        assert!(
            found
                .iter()
                .all(|p| p.path.is_empty() || p.path.starts_with('/')),
            "{found:?}"
        );
    }
}

#[test]
fn check_input_against_input_schema() {
    let workflow = validate(&example(), &registry).unwrap().workflow;
    assert!(check_input(&workflow, &json!({"order": {}})).is_empty());
    assert_eq!(
        check_input(&workflow, &json!({})),
        vec![Problem::new("/input", "missing required field \"order\"")]
    );
    assert_eq!(
        check_input(&workflow, &json!([])),
        vec![Problem::new("/input", "expected object, found array")]
    );

    let mut doc = example();
    doc["input_schema"] = json!({
        "type": "object",
        "properties": {"lines": {"type": "array", "items": {"type": "integer"}}, "a/b": {"type": "string"}}
    });
    let workflow = validate(&doc, &registry).unwrap().workflow;
    assert_eq!(
        check_input(&workflow, &json!({"lines": [1, "x", 3, true], "a/b": 1})),
        vec![
            Problem::new("/input/a~1b", "expected string, found integer"),
            Problem::new("/input/lines/1", "expected integer, found string"),
            Problem::new("/input/lines/3", "expected integer, found boolean"),
        ]
    );
}

#[test]
fn check_input_without_schema_accepts_anything() {
    let workflow = validate(
        &doc_with(json!([{"id": "a", "component": "parse@1"}])),
        &registry,
    )
    .unwrap()
    .workflow;
    assert!(check_input(&workflow, &json!(null)).is_empty());
    assert!(check_input(&workflow, &json!({"any": [1, 2]})).is_empty());
}

#[test]
fn check_input_compiles_a_schema_set_after_validation() {
    let mut workflow = validate(
        &doc_with(json!([{"id": "a", "component": "parse@1"}])),
        &registry,
    )
    .unwrap()
    .workflow;
    workflow.input_schema = Some(json!({"type": "string"}));
    assert_eq!(
        check_input(&workflow, &json!(1)),
        vec![Problem::new("/input", "expected string, found integer")]
    );
}

#[test]
fn workflow_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
    assert_send_sync::<Workflow>();
    assert_send_sync::<Validated>();
    assert_send_sync::<Template>();
}

#[test]
fn problem_paths_sort_numerically() {
    let mut found = vec![
        Problem::new("/steps/10", "x"),
        Problem::new("/steps/2/id", "y"),
        Problem::new("/steps/2", "z"),
        Problem::new("/output", "o"),
        Problem::new("/steps/2", "z"),
        Problem::new("", "root"),
    ];
    sort_problems(&mut found);
    let order: Vec<&str> = found.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        order,
        ["", "/output", "/steps/2", "/steps/2/id", "/steps/10"]
    );
}
