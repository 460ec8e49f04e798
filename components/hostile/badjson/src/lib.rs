//! `badjson`: succeeds with output that is not JSON.
//!
//! Input: ignored. Output: the string `this is not json {`, which the host
//! must reject (`invalid_output`).

use weft_sdk::{StepError, raw_step};

fn run(_input: String) -> Result<String, StepError> {
    Ok("this is not json {".to_owned())
}

raw_step!(run);
