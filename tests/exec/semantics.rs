//! Execution semantics of ARCHITECTURE.md sections 4 and 5.

use serde_json::json;

use crate::common::{exec, millis};

#[test]
fn exact_references_keep_json_types_and_strings_interpolate() {
    let workflow = json!({
        "name": "refs",
        "steps": [
            { "id": "first", "component": "echo@1.0.0",
              "input": { "x": [ { "y": { "deep": true } } ], "n": 7 } },
            { "id": "second", "component": "echo@1.0.0", "input": {
                "num": "${input.n}",
                "float": "${input.f}",
                "obj": "${input.o}",
                "arr": "${input.a}",
                "bool": "${input.b}",
                "null": "${input.z}",
                "str": "${input.s}",
                "indexed": "${input.a[1]}",
                "nested": "${input.o.inner[0].k}",
                "from_step": "${steps.first.output.x[0].y}",
                "text": "n=${input.n} s=${input.s} o=${input.o} a=${input.a} b=${input.b} z=${input.z} step=${steps.first.output.n}",
                "escaped": "$${input.n}"
            } }
        ],
        "output": { "all": "${steps.second.output}", "n": "${steps.first.output.n}" }
    });
    let input = json!({
        "n": 42, "f": 1.5, "o": { "inner": [ { "k": "v" } ] }, "a": [1, "two", 3], "b": false, "z": null, "s": "hi"
    });
    let out = exec(&workflow, &input);
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    let run = out.run();
    assert_eq!(run["status"], "succeeded");
    let got = &run["steps"]["second"]["output"];
    assert_eq!(got["num"], json!(42));
    assert_eq!(got["float"], json!(1.5));
    assert_eq!(got["obj"], json!({ "inner": [ { "k": "v" } ] }));
    assert_eq!(got["arr"], json!([1, "two", 3]));
    assert_eq!(got["bool"], json!(false));
    assert_eq!(got["null"], json!(null));
    assert_eq!(got["str"], json!("hi"));
    assert_eq!(got["indexed"], json!("two"));
    assert_eq!(got["nested"], json!("v"));
    assert_eq!(got["from_step"], json!({ "deep": true }));
    assert_eq!(
        got["text"],
        json!(r#"n=42 s=hi o={"inner":[{"k":"v"}]} a=[1,"two",3] b=false z=null step=7"#)
    );
    assert_eq!(got["escaped"], json!("${input.n}"));
    assert_eq!(run["output"]["all"], *got);
    assert_eq!(run["output"]["n"], json!(7));
}

#[test]
fn a_missing_path_fails_the_step_with_bad_reference_naming_it() {
    let workflow = json!({
        "steps": [
            { "id": "a", "component": "echo@1.0.0", "input": { "x": 1 } },
            { "id": "b", "component": "echo@1.0.0", "input": "${steps.a.output.nope[2]}" }
        ]
    });
    let out = exec(&workflow, &json!({}));
    assert_eq!(out.code, 1, "stderr: {}", out.stderr);
    let run = out.run();
    let b = &run["steps"]["b"];
    assert_eq!(b["status"], "failed");
    assert_eq!(b["error"]["code"], "bad_reference");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("steps.a.output.nope[2]"),
        "{b}"
    );
}

#[test]
fn independent_steps_overlap_in_time() {
    let workflow = json!({
        "steps": [
            { "id": "a", "component": "sleep@1.0.0", "input": { "ms": 600 } },
            { "id": "b", "component": "sleep@1.0.0", "input": { "ms": 600 } },
            { "id": "c", "component": "sleep@1.0.0", "input": { "ms": 600 } }
        ]
    });
    let out = exec(&workflow, &json!({}));
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    let run = out.run();
    let window = |id: &str| {
        let s = &run["steps"][id];
        (millis(&s["started_at"]), millis(&s["finished_at"]))
    };
    let (a, b, c) = (window("a"), window("b"), window("c"));
    // Each started before the others finished: they ran at the same time.
    for (x, y) in [(a, b), (a, c), (b, c)] {
        assert!(x.0 < y.1 && y.0 < x.1, "no overlap: {x:?} {y:?}");
    }
}

#[test]
fn dependent_steps_wait_for_their_dependencies() {
    let workflow = json!({
        "steps": [
            { "id": "a", "component": "sleep@1.0.0", "input": { "ms": 200 } },
            { "id": "b", "component": "echo@1.0.0", "needs": ["a"], "input": {} },
            { "id": "c", "component": "echo@1.0.0", "input": "${steps.b.output}" }
        ]
    });
    let run = exec(&workflow, &json!({})).run();
    assert_eq!(run["status"], "succeeded");
    let (a_end, b_start) = (
        millis(&run["steps"]["a"]["finished_at"]),
        millis(&run["steps"]["b"]["started_at"]),
    );
    let (b_end, c_start) = (
        millis(&run["steps"]["b"]["finished_at"]),
        millis(&run["steps"]["c"]["started_at"]),
    );
    assert!(a_end <= b_start && b_end <= c_start, "{run}");
}

