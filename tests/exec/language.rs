//! The workflow language, version 2 (ARCHITECTURE.md section 14), through
//! `weft exec`: for_each, when, the dependency rule, on_error and
//! compensation, on the in-memory store (and on Redis with
//! `WEFT_TEST_BACKEND=redis`).

use serde_json::{Value, json};

use crate::common::exec;

/// The most items of `output` (an array of `span` outputs) that ran at once.
fn most_at_once(output: &Value) -> usize {
    let mut edges: Vec<(u64, i32)> = Vec::new();
    for item in output.as_array().expect("an array of item outputs") {
        let start = item["start_us"].as_u64().expect("start_us");
        let end = item["end_us"].as_u64().expect("end_us");
        edges.push((start, 1));
        edges.push((end, -1));
    }
    // At one instant, an end comes before a start: touching is not overlapping.
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    most as usize
}

fn for_each(max_concurrency: u32, ms: u64) -> Value {
    json!({
        "steps": [
            { "id": "each", "component": "span@1",
              "for_each": "${input.list}", "max_concurrency": max_concurrency,
              "input": { "ms": ms, "value": { "item": "${item}", "index": "${index}" } } }
        ],
        "output": "${steps.each.output}"
    })
}

#[test]
fn for_each_runs_every_item_in_order_within_its_window() {
    // (items, max_concurrency, ms each)
    let cases = [
        (0, 10, 0),
        (1, 1, 0),
        (40, 1, 2),
        (60, 10, 20),
        (10_000, 1_000, 0),
    ];
    for (count, max, ms) in cases {
        let list: Vec<Value> = (0..count).map(|i| json!(format!("x{i}"))).collect();
        let out = exec(&for_each(max, ms), &json!({ "list": list }));
        assert_eq!(out.code, 0, "{count} items: {}", out.stderr);
        let run = out.run();
        assert_eq!(run["status"], "succeeded", "{count} items");
        let output = &run["output"];
        let items = output.as_array().expect("an array");
        assert_eq!(items.len(), count);
        for (i, item) in items.iter().enumerate() {
            assert_eq!(
                item["value"],
                json!({ "item": format!("x{i}"), "index": i }),
                "item {i} of {count} out of order"
            );
        }
        let most = most_at_once(output);
        assert!(
            most <= max as usize,
            "{count} items at most {max} at once: {most} ran at once"
        );
        if max == 1 {
            assert!(count == 0 || most == 1);
        }
        if count == 60 {
            assert!(most > 1, "60 items of 20 ms at 10 at once ran one by one");
        }
        let summary = &run["steps"]["each"]["items"];
        assert_eq!(summary["total"], json!(count));
        assert_eq!(summary["counts"]["succeeded"], json!(count));
        assert_eq!(summary["counts"]["pending"], json!(0));
    }
}

