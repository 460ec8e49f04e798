//! One step attempt: a fresh store with limits, instantiate, call `run`, and turn
//! whatever happened into output or a failure with a host error code.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use wasmtime::{Store, Trap, UpdateDeadline};

use super::host::{Grants, LogLine, StepHost};
use super::{Engine, Linked, Pre};
use crate::bindings;

/// Who is running: passed to the guest through `current-invocation`.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub tenant: String,
    pub run_id: String,
    pub step_id: String,
    pub attempt: u32,
}

/// The resources one attempt may use.
#[derive(Debug, Clone, Copy)]
pub struct StepLimits {
    pub fuel: u64,
    pub memory_bytes: usize,
    pub timeout: Duration,
    pub output_bytes: usize,
}

/// Why an attempt failed: a host error code or the component's own.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Failure {
    pub code: String,
    pub message: String,
    pub retryable: bool,
}

impl Failure {
    /// A failure detected by the host; host codes are retryable unless said otherwise.
    pub fn host(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_string(),
            message: message.into(),
            retryable: true,
        }
    }
}

/// What one attempt produced.
#[derive(Debug)]
pub struct Execution {
    pub result: Result<serde_json::Value, Failure>,
    pub logs: Vec<LogLine>,
    pub fuel_used: u64,
    pub duration: Duration,
}

/// Raised from the epoch callback to stop a guest.
#[derive(Debug, thiserror::Error)]
enum Interrupted {
    #[error("step passed its deadline")]
    Timeout,
    #[error("step was cancelled")]
    Cancelled,
    /// A capability's budget ran out; the attempt holds the reason.
    #[error("step was stopped by the host")]
    Stopped,
}

const MAX_ERROR_CODE: usize = 64;
const MAX_ERROR_MESSAGE: usize = 4096;

impl Engine {
    /// Runs one attempt of a step in a fresh instance. Never panics on guest
    /// behaviour; every way a guest can misbehave ends as a [`Failure`].
    pub async fn run(
        &self,
        linked: &Linked,
        invocation: Invocation,
        input: &str,
        limits: &StepLimits,
        grants: Grants,
        cancel: &CancellationToken,
    ) -> Execution {
        let started = Instant::now();
        let deadline = started + limits.timeout;
        let host = StepHost::new(
            bindings::Invocation {
                tenant: invocation.tenant,
                run_id: invocation.run_id,
                step_id: invocation.step_id,
                attempt: invocation.attempt,
            },
            grants,
            self.outbound().clone(),
            limits.memory_bytes,
            limits.output_bytes.min(64 * 1024),
        );
        let attempt = host.attempt.clone();
        let mut store = Store::new(self.wasmtime(), host);
        store.limiter(|h| &mut h.limiter);
        // Fuel and epochs both stop CPU-bound guests; only the outer timeout below
        // stops one blocked in a host call such as `sleep`.
        let _ = store.set_fuel(limits.fuel);
        store.set_epoch_deadline(1);
        let token = cancel.clone();
        let stopped = attempt.stopped().clone();
        store.epoch_deadline_callback(move |_| {
            if token.is_cancelled() {
                return Err(Interrupted::Cancelled.into());
            }
            if stopped.is_cancelled() {
                return Err(Interrupted::Stopped.into());
            }
            if Instant::now() >= deadline {
                return Err(Interrupted::Timeout.into());
            }
            Ok(UpdateDeadline::Yield(1))
        });

        let called = {
            let call = async {
                match &linked.pre {
                    Pre::V2(pre) => {
                        let step = pre.instantiate_async(&mut store).await?;
                        step.call_run(&mut store, input).await
                    }
                    Pre::V1(pre) => {
                        let step = pre.instantiate_async(&mut store).await?;
                        let result = step.call_run(&mut store, input).await?;
                        Ok(result.map_err(|e| bindings::v2::StepError {
                            code: e.code,
                            message: e.message,
                            retryable: e.retryable,
                        }))
                    }
                }
            };
            let outer = tokio::time::sleep_until((deadline + self.tick()).into());
            tokio::select! {
                r = call => Called::Returned(r),
                _ = outer => Called::Interrupted(Interrupted::Timeout),
                _ = cancel.cancelled() => Called::Interrupted(Interrupted::Cancelled),
                _ = attempt.stopped().cancelled() => Called::Interrupted(Interrupted::Stopped),
            }
        };

        let fuel_used = limits.fuel.saturating_sub(store.get_fuel().unwrap_or(0));
        let result = match attempt.stop_reason() {
            // A budget that ran out fails the attempt whatever the guest did next.
            Some(stopped) => Err(stopped),
            None => match called {
                Called::Returned(Ok(Ok(output))) => check_output(output, limits.output_bytes)
                    .map(|output| redact_json(output, &attempt)),
                Called::Returned(Ok(Err(e))) => Err(guest_error(e)),
                Called::Returned(Err(e)) => Err(classify(&e, store.data().limiter.denied, limits)),
                Called::Interrupted(i) => Err(interrupted(&i, limits)),
            },
        };
        let result = result.map_err(|mut f| {
            f.message = attempt.redact(&f.message);
            f.code = attempt.redact(&f.code);
            f
        });
        let host = store.into_data();
        Execution {
            result,
            logs: collect_logs(host),
            fuel_used,
            duration: started.elapsed(),
        }
    }
}

