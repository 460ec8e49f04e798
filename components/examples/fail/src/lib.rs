//! `fail`: fails on demand; for retries and failure handling.
//!
//! Input (every field optional):
//! `{"code": "fail", "message": "...", "retryable": false, "succeed_on_attempt": N}`.
//!
//! If `succeed_on_attempt` is given and the current attempt (starting at 1)
//! is at least N, the step succeeds with `{"attempt": attempt}`. Otherwise it
//! fails with a step error carrying `code`, `message` and `retryable`.

use serde::{Deserialize, Serialize};
use weft_sdk::{StepError, step};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    #[serde(default = "default_code")]
    code: String,
    message: Option<String>,
    #[serde(default)]
    retryable: bool,
    succeed_on_attempt: Option<u32>,
}

fn default_code() -> String {
    "fail".to_owned()
}

#[derive(Serialize)]
struct Output {
    attempt: u32,
}

fn run(input: Input) -> Result<Output, StepError> {
    let attempt = weft_sdk::invocation().attempt;
    if input.succeed_on_attempt.is_some_and(|n| attempt >= n) {
        return Ok(Output { attempt });
    }
    let message = input
        .message
        .unwrap_or_else(|| format!("failed on purpose (attempt {attempt})"));
    Err(StepError::new(input.code, message).with_retryable(input.retryable))
}

step!(run);

#[cfg(test)]
mod tests {
    use super::*;

    fn input(json: &str) -> Input {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn fails_with_the_given_error_or_defaults() {
        let err = run(input(
            r#"{"code": "boom", "message": "m", "retryable": true}"#,
        ))
        .err();
        let err = err.unwrap();
        assert_eq!(
            (err.code.as_str(), err.message.as_str(), err.retryable),
            ("boom", "m", true)
        );
        let err = run(input("{}")).err().unwrap();
        assert_eq!((err.code.as_str(), err.retryable), ("fail", false));
    }

    #[test]
    fn succeeds_from_the_given_attempt() {
        // Natively the SDK reports attempt 1.
        assert_eq!(
            run(input(r#"{"succeed_on_attempt": 1}"#))
                .ok()
                .unwrap()
                .attempt,
            1
        );
        assert!(run(input(r#"{"succeed_on_attempt": 2}"#)).is_err());
    }
}
