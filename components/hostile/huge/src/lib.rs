//! `huge`: succeeds with valid JSON larger than the default output cap.
//!
//! Input: `{"size_kb": N}` (optional, default 2048, i.e. 2 MiB).
//! Output: `{"data": "xxxx..."}` whose string is N KiB long.

use serde::{Deserialize, Serialize};
use weft_sdk::{StepError, step};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    #[serde(default = "default_size_kb")]
    size_kb: usize,
}

fn default_size_kb() -> usize {
    2048
}

#[derive(Serialize)]
struct Output {
    data: String,
}

fn run(input: Input) -> Result<Output, StepError> {
    Ok(Output {
        data: "x".repeat(input.size_kb * 1024),
    })
}

step!(run);
