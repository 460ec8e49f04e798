//! `noop`: the cheapest possible step, for benchmarks.
//!
//! Input: anything (not even parsed). Output: `{}`.

use weft_sdk::{StepError, raw_step};

fn run(_input: String) -> Result<String, StepError> {
    Ok("{}".to_owned())
}

raw_step!(run);
