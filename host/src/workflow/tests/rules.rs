//! One test per validation rule, each asserting the exact pointer of its problem.

use std::cell::RefCell;

use serde_json::json;

use super::*;

#[test]
fn schema_problems_have_pointers_and_readable_messages() {
    let cases: Vec<(Value, &str, &str)> = vec![
        (json!({}), "", "missing required field \"steps\""),
        (json!([]), "", "expected object, found array"),
        (json!({"steps": []}), "/steps", "must not be empty"),
        (
            json!({"steps": {}}),
            "/steps",
            "expected array, found object",
        ),
        (
            json!({"steps": [5]}),
            "/steps/0",
            "expected object, found integer",
        ),
        (
            json!({"steps": [{"id": "a"}]}),
            "/steps/0",
            "a step needs one of component, workflow, sleep_ms, sleep_until and signal",
        ),
        (
            json!({"name": 5, "steps": [{"id": "a", "component": "parse@1"}]}),
            "/name",
            "expected string, found integer",
        ),
        (
            json!({"stpes": [], "steps": [{"id": "a", "component": "parse@1"}]}),
            "/stpes",
            "unknown field \"stpes\" (expected one of: name, description, input_schema, steps, output)",
        ),
        (
            json!({"steps": [{"id": "a", "component": "parse@1", "inptu": {}}]}),
            "/steps/0/inptu",
            "unknown field \"inptu\" (expected one of: id, component, sleep_ms, sleep_until, workflow, signal, input, needs, retry, timeout_ms, limits, for_each, max_concurrency, when, on_error, http, concurrency, rate_limit, queue, secrets, compensate)",
        ),
        (
            json!({"steps": [{"id": "a", "component": "parse@1", "retry": {"attempts": 3}}]}),
            "/steps/0/retry/attempts",
            "unknown field \"attempts\" (expected one of: max_attempts, initial_backoff_ms, max_backoff_ms)",
        ),
        (
            json!({"steps": [{"id": "a", "component": "parse@1", "limits": {"memory": 3}}]}),
            "/steps/0/limits/memory",
            "unknown field \"memory\" (expected one of: fuel, memory_mb)",
        ),
        (
            json!({"steps": [{"id": "a", "component": "parse@1", "needs": ["b", "b"]}, {"id": "b", "component": "parse@1"}]}),
            "/steps/0/needs",
            "\"b\" is listed more than once",
        ),
        (
            json!({"steps": [{"id": "a", "component": "parse@1", "needs": "b"}]}),
            "/steps/0/needs",
            "expected array, found string",
        ),
        (
            json!({"steps": [{"id": "a", "component": "parse@1", "timeout_ms": 0}]}),
            "/steps/0/timeout_ms",
            "0 is less than the minimum of 1",
        ),
        (
            json!({"steps": [{"id": "a", "component": "parse@1", "timeout_ms": 86_400_001}]}),
            "/steps/0/timeout_ms",
            "86400001 is more than a step that runs a component may take (86400000 ms, a day)",
        ),
        (
            json!({"steps": [{"id": "a", "component": "parse@1", "timeout_ms": 1.5}]}),
            "/steps/0/timeout_ms",
            "expected integer, found number",
        ),
        (
            json!({"steps": [{"id": "a", "component": "parse@1", "retry": {"max_attempts": 101}}]}),
            "/steps/0/retry/max_attempts",
            "101 is greater than the maximum of 100",
        ),
        (
            json!({"steps": [{"id": "a", "component": "parse@1", "retry": {"initial_backoff_ms": -1}}]}),
            "/steps/0/retry/initial_backoff_ms",
            "-1 is less than the minimum of 0",
        ),
        (
            json!({"steps": [{"id": "a", "component": "parse@1", "limits": {"fuel": 0}}]}),
            "/steps/0/limits/fuel",
            "0 is less than the minimum of 1",
        ),
        (
            json!({"steps": [{"id": "a", "component": "parse@1", "limits": {"memory_mb": 4097}}]}),
            "/steps/0/limits/memory_mb",
            "4097 is greater than the maximum of 4096",
        ),
        (
            json!({"input_schema": "x", "steps": [{"id": "a", "component": "parse@1"}]}),
            "/input_schema",
            "expected boolean or object, found string",
        ),
    ];
    for (doc, path, message) in cases {
        assert_eq!(only_problem(&doc), Problem::new(path, message), "{doc}");
    }
}

