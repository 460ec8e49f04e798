//! Unit tests of the JSON glue; they run natively (`cargo test -p weft-sdk`).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::__private::{call_json, call_raw, run_json};
use crate::StepError;

#[derive(Deserialize)]
struct Order {
    lines: Vec<f64>,
}

#[derive(Serialize)]
struct Priced {
    total: f64,
}

fn price(order: Order) -> Result<Priced, StepError> {
    Ok(Priced {
        total: order.lines.iter().sum(),
    })
}

#[test]
fn typed_input_and_output_round_trip() {
    let out = run_json(r#"{"lines": [1.5, 2]}"#, price).unwrap();
    assert_eq!(out, r#"{"total":3.5}"#);
}

#[test]
fn input_that_does_not_fit_is_bad_input_with_position() {
    let err = run_json(r#"{"lines": "no"}"#, price).unwrap_err();
    assert_eq!(err.code, StepError::BAD_INPUT);
    assert!(!err.retryable);
    assert!(err.message.contains("invalid type"), "{}", err.message);
    assert!(err.message.contains("line 1 column"), "{}", err.message);

    let err = run_json("{}", price).unwrap_err();
    assert!(
        err.message.contains("missing field `lines`"),
        "{}",
        err.message
    );

    let err = run_json("not json", price).unwrap_err();
    assert_eq!(err.code, StepError::BAD_INPUT);
}

#[test]
fn value_works_on_both_sides() {
    let out = run_json("[1,{\"a\":null}]", |v: Value| Ok::<_, StepError>(v)).unwrap();
    assert_eq!(out, "[1,{\"a\":null}]");
}

#[test]
fn output_that_cannot_serialise_is_bad_output() {
    let mut map = std::collections::HashMap::new();
    map.insert(vec![1u8], 1);
    let err = run_json("null", |_: Value| Ok::<_, StepError>(map.clone())).unwrap_err();
    assert_eq!(err.code, StepError::BAD_OUTPUT);
    assert!(!err.retryable);
}

#[test]
fn step_errors_pass_through_unchanged() {
    let fail =
        |_: Value| -> Result<Value, StepError> { Err(StepError::retryable("busy", "later")) };
    let err = call_json("{}".into(), fail).unwrap_err();
    assert_eq!(
        (err.code.as_str(), err.message.as_str(), err.retryable),
        ("busy", "later", true)
    );
}

#[test]
fn other_error_types_convert_through_into() {
    let parse = |v: Value| -> Result<Order, serde_json::Error> { serde_json::from_value(v) };
    let err = run_json(r#"{"x": 1}"#, |v: Value| parse(v).map(|o| o.lines.len())).unwrap_err();
    assert_eq!(err.code, StepError::BAD_INPUT);
}

#[test]
fn raw_steps_see_and_return_exact_strings() {
    let out = call_raw("  {\"b\":1, \"a\":2} ".into(), Ok::<_, StepError>).unwrap();
    assert_eq!(out, "  {\"b\":1, \"a\":2} ");
    let err = call_raw("x".into(), |_| {
        Err::<String, _>(StepError::new("no", "nope"))
    })
    .unwrap_err();
    assert!(!err.retryable);
}

#[test]
fn constructors_set_retryable() {
    assert!(!StepError::new("a", "b").retryable);
    assert!(StepError::retryable("a", "b").is_retryable());
    assert!(
        !StepError::retryable("a", "b")
            .with_retryable(false)
            .retryable
    );
    assert_eq!(StepError::new("a", "b").to_string(), "a: b");
    assert_eq!(json!(StepError::bad_input("x").code()), json!("bad_input"));
}

#[test]
fn native_host_fallbacks_do_not_panic() {
    assert_eq!(crate::invocation().attempt, 1);
    crate::info!("value {}", 1);
    crate::log::error("done");
}
