//! `leak`: reads the secret named by its input and writes it to the host
//! log, stdout, stderr and its output, or (with `"fail": true`) into its
//! error; the host must show `***` instead everywhere.
//!
//! Input: `{"secret": "name", "fail": false}`. Output:
//! `{"value": <the secret>, "found": true, "note": "value=<the secret>"}`.

use serde::Deserialize;
use serde_json::{Value, json};
use weft_sdk::{StepError, log, secret, step};

#[derive(Deserialize)]
struct Input {
    secret: String,
    #[serde(default)]
    fail: bool,
}

fn run(input: Input) -> Result<Value, StepError> {
    let value = secret(&input.secret);
    let shown = value.clone().unwrap_or_default();
    log::info(&format!("the secret is {shown}"));
    println!("stdout: {shown}");
    eprintln!("stderr: {shown}");
    if input.fail {
        return Err(StepError::new("leaked", format!("failing with {shown} in the message")));
    }
    Ok(json!({"value": shown, "found": value.is_some(), "note": format!("value={shown}")}))
}

step!(run);
