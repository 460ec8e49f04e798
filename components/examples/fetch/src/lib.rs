//! `fetch`: calls an HTTP endpoint and returns its answer.
//!
//! Input: `{"url": "https://api.example.com/v1/x", "method": "GET",
//! "body": {...}, "secret": "api_token", "repeat": 1}`; only `url` is
//! required. When the step lists the secret named by `secret` (default
//! `api_token`), it is sent as `Authorization: Bearer <value>`. `body`, if
//! any, is sent as JSON. The request is sent `repeat` times (the last
//! answer is returned). Redirects are followed.
//!
//! Output: `{"status": 200, "url": "...", "body": <JSON, or the text when
//! the body is not JSON>}`. A status of 400 or more fails the step with
//! `http_status` (retryable for 5xx); a denied or failed request with
//! `http_error`.
//!
//! The document must allow the host: `"http": {"allow": ["api.example.com"]}`,
//! and the tenant's `allowed_hosts` must name it too.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use weft_sdk::http::Request;
use weft_sdk::{StepError, log, secret, step};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    url: String,
    #[serde(default = "get")]
    method: String,
    #[serde(default)]
    body: Option<Value>,
    #[serde(default = "api_token")]
    secret: String,
    #[serde(default = "one")]
    repeat: u32,
}

fn get() -> String {
    "GET".into()
}

fn api_token() -> String {
    "api_token".into()
}

fn one() -> u32 {
    1
}

#[derive(Serialize)]
struct Output {
    status: u16,
    url: String,
    body: Value,
}

fn run(input: Input) -> Result<Output, StepError> {
    let mut request = Request::new(&input.method, &input.url);
    if let Some(token) = secret(&input.secret) {
        request = request.header("authorization", &format!("Bearer {token}"));
    }
    if let Some(body) = &input.body {
        request = request.json(body);
    }
    log::info(&format!("{} {}", input.method, input.url.split('?').next().unwrap_or("")));
    let mut response = None;
    for _ in 0..input.repeat.max(1) {
        response = Some(request.clone().send()?);
    }
    let response = response.expect("sent at least once");
    if response.status >= 400 {
        return Err(StepError::new(
            "http_status",
            format!("{} answered {}: {}", response.url, response.status, excerpt(&response.text())),
        )
        .with_retryable(response.status >= 500));
    }
    let body = serde_json::from_slice(&response.body).unwrap_or_else(|_| Value::String(response.text()));
    Ok(Output {
        status: response.status,
        url: response.url,
        body,
    })
}

fn excerpt(text: &str) -> String {
    text.chars().take(200).collect()
}

step!(run);