#[test]
fn id_and_component_shape() {
    let p = only_problem(&doc_with(json!([{"id": "Parse", "component": "parse@1"}])));
    assert_eq!(p.path, "/steps/0/id");
    assert!(
        p.message
            .starts_with("invalid step id \"Parse\": a lowercase letter"),
        "{}",
        p.message
    );
    let long = "a".repeat(64);
    assert_eq!(
        only_problem(&doc_with(json!([{"id": long, "component": "parse@1"}]))).path,
        "/steps/0/id"
    );
    for bad in ["parse", "Parse@1", "parse@", "@1", "pa rse@1"] {
        let p = only_problem(&doc_with(json!([{"id": "a", "component": bad}])));
        assert_eq!(p.path, "/steps/0/component", "{bad}");
        assert!(
            p.message.starts_with("invalid component reference"),
            "{bad}: {}",
            p.message
        );
    }
}

#[test]
fn unparsable_requirement() {
    let p = only_problem(&doc_with(json!([{"id": "a", "component": "parse@^x.y"}])));
    assert_eq!(p.path, "/steps/0/component");
    assert!(
        p.message
            .starts_with("invalid version requirement \"^x.y\""),
        "{}",
        p.message
    );
}

#[test]
fn duplicate_ids_reported_at_each_later_duplicate() {
    let doc = doc_with(json!([
        {"id": "a", "component": "parse@1"},
        {"id": "b", "component": "parse@1"},
        {"id": "a", "component": "parse@1"},
        {"id": "a", "component": "parse@1"},
    ]));
    assert_eq!(
        problems(&doc),
        vec![
            Problem::new(
                "/steps/2/id",
                "duplicate step id \"a\": already used by /steps/0"
            ),
            Problem::new(
                "/steps/3/id",
                "duplicate step id \"a\": already used by /steps/0"
            ),
        ]
    );
}

#[test]
fn unknown_steps_in_needs_and_references() {
    let mut doc = example();
    doc["steps"][2]["needs"] = json!(["price", "prcie"]);
    doc["steps"][1]["input"]["lines"] = json!("${steps.parsee.output.lines}");
    doc["output"]["total"] = json!("sum: ${steps.ghost.output.total}");
    assert_eq!(
        problems(&doc),
        vec![
            Problem::new(
                "/output/total",
                "unknown step \"ghost\" in reference ${steps.ghost.output.total}"
            ),
            Problem::new(
                "/steps/1/input/lines",
                "unknown step \"parsee\" in reference ${steps.parsee.output.lines}"
            ),
            Problem::new("/steps/2/needs/1", "unknown step \"prcie\""),
        ]
    );
}

#[test]
fn malformed_references_at_string_pointer_with_escaped_keys() {
    let doc = doc_with(json!([
        {"id": "a", "component": "parse@1", "input": {"a/b": {"c~d": ["x", "${input.}"]}, "e": "${foo}"}},
    ]));
    assert_eq!(
        paths(&doc),
        ["/steps/0/input/a~1b/c~0d/1", "/steps/0/input/e"]
    );
}

