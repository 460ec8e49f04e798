//! `sleep`: waits, then answers; for timeouts, cancellation and concurrency.
//!
//! Input: `{"ms": N, "value"?: any}`.
//! Output: `{"slept_ms": N}`, plus `"value"` copied from the input if given.
//!
//! The wait is `std::thread::sleep`, which reaches the host as a WASI
//! `wasi:clocks/monotonic-clock` subscription polled with `wasi:io/poll`.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use weft_sdk::{StepError, step};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    ms: u64,
    value: Option<Value>,
}

#[derive(Serialize)]
struct Output {
    slept_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<Value>,
}

fn run(input: Input) -> Result<Output, StepError> {
    std::thread::sleep(std::time::Duration::from_millis(input.ms));
    Ok(Output {
        slept_ms: input.ms,
        value: input.value,
    })
}

step!(run);
