//! `log`: writes to the step's log; for log capture and its caps.
//!
//! Input (every field optional): `{"message": "hello", "repeat": 1}`.
//! Logs the message through the host at each of the five levels, `repeat`
//! times, then writes one line to stdout and one to stderr.
//! Output: `{"logged": n}`, n being the number of host log calls (5 × repeat).

use serde::{Deserialize, Serialize};
use weft_sdk::log::{self, Level};
use weft_sdk::{StepError, step};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    #[serde(default = "default_message")]
    message: String,
    #[serde(default = "one")]
    repeat: u32,
}

fn default_message() -> String {
    "hello from the log step".to_owned()
}

fn one() -> u32 {
    1
}

#[derive(Serialize)]
struct Output {
    logged: u64,
}

const LEVELS: [Level; 5] = [
    Level::Trace,
    Level::Debug,
    Level::Info,
    Level::Warn,
    Level::Error,
];

fn run(input: Input) -> Result<Output, StepError> {
    let mut logged = 0;
    for _ in 0..input.repeat {
        for level in LEVELS {
            log::log(level, &input.message);
            logged += 1;
        }
    }
    println!("stdout: {}", input.message);
    eprintln!("stderr: {}", input.message);
    Ok(Output { logged })
}

step!(run);