#[test]
fn a_failed_item_fails_the_step_unless_it_continues() {
    let workflow = |on_error: &str| {
        json!({
            "steps": [
                { "id": "each", "component": "span@1", "for_each": "${input.list}",
                  "max_concurrency": 2, "on_error": on_error,
                  "input": { "fail": "${item}", "value": "${index}" } },
                { "id": "after", "component": "echo@1.0.0", "input": "${steps.each.output}" }
            ],
            "output": "${steps.after.output}"
        })
    };
    let input = json!({ "list": [false, false, true, false] });

    let out = exec(&workflow("fail"), &input);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let run = out.run();
    assert_eq!(run["status"], "failed");
    let each = &run["steps"]["each"];
    assert_eq!(each["status"], "failed");
    assert_eq!(each["error"]["code"], "span");
    assert!(
        each["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("item 2:"),
        "{each}"
    );
    assert_eq!(each["items"]["failed"][0]["index"], 2);
    assert_eq!(run["steps"]["after"]["status"], "skipped");

    let out = exec(&workflow("continue"), &input);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let run = out.run();
    assert_eq!(run["status"], "succeeded");
    let each = &run["steps"]["each"];
    assert_eq!(each["status"], "succeeded");
    assert_eq!(each["items"]["counts"]["failed"], 1);
    assert_eq!(each["items"]["counts"]["succeeded"], 3);
    assert_eq!(each["items"]["failed"][0]["index"], 2);
    let output = run["output"].as_array().unwrap().clone();
    assert_eq!(output[2], Value::Null, "a continued item's slot is null");
    assert_eq!(output[3]["value"], 3);
}

#[test]
fn each_item_is_retried_by_the_step_retry_policy() {
    let workflow = json!({
        "steps": [
            { "id": "each", "component": "span@1", "for_each": "${input.list}",
              "retry": { "max_attempts": 3, "initial_backoff_ms": 1, "max_backoff_ms": 5 },
              "input": { "fail_until_attempt": "${item}" } }
        ],
        "output": "${steps.each.output}"
    });
    let out = exec(&workflow, &json!({ "list": [1, 3, 2] }));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let attempts: Vec<Value> = out.run()["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["attempt"].clone())
        .collect();
    assert_eq!(attempts, [json!(1), json!(3), json!(2)]);
}

#[test]
fn a_for_each_over_something_else_than_a_list_fails_the_step() {
    let workflow = json!({
        "steps": [{ "id": "each", "component": "echo@1.0.0", "for_each": "${input.list}",
                    "input": "${item}" }]
    });
    let out = exec(&workflow, &json!({ "list": { "not": "a list" } }));
    assert_eq!(out.code, 1, "{}", out.stderr);
    let each = &out.run()["steps"]["each"];
    assert_eq!(each["error"]["code"], "bad_reference");
    assert!(
        each["error"]["message"]
            .as_str()
            .unwrap()
            .contains("an object")
    );
}

fn when(expression: &str) -> Value {
    json!({
        "steps": [
            { "id": "price", "component": "echo@1.0.0", "input": { "total": "${input.total}" } },
            { "id": "review", "component": "echo@1.0.0", "when": expression,
              "input": { "reviewed": "${steps.price.output.total}" } }
        ],
        "output": { "review": "${steps.review.output}", "also": "${steps.review.output.reviewed}" }
    })
}

#[test]
fn when_runs_skips_or_skips_with_the_evaluation_error() {
    let expression = "steps.price.output.total > 1000";
    let out = exec(&when(expression), &json!({ "total": 1500 }));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let run = out.run();
    assert_eq!(run["steps"]["review"]["status"], "succeeded");
    assert_eq!(run["output"]["also"], 1500);

    let out = exec(&when(expression), &json!({ "total": 10 }));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let run = out.run();
    let review = &run["steps"]["review"];
    assert_eq!(review["status"], "skipped");
    assert_eq!(review["attempts"], 0);
    assert!(
        review["reason"].as_str().unwrap().contains("when is false"),
        "{review}"
    );
    // References into a skipped step, and below it, are null.
    assert_eq!(run["output"], json!({ "review": null, "also": null }));

    // `total` is a string: comparing it with a number cannot be evaluated.
    let out = exec(&when(expression), &json!({ "total": "lots" }));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let review = &out.run()["steps"]["review"];
    assert_eq!(review["status"], "skipped");
    assert_eq!(review["error"]["code"], "condition_error");
}

#[test]
fn two_exclusive_branches_and_a_join_that_runs() {
    let workflow = json!({
        "steps": [
            { "id": "check", "component": "echo@1.0.0", "input": { "big": "${input.big}" } },
            { "id": "big", "component": "echo@1.0.0", "when": "steps.check.output.big",
              "input": { "path": "big" } },
            { "id": "small", "component": "echo@1.0.0", "when": "!steps.check.output.big",
              "input": { "path": "small" } },
            { "id": "join", "component": "echo@1.0.0",
              "input": { "big": "${steps.big.output.path}", "small": "${steps.small.output.path}" } }
        ],
        "output": "${steps.join.output}"
    });
    for (big, want) in [
        (true, json!({ "big": "big", "small": null })),
        (false, json!({ "big": null, "small": "small" })),
    ] {
        let out = exec(&workflow, &json!({ "big": big }));
        assert_eq!(out.code, 0, "{}", out.stderr);
        let run = out.run();
        assert_eq!(run["steps"]["join"]["status"], "succeeded");
        assert_eq!(run["output"], want);
        let skipped = if big { "small" } else { "big" };
        assert_eq!(run["steps"][skipped]["status"], "skipped");
    }
}

#[test]
fn a_skip_propagates_through_a_chain_and_the_run_succeeds() {
    let workflow = json!({
        "steps": [
            { "id": "a", "component": "echo@1.0.0", "when": "input.go", "input": 1 },
            { "id": "b", "component": "echo@1.0.0", "input": "${steps.a.output}" },
            { "id": "c", "component": "echo@1.0.0", "needs": ["b"], "input": 3 },
            { "id": "other", "component": "echo@1.0.0", "input": "runs" },
            { "id": "d", "component": "echo@1.0.0", "needs": ["c", "other"],
              "input": { "c": "${steps.c.output}", "other": "${steps.other.output}" } }
        ],
        "output": "${steps.d.output}"
    });
    let out = exec(&workflow, &json!({ "go": false }));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let run = out.run();
    assert_eq!(run["status"], "succeeded");
    for id in ["a", "b", "c"] {
        assert_eq!(run["steps"][id]["status"], "skipped", "{id}");
    }
    assert!(
        run["steps"]["b"]["reason"]
            .as_str()
            .unwrap()
            .contains("every dependency was skipped")
    );
    // One dependency satisfied: `d` runs, reading null for the skipped one.
    assert_eq!(run["steps"]["d"]["status"], "succeeded");
    assert_eq!(run["output"], json!({ "c": null, "other": "runs" }));
}

#[test]
fn a_continued_failure_leaves_the_run_going_and_reads_as_null() {
    let workflow = json!({
        "steps": [
            { "id": "notify", "component": "fail@1.0.0", "on_error": "continue",
              "input": { "code": "smtp_down" } },
            { "id": "after", "component": "echo@1.0.0",
              "input": { "sent": "${steps.notify.output}", "deep": "${steps.notify.output.a.b}" } }
        ],
        "output": "${steps.after.output}"
    });
    let out = exec(&workflow, &json!({}));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let run = out.run();
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["steps"]["notify"]["status"], "failed");
    assert_eq!(run["steps"]["notify"]["error"]["code"], "smtp_down");
    assert_eq!(run["output"], json!({ "sent": null, "deep": null }));
}

/// Five steps in a chain, each with a compensation echoing which it undoes;
/// step `fail_at` (1-based) fails.
fn saga(fail_at: usize, compensation_fails: Option<usize>) -> Value {
    let steps: Vec<Value> = (1..=5)
        .map(|n| {
            let component = if n == fail_at { "fail@1.0.0" } else { "span@1" };
            let input = if n == fail_at { json!({ "code": "declined" }) } else { json!({ "value": n }) };
            let mut step = json!({
                "id": format!("s{n}"), "component": component, "input": input,
                "compensate": {
                    "component": "span@1",
                    "input": { "value": { "undo": n, "of": format!("${{steps.s{n}.output.value}}") } },
                    "retry": { "initial_backoff_ms": 1, "max_backoff_ms": 2 }
                }
            });
            if compensation_fails == Some(n) {
                step["compensate"]["input"]["fail"] = json!(true);
            }
            if n > 1 {
                step["needs"] = json!([format!("s{}", n - 1)]);
            }
            step
        })
        .collect();
    json!({ "steps": steps })
}

#[test]
fn compensations_run_in_reverse_order_of_completion_after_a_failure() {
    let out = exec(&saga(3, None), &json!({}));
    assert_eq!(out.code, 1, "{}", out.stderr);
    let run = out.run();
    assert_eq!(run["status"], "failed");
    assert_eq!(run["error"]["step"], "s3");
    let comp = |id: &str| run["steps"][id]["compensation"].clone();
    let (c1, c2) = (comp("s1"), comp("s2"));
    assert_eq!(c1["status"], "succeeded");
    assert_eq!(c2["status"], "succeeded");
    assert_eq!(c2["output"]["value"], json!({ "undo": 2, "of": 2 }));
    // s2 ended after s1, so it is undone first, and one at a time.
    let ended_2 = c2["output"]["end_us"].as_u64().unwrap();
    let started_1 = c1["output"]["start_us"].as_u64().unwrap();
    assert!(
        ended_2 <= started_1,
        "s1's compensation started before s2's ended"
    );
    for id in ["s3", "s4", "s5"] {
        assert!(
            run["steps"][id].get("compensation").is_none(),
            "{id} did not succeed"
        );
    }
}

#[test]
fn a_failing_compensation_is_retried_and_the_rest_still_run() {
    let out = exec(&saga(3, Some(2)), &json!({}));
    assert_eq!(out.code, 1, "{}", out.stderr);
    let run = out.run();
    assert_eq!(run["status"], "failed");
    let c2 = &run["steps"]["s2"]["compensation"];
    assert_eq!(c2["status"], "failed");
    assert_eq!(c2["attempts"], 3, "three attempts by default");
    assert_eq!(c2["error"]["code"], "span");
    assert_eq!(run["steps"]["s1"]["compensation"]["status"], "succeeded");
}

#[test]
fn a_list_longer_than_steps_per_run_fails_the_step_too_many_items() {
    let workflow = json!({
        "steps": [
            { "id": "each", "component": "noop@1.0.0", "for_each": "${input.list}",
              "max_concurrency": 1000 }
        ]
    });
    // One step of 10,000 items is the default steps_per_run; one more is not.
    let out = exec(&workflow, &json!({ "list": vec![0; 10_001] }));
    assert_eq!(out.code, 1, "{}", out.stderr);
    let each = &out.run()["steps"]["each"];
    assert_eq!(each["status"], "failed");
    assert_eq!(each["error"]["code"], "too_many_items");
    assert_eq!(each["items"]["total"], 0, "nothing was started: {each}");
}

#[test]
fn a_sleep_step_waits_without_a_component_and_its_output_is_null() {
    let doc = json!({
        "steps": [
            { "id": "first", "component": "echo@1", "input": { "at": "${input.past}" } },
            { "id": "nap", "sleep_ms": 400, "needs": ["first"] },
            { "id": "until", "sleep_until": "${steps.first.output.at}" },
            { "id": "after", "component": "echo@1", "input": { "nap": "${steps.nap.output}" },
              "needs": ["until"] }
        ],
        "output": "${steps.after.output}"
    });
    let out = exec(&doc, &json!({ "past": "2020-01-01T00:00:00Z" }));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let run = out.run();
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["output"], json!({ "nap": null }));
    let nap = &run["steps"]["nap"];
    assert_eq!(nap["status"], "succeeded");
    assert!(nap.get("component").is_none(), "{nap}");
    assert!(nap["duration_ms"].as_u64().unwrap() >= 400, "{nap}");
    // A time already passed is due at once.
    assert!(run["steps"]["until"]["duration_ms"].as_u64().unwrap() < 400);

    // A sleep_until that is no time fails the step, and the run with it.
    let out = exec(&doc, &json!({ "past": "someday" }));
    let run = out.run();
    assert_eq!(run["status"], "failed");
    assert_eq!(run["steps"]["until"]["error"]["code"], "invalid_time");

    // A signal step whose signal does not come fails signal_timeout at its
    // timeout; with on_error continue the run goes on.
    let doc = json!({ "steps": [
        { "id": "approval", "signal": "approved", "timeout_ms": 300, "on_error": "continue" },
        { "id": "after", "component": "echo@1", "input": { "approved": "${steps.approval.output}" } }
    ], "output": "${steps.after.output}" });
    let run = exec(&doc, &json!({})).run();
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["output"], json!({ "approved": null }));
    let approval = &run["steps"]["approval"];
    assert_eq!(approval["status"], "failed");
    assert_eq!(approval["error"]["code"], "signal_timeout");
    assert!(
        approval["duration_ms"].as_u64().unwrap() >= 300,
        "{approval}"
    );
}