#[test]
fn cycles_are_named_once_each() {
    let doc = doc_with(json!([
        {"id": "a", "component": "parse@1", "needs": ["c"]},
        {"id": "b", "component": "parse@1", "input": "${steps.a.output}"},
        {"id": "c", "component": "parse@1", "input": {"x": "${steps.b.output.x}"}},
        {"id": "d", "component": "parse@1", "input": "${steps.d.output}"},
        {"id": "e", "component": "parse@1", "needs": ["e", "a"]},
        {"id": "f", "component": "parse@1", "needs": ["a"]},
    ]));
    assert_eq!(
        problems(&doc),
        vec![
            Problem::new("/steps/0", "cycle: a -> c -> b -> a"),
            Problem::new("/steps/3", "cycle: d -> d"),
            Problem::new("/steps/4", "cycle: e -> e"),
        ]
    );
}

#[test]
fn resolver_errors_at_component() {
    let doc = doc_with(json!([
        {"id": "a", "component": "nope@1"},
        {"id": "b", "component": "price@^3"},
        {"id": "c", "component": "price@1.2"},
    ]));
    assert_eq!(
        problems(&doc),
        vec![
            Problem::new("/steps/0/component", "unknown component \"nope\""),
            Problem::new(
                "/steps/1/component",
                "no version of \"price\" matches ^3 (available: 1.0.0, 1.2.5, 2.1.0)"
            ),
        ]
    );
}

#[test]
fn resolver_called_once_per_reference_and_never_for_malformed_ones() {
    let calls = RefCell::new(Vec::new());
    let resolver = |name: &str, req: &VersionReq| {
        calls.borrow_mut().push(format!("{name}@{req}"));
        Ok(format!("sha256:{name}"))
    };
    let doc = doc_with(json!([
        {"id": "a", "component": "parse@1"},
        {"id": "b", "component": "parse@1"},
        {"id": "c", "component": "parse@~0"},
        {"id": "d", "component": "Parse@1"},
        {"id": "e", "component": "parse@!!"},
    ]));
    assert_eq!(validate(&doc, &resolver).unwrap_err().len(), 2);
    assert_eq!(*calls.borrow(), ["parse@^1", "parse@~0"]);
}

#[test]
fn input_schema_must_compile() {
    let mut doc = example();
    doc["input_schema"] = json!({"type": "objekt"});
    let p = only_problem(&doc);
    assert_eq!(p.path, "/input_schema");
    assert!(
        p.message.starts_with("not a valid JSON Schema"),
        "{}",
        p.message
    );
    doc["input_schema"] = json!(false);
    assert!(problems(&doc).is_empty());
}

#[test]
fn backoff_bounds() {
    let retry = |r: Value| doc_with(json!([{"id": "a", "component": "parse@1", "retry": r}]));
    assert_eq!(
        only_problem(&retry(
            json!({"initial_backoff_ms": 500, "max_backoff_ms": 499})
        )),
        Problem::new(
            "/steps/0/retry/max_backoff_ms",
            "max_backoff_ms (499) is less than initial_backoff_ms (500)"
        )
    );
    let policy = |r: Value| validate(&retry(r), &registry).unwrap().workflow.steps[0].retry;
    assert_eq!(
        policy(json!({"initial_backoff_ms": 20_000})).max_backoff_ms,
        20_000
    );
    assert_eq!(policy(json!({"max_backoff_ms": 50})).initial_backoff_ms, 50);
    assert_eq!(
        policy(json!({"max_attempts": 3})),
        RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        }
    );
    assert_eq!(policy(json!({"max_attempts": 3.0})).max_attempts, 3);
    // Backoffs are capped at one day, so that a due time can never overflow.
    let problems = validate(&retry(json!({"max_backoff_ms": 1e20})), &registry).unwrap_err();
    assert!(
        problems
            .iter()
            .all(|p| p.path == "/steps/0/retry/max_backoff_ms"),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.message.contains("maximum of 86400000")),
        "{problems:?}"
    );
    let p = only_problem(&retry(json!({"initial_backoff_ms": 86_400_001})));
    assert_eq!(p.path, "/steps/0/retry/initial_backoff_ms");
}