enum Called {
    Returned(wasmtime::Result<Result<String, bindings::v2::StepError>>),
    Interrupted(Interrupted),
}

fn check_output(output: String, cap: usize) -> Result<serde_json::Value, Failure> {
    if output.len() > cap {
        return Err(Failure::host(
            "output_too_large",
            format!(
                "output is {} bytes, over the {cap}-byte limit",
                output.len()
            ),
        ));
    }
    if crate::budget::json_too_deep(output.as_bytes(), crate::budget::MAX_JSON_DEPTH) {
        return Err(Failure::host(
            "invalid_output",
            format!(
                "output nests arrays and objects deeper than {} levels",
                crate::budget::MAX_JSON_DEPTH
            ),
        ));
    }
    serde_json::from_str(&output)
        .map_err(|e| Failure::host("invalid_output", format!("output is not JSON: {e}")))
}

/// `value` with the step's secrets replaced by `***` in every string and key.
fn redact_json(value: serde_json::Value, attempt: &super::host::Attempt) -> serde_json::Value {
    use serde_json::Value;
    fn walk(value: Value, attempt: &super::host::Attempt) -> Value {
        match value {
            Value::String(s) => Value::String(attempt.redact(&s)),
            Value::Array(items) => {
                Value::Array(items.into_iter().map(|v| walk(v, attempt)).collect())
            }
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(k, v)| (attempt.redact(&k), walk(v, attempt)))
                    .collect(),
            ),
            other => other,
        }
    }
    if attempt.redacts() {
        walk(value, attempt)
    } else {
        value
    }
}

fn guest_error(e: bindings::v2::StepError) -> Failure {
    let mut code = e.code;
    if code.is_empty() {
        code = "error".to_string();
    }
    Failure {
        code: truncate(code, MAX_ERROR_CODE),
        message: truncate(e.message, MAX_ERROR_MESSAGE),
        retryable: e.retryable,
    }
}

fn interrupted(i: &Interrupted, limits: &StepLimits) -> Failure {
    match i {
        Interrupted::Timeout => Failure::host(
            "timeout",
            format!(
                "step ran longer than its {} ms timeout",
                limits.timeout.as_millis()
            ),
        ),
        Interrupted::Cancelled => Failure {
            code: "cancelled".into(),
            message: "step was cancelled".into(),
            retryable: false,
        },
        Interrupted::Stopped => Failure::host("stopped", "step was stopped by the host"),
    }
}

fn classify(e: &wasmtime::Error, memory_denied: bool, limits: &StepLimits) -> Failure {
    if let Some(i) = e.downcast_ref::<Interrupted>() {
        return interrupted(i, limits);
    }
    let trap = e.downcast_ref::<Trap>();
    // A denied `memory.grow` makes a Rust guest abort; only then is it the cause.
    let aborted = matches!(trap, Some(Trap::UnreachableCodeReached) | None);
    if memory_denied && aborted {
        return Failure::host(
            "memory_limit",
            format!(
                "step tried to grow its memory past its {} MiB limit",
                limits.memory_bytes >> 20
            ),
        );
    }
    match trap {
        Some(Trap::OutOfFuel) => Failure::host(
            "out_of_fuel",
            format!("step used up its fuel budget of {}", limits.fuel),
        ),
        Some(Trap::Interrupt) => interrupted(&Interrupted::Timeout, limits),
        Some(trap) => Failure::host("trap", trap.to_string()),
        None => Failure::host("trap", truncate(format!("{e:#}"), MAX_ERROR_MESSAGE)),
    }
}

/// The attempt's log: host `log` lines, then stdout and stderr lines, all under
/// the same caps, and one final warning when anything was dropped.
fn collect_logs(host: StepHost) -> Vec<LogLine> {
    let mut dropped_bytes = 0;
    for (stream, pipe) in [("stdout", &host.stdout), ("stderr", &host.stderr)] {
        let (lines, dropped) = pipe.lines();
        dropped_bytes += dropped;
        for line in lines {
            host.attempt.log(stream, &line);
        }
    }
    let (mut logs, dropped_lines) = host.attempt.take_log();
    if dropped_lines > 0 || dropped_bytes > 0 {
        logs.push(LogLine {
            level: "warn".into(),
            message: format!(
                "log truncated: {dropped_lines} lines and {dropped_bytes} bytes of output dropped over the caps"
            ),
        });
    }
    logs
}

/// `s` cut to at most `max` bytes, on a character boundary.
pub(super) fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}
