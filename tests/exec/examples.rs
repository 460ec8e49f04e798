//! Every workflow in `examples/` runs as its docs say, with its input file.

use serde_json::{Value, json};

use crate::common::exec;

fn example(name: &str) -> (Value, Value) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    let read = |file: String| -> Value {
        let text = std::fs::read_to_string(format!("{dir}/{file}")).unwrap();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
    };
    (
        read(format!("{name}.json")),
        read(format!("{name}-input.json")),
    )
}

#[test]
fn every_example_has_an_input_and_is_tested_here() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|f| {
            f.ends_with(".json") && !f.ends_with("-input.json") && !f.ends_with("-run.json")
        })
        .map(|f| f.trim_end_matches(".json").to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["branch", "continue", "for-each", "orders", "saga", "sleep"]
    );
}

#[test]
fn sleep_waits_then_reminds() {
    let (workflow, input) = example("sleep");
    let out = exec(&workflow, &input);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let run = out.run();
    assert_eq!(run["output"], json!({ "order": "A-17", "reminded": true }));
    assert!(run["steps"]["cool_off"]["duration_ms"].as_u64().unwrap() >= 500);
    assert_eq!(run["steps"]["until"]["status"], "succeeded");
}

#[test]
fn orders_prices_an_order() {
    let (workflow, input) = example("orders");
    let out = exec(&workflow, &input);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.run()["output"]["subtotal"], json!(20.0));
}

#[test]
fn for_each_prices_every_line_in_order() {
    let (workflow, input) = example("for-each");
    let out = exec(&workflow, &input);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let run = out.run();
    assert_eq!(run["output"]["order"], "A-1002");
    let totals: Vec<f64> = run["output"]["line_totals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["result"].as_f64().unwrap())
        .collect();
    assert_eq!(totals, [9.0, 12.0, 60.0]);
    assert_eq!(run["steps"]["lines"]["items"]["counts"]["succeeded"], 3);
}

#[test]
fn branch_takes_the_review_branch_for_a_large_order() {
    let (workflow, input) = example("branch");
    let out = exec(&workflow, &input);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let run = out.run();
    assert_eq!(run["steps"]["approve"]["status"], "skipped");
    assert_eq!(
        run["output"],
        json!({ "review": "manual review", "approve": null })
    );
    let small = exec(&workflow, &json!({ "prices": [5, 10] }));
    assert_eq!(
        small.run()["output"],
        json!({ "review": null, "approve": "approved" })
    );
}

#[test]
fn continue_sends_the_receipt_though_the_mail_failed() {
    let (workflow, input) = example("continue");
    let out = exec(&workflow, &input);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let run = out.run();
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["steps"]["mail"]["status"], "failed");
    assert_eq!(run["output"], json!({ "order": "A-1001", "mailed": null }));
}

#[test]
fn saga_cancels_the_flight_then_the_hotel() {
    let (workflow, input) = example("saga");
    let out = exec(&workflow, &input);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let run = out.run();
    assert_eq!(run["status"], "failed");
    assert_eq!(run["error"]["step"], "car");
    let hotel = &run["steps"]["hotel"]["compensation"];
    let flight = &run["steps"]["flight"]["compensation"];
    assert_eq!(hotel["output"], json!({ "cancelled": "H-42" }));
    assert_eq!(flight["output"], json!({ "cancelled": "F-42" }));
    assert!(
        flight["finished_at"].as_str().unwrap() <= hotel["started_at"].as_str().unwrap(),
        "the flight, booked last, is cancelled first"
    );
}