#[test]
fn every_problem_at_once_sorted_by_path() {
    let mut steps: Vec<Value> = (0..11)
        .map(|i| json!({"id": format!("s{i}"), "component": "parse@1"}))
        .collect();
    steps[10]["needs"] = json!(["missing"]);
    steps[2]["timeout_ms"] = json!(-5);
    steps[1]["id"] = json!("s0");
    steps[3]["component"] = json!("nope@1");
    steps[4]["input"] = json!("${steps.s5.output}");
    steps[5]["input"] = json!("${steps.s4.output}");
    steps[6]["retry"] = json!({"initial_backoff_ms": 10, "max_backoff_ms": 5});
    let doc = json!({
        "nam": "x",
        "input_schema": {"type": 1},
        "steps": steps,
        "output": "${steps.s9.output} ${bad}",
    });
    assert_eq!(
        paths(&doc),
        [
            "/input_schema",
            "/nam",
            "/output",
            "/steps/1/id",
            "/steps/2/timeout_ms",
            "/steps/3/component",
            "/steps/4",
            "/steps/6/retry/max_backoff_ms",
            "/steps/10/needs/0",
        ]
    );
}

#[test]
fn steps_that_wait_have_no_component_and_take_only_wait_fields() {
    let doc = doc_with(json!([
        { "id": "parse", "component": "parse@1" },
        { "id": "cool", "sleep_ms": 3_600_000u64, "needs": ["parse"] },
        { "id": "until", "sleep_until": "${steps.parse.output.at}" },
        { "id": "fixed", "sleep_until": "2026-12-24T18:00:00+01:00" },
        { "id": "approval", "signal": "approved", "timeout_ms": 604_800_000u64, "on_error": "continue" }
    ]));
    let v = validate(&doc, &registry).unwrap();
    let steps = &v.workflow.steps;
    assert!(matches!(
        steps[1].action,
        Action::Sleep(Sleep::For(3_600_000))
    ));
    assert_eq!(
        steps[2].deps,
        [0],
        "sleep_until's reference is a dependency"
    );
    assert_eq!(steps[4].signal(), Some("approved"));
    assert_eq!(steps[4].timeout_ms, Some(604_800_000));
    assert!(
        steps
            .iter()
            .skip(1)
            .all(|s| s.waits() && s.component().is_none())
    );
    // A step that waits runs no component: its pin is empty, and the pins stay in step order.
    assert_eq!(v.pins, ["parse@1.0.0", "", "", "", ""]);

    let cases: Vec<(Value, &str)> = vec![
        (
            json!({ "id": "a", "component": "parse@1", "sleep_ms": 5 }),
            "/steps/0/sleep_ms",
        ),
        (
            json!({ "id": "a", "sleep_ms": 5, "signal": "go" }),
            "/steps/0/signal",
        ),
        (
            json!({ "id": "a", "sleep_ms": 5, "retry": { "max_attempts": 2 } }),
            "/steps/0/retry",
        ),
        (
            json!({ "id": "a", "signal": "go", "input": {} }),
            "/steps/0/input",
        ),
        (
            json!({ "id": "a", "sleep_ms": 5, "timeout_ms": 5 }),
            "/steps/0/timeout_ms",
        ),
        (
            json!({ "id": "a", "sleep_until": "tomorrow" }),
            "/steps/0/sleep_until",
        ),
        (
            json!({ "id": "a", "sleep_ms": 31_536_000_001u64 }),
            "/steps/0/sleep_ms",
        ),
        (
            json!({ "id": "a", "signal": "no spaces" }),
            "/steps/0/signal",
        ),
        (
            json!({ "id": "a", "component": "parse@1", "timeout_ms": 86_400_001u64 }),
            "/steps/0/timeout_ms",
        ),
    ];
    for (step, path) in cases {
        let problem = only_problem(&doc_with(json!([step])));
        assert_eq!(problem.path, path, "{step}: {problem:?}");
    }
}