#[test]
fn attempts_are_counted_across_retries() {
    let workflow = json!({
        "steps": [
            { "id": "flaky", "component": "fail@1.0.0",
              "input": { "code": "flaky", "retryable": true, "succeed_on_attempt": 3 },
              "retry": { "max_attempts": 5, "initial_backoff_ms": 10, "max_backoff_ms": 40 } }
        ]
    });
    let out = exec(&workflow, &json!({}));
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    let step = &out.run()["steps"]["flaky"];
    assert_eq!(step["status"], "succeeded");
    assert_eq!(step["attempts"], 3);
    assert_eq!(step["output"]["attempt"], 3);
}

#[test]
fn retries_stop_at_max_attempts() {
    let workflow = json!({
        "steps": [
            { "id": "flaky", "component": "fail@1.0.0",
              "input": { "code": "flaky", "retryable": true },
              "retry": { "max_attempts": 3, "initial_backoff_ms": 5, "max_backoff_ms": 20 } }
        ]
    });
    let out = exec(&workflow, &json!({}));
    assert_eq!(out.code, 1);
    let step = &out.run()["steps"]["flaky"];
    assert_eq!(step["status"], "failed");
    assert_eq!(step["attempts"], 3);
    assert_eq!(step["error"]["code"], "flaky");
}

#[test]
fn a_non_retryable_error_stops_at_once() {
    let workflow = json!({
        "steps": [
            { "id": "fatal", "component": "fail@1.0.0",
              "input": { "code": "no_way", "message": "refused", "retryable": false },
              "retry": { "max_attempts": 5, "initial_backoff_ms": 5 } }
        ]
    });
    let out = exec(&workflow, &json!({}));
    assert_eq!(out.code, 1);
    let run = out.run();
    let step = &run["steps"]["fatal"];
    assert_eq!(step["attempts"], 1);
    assert_eq!(
        step["error"],
        json!({ "code": "no_way", "message": "refused", "retryable": false })
    );
    assert_eq!(run["error"]["code"], "no_way");
    assert_eq!(run["error"]["step"], "fatal");
}

#[test]
fn default_is_one_attempt_even_for_retryable_errors() {
    let workflow = json!({
        "steps": [ { "id": "once", "component": "fail@1.0.0", "input": { "retryable": true } } ]
    });
    let out = exec(&workflow, &json!({}));
    assert_eq!(out.code, 1);
    assert_eq!(out.run()["steps"]["once"]["attempts"], 1);
}

#[test]
fn a_failed_step_skips_downstream_and_cancels_running_steps() {
    let workflow = json!({
        "steps": [
            { "id": "boom", "component": "fail@1.0.0", "input": { "code": "boom" } },
            { "id": "after", "component": "echo@1.0.0", "needs": ["boom"], "input": {} },
            { "id": "later", "component": "echo@1.0.0", "input": "${steps.after.output}" },
            { "id": "slow", "component": "sleep@1.0.0", "input": { "ms": 20000 } }
        ]
    });
    let started = std::time::Instant::now();
    let out = exec(&workflow, &json!({}));
    assert_eq!(out.code, 1);
    let run = out.run();
    assert_eq!(run["status"], "failed");
    assert_eq!(run["steps"]["boom"]["status"], "failed");
    assert_eq!(run["steps"]["after"]["status"], "skipped");
    assert_eq!(run["steps"]["later"]["status"], "skipped");
    // The 20 s sleep was stopped, not waited for.
    let slow = run["steps"]["slow"]["status"].as_str().unwrap();
    assert!(slow == "cancelled" || slow == "skipped", "{slow}");
    assert!(
        started.elapsed().as_secs() < 15,
        "the run waited for the sleeping step"
    );
}

#[test]
fn run_output_is_null_without_an_output_template() {
    let workflow =
        json!({ "steps": [ { "id": "a", "component": "echo@1.0.0", "input": [1, 2] } ] });
    let run = exec(&workflow, &json!({})).run();
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["output"], json!(null));
    assert_eq!(run["steps"]["a"]["output"], json!([1, 2]));
    assert!(
        run["steps"]["a"]["digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
}

#[test]
fn example_components_compute() {
    let workflow = json!({
        "steps": [
            { "id": "sum", "component": "math@1", "input": { "op": "sum", "values": "${input.values}" } },
            { "id": "shout", "component": "text@1", "input": { "op": "upper", "text": "${input.name}" } },
            { "id": "logs", "component": "log@1", "input": { "message": "hello" } }
        ],
        "output": { "total": "${steps.sum.output.result}", "name": "${steps.shout.output.text}" }
    });
    let out = exec(&workflow, &json!({ "values": [1, 2, 3.5], "name": "weft" }));
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    let run = out.run();
    assert_eq!(run["output"], json!({ "total": 6.5, "name": "WEFT" }));
    let logs = run["steps"]["logs"]["logs"]
        .as_array()
        .expect("logs recorded");
    assert!(
        logs.iter()
            .any(|l| l["message"].as_str().unwrap().contains("hello")),
        "{logs:?}"
    );
}
