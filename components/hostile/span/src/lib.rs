//! `span`: waits, then reports the wall-clock interval it ran in, so that a
//! test can count how many attempts ran at once (for_each windows).
//!
//! Input: `{"ms": N, "value"?: any, "fail"?: bool, "fail_until_attempt"?: N}`.
//! Output: `{"start_us": t, "end_us": t, "value"?: any, "attempt": n}`:
//! microseconds since the Unix epoch around the wait. With `fail`, or while
//! the attempt is below `fail_until_attempt`, it fails with code `span`
//! (retryable) after the wait instead.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use weft_sdk::{StepError, step};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    #[serde(default)]
    ms: u64,
    value: Option<Value>,
    #[serde(default)]
    fail: bool,
    fail_until_attempt: Option<u32>,
}

#[derive(Serialize)]
struct Output {
    start_us: u64,
    end_us: u64,
    attempt: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<Value>,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn run(input: Input) -> Result<Output, StepError> {
    let start_us = now_us();
    std::thread::sleep(Duration::from_millis(input.ms));
    let attempt = weft_sdk::invocation().attempt;
    if input.fail || input.fail_until_attempt.is_some_and(|n| attempt < n) {
        return Err(StepError::new("span", format!("failed on purpose (attempt {attempt})"))
            .with_retryable(true));
    }
    Ok(Output {
        start_us,
        end_us: now_us(),
        attempt,
        value: input.value,
    })
}

step!(run);
