//! `echo`: returns its input unchanged.
//!
//! Input: any JSON value. Output: the same value (object keys keep their order).

use serde_json::Value;
use weft_sdk::{StepError, step};

fn run(input: Value) -> Result<Value, StepError> {
    Ok(input)
}

step!(run);
