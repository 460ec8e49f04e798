//! `math`: arithmetic and aggregates over JSON numbers.
//!
//! Input, one of:
//! - `{"op": "sum"|"product"|"min"|"max"|"avg"|"count", "values": [numbers]}`
//! - `{"op": "add"|"sub"|"mul"|"div"|"rem"|"pow", "a": number, "b": number}`
//!
//! Output: `{"result": number}`. Integers stay integers while the exact
//! result is one (`sum` of integers, `div` of 6 by 3, `avg` of 2 and 4);
//! otherwise the result is a float.
//!
//! Errors (none retryable): `division_by_zero` for `div` or `rem` by 0;
//! `overflow` when the result is too large for a float; `undefined` when it
//! is not a number (e.g. `pow` of -8 and 0.5); `bad_input` for an unknown
//! op, a missing operand, or `min`/`max`/`avg` of no values.

mod num;

use serde::{Deserialize, Serialize};
use weft_sdk::{StepError, step};

use num::Num;

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
enum Input {
    Sum { values: Vec<Num> },
    Product { values: Vec<Num> },
    Min { values: Vec<Num> },
    Max { values: Vec<Num> },
    Avg { values: Vec<Num> },
    Count { values: Vec<Num> },
    Add { a: Num, b: Num },
    Sub { a: Num, b: Num },
    Mul { a: Num, b: Num },
    Div { a: Num, b: Num },
    Rem { a: Num, b: Num },
    Pow { a: Num, b: Num },
}

#[derive(Serialize)]
struct Output {
    result: Num,
}

fn run(input: Input) -> Result<Output, StepError> {
    let result = match input {
        Input::Sum { values } => values.into_iter().try_fold(Num::Int(0), Num::add)?,
        Input::Product { values } => values.into_iter().try_fold(Num::Int(1), Num::mul)?,
        Input::Min { values } => extreme(values, "min", |a, b| b.as_f64() < a.as_f64())?,
        Input::Max { values } => extreme(values, "max", |a, b| b.as_f64() > a.as_f64())?,
        Input::Avg { values } => {
            let count = Num::Int(values.len() as i64);
            if values.is_empty() {
                return Err(StepError::bad_input("avg needs at least one value"));
            }
            values
                .into_iter()
                .try_fold(Num::Int(0), Num::add)?
                .div(count)?
        }
        Input::Count { values } => Num::Int(values.len() as i64),
        Input::Add { a, b } => a.add(b)?,
        Input::Sub { a, b } => a.sub(b)?,
        Input::Mul { a, b } => a.mul(b)?,
        Input::Div { a, b } => a.div(b)?,
        Input::Rem { a, b } => a.rem(b)?,
        Input::Pow { a, b } => a.pow(b)?,
    };
    Ok(Output { result })
}

/// The value that `better` prefers over every other one; the first on ties.
fn extreme(values: Vec<Num>, op: &str, better: fn(Num, Num) -> bool) -> Result<Num, StepError> {
    values
        .into_iter()
        .reduce(|best, next| if better(best, next) { next } else { best })
        .ok_or_else(|| StepError::bad_input(format!("{op} needs at least one value")))
}

step!(run);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn calc(input: Value) -> Result<Value, StepError> {
        let output = run(serde_json::from_value(input).unwrap())?;
        Ok(serde_json::to_value(output).unwrap()["result"].clone())
    }

    #[test]
    fn aggregates_keep_integers() {
        assert_eq!(
            calc(json!({"op": "sum", "values": [1, 2, 3]})).unwrap(),
            json!(6)
        );
        assert_eq!(
            calc(json!({"op": "sum", "values": [1, 2.5]})).unwrap(),
            json!(3.5)
        );
        assert_eq!(
            calc(json!({"op": "product", "values": []})).unwrap(),
            json!(1)
        );
        assert_eq!(
            calc(json!({"op": "min", "values": [3, 1.5, 2]})).unwrap(),
            json!(1.5)
        );
        assert_eq!(
            calc(json!({"op": "max", "values": [3, 1.5, 2]})).unwrap(),
            json!(3)
        );
        assert_eq!(
            calc(json!({"op": "avg", "values": [2, 4]})).unwrap(),
            json!(3)
        );
        assert_eq!(
            calc(json!({"op": "avg", "values": [1, 2]})).unwrap(),
            json!(1.5)
        );
        assert_eq!(
            calc(json!({"op": "count", "values": [1, 2]})).unwrap(),
            json!(2)
        );
        assert_eq!(
            calc(json!({"op": "min", "values": []})).unwrap_err().code,
            "bad_input"
        );
    }

    #[test]
    fn binary_ops() {
        assert_eq!(
            calc(json!({"op": "div", "a": 6, "b": 3})).unwrap(),
            json!(2)
        );
        assert_eq!(
            calc(json!({"op": "div", "a": 7, "b": 2})).unwrap(),
            json!(3.5)
        );
        assert_eq!(
            calc(json!({"op": "sub", "a": 1, "b": 3})).unwrap(),
            json!(-2)
        );
        assert_eq!(
            calc(json!({"op": "pow", "a": 2, "b": 10})).unwrap(),
            json!(1024)
        );
        assert_eq!(
            calc(json!({"op": "pow", "a": 4, "b": 0.5})).unwrap(),
            json!(2.0)
        );
        assert_eq!(
            calc(json!({"op": "rem", "a": 7, "b": 4})).unwrap(),
            json!(3)
        );
        let err = calc(json!({"op": "div", "a": 1, "b": 0})).unwrap_err();
        assert_eq!(
            (err.code.as_str(), err.retryable),
            ("division_by_zero", false)
        );
        let big = json!({"op": "mul", "a": i64::MAX, "b": 2});
        assert_eq!(calc(big).unwrap(), json!(i64::MAX as f64 * 2.0));
        let err = calc(json!({"op": "pow", "a": 10, "b": 400})).unwrap_err();
        assert_eq!(err.code, "overflow");
    }
}
