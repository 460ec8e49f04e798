//! The rules of the workflow language (ARCHITECTURE.md section 14) as plain
//! functions from a state to a decision: whether a step whose dependencies
//! ended runs or is skipped, how many for_each items start, which
//! compensation runs next, how a run ends after its compensations. The
//! stores apply these decisions; the Redis scripts mirror the counting ones,
//! and the shared backend suite replays the same cases against every store.

use crate::engine::Failure;
use crate::scheduler::clock::Millis;
use crate::scheduler::model::{ITEM_EVENT_MS, RunError, RunStatus, StepStatus};
use crate::workflow::{Action, Condition, MAX_WAIT_MS, OnError, Step};

/// What happens to a step whose dependencies have all ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Gate {
    Run,
    Skip {
        reason: String,
        /// The error of a condition that could not be evaluated.
        error: Option<Failure>,
    },
}

/// Whether a dependency that ended with `status` counts as satisfied: it
/// succeeded, or failed while the run went on (`on_error: continue`; any
/// other failure would have ended the run).
pub fn satisfied(status: StepStatus) -> bool {
    matches!(status, StepStatus::Succeeded | StepStatus::Failed)
}

/// The gate of `step`, given how each of its dependencies ended: skipped
/// when every dependency was skipped, else skipped when its `when` is false
/// or cannot be evaluated, else run. `evaluate` is called only when needed.
pub fn gate(
    step: &Step,
    deps: &[StepStatus],
    evaluate: impl FnOnce(&Condition) -> Result<bool, String>,
) -> Gate {
    if !deps.is_empty() && deps.iter().all(|s| *s == StepStatus::Skipped) {
        return Gate::Skip {
            reason: "every dependency was skipped".into(),
            error: None,
        };
    }
    let Some(condition) = &step.when else {
        return Gate::Run;
    };
    match evaluate(condition) {
        Ok(true) => Gate::Run,
        Ok(false) => Gate::Skip {
            reason: format!("when is false: {}", condition.source()),
            error: None,
        },
        Err(message) => Gate::Skip {
            reason: message.clone(),
            error: Some(Failure {
                code: "condition_error".into(),
                message,
                retryable: false,
            }),
        },
    }
}

/// Whether the failure of `step` (or of one of its items), after its
/// retries, leaves the run going.
pub fn continues(step: &Step) -> bool {
    step.on_error == OnError::Continue
}

/// How many more items of a for_each step start now: as many as keep
/// `max_concurrency` items going, while items are left.
pub fn items_to_start(max_concurrency: u32, total: u32, started: u32, ended: u32) -> u32 {
    let active = started.saturating_sub(ended);
    max_concurrency
        .saturating_sub(active)
        .min(total.saturating_sub(started))
}

/// Whether a for_each list of `count` items fits in the run's
/// `steps_per_run`, with the run's `steps` and the `extra` items that other
/// for_each steps already expanded to. A for_each step counts as its items:
/// its list adds [`extra_items`] to the steps of the document.
pub fn items_fit(steps: usize, extra: u64, count: usize, steps_per_run: u32) -> bool {
    (steps as u64)
        .saturating_add(extra)
        .saturating_add(extra_items(count))
        <= u64::from(steps_per_run)
}

/// What a list of `count` items adds to the run's steps: the step is one of
/// its items.
pub fn extra_items(count: usize) -> u64 {
    (count as u64).saturating_sub(1)
}

/// The failure of a for_each step whose list holds too many items.
pub fn too_many_items(count: usize, steps_per_run: u32) -> Failure {
    Failure {
        code: "too_many_items".into(),
        message: format!(
            "the list has {count} items; with the run's other steps and items that is more than its steps_per_run ({steps_per_run})"
        ),
        retryable: false,
    }
}

/// The failure of a for_each step whose list is not an array.
pub fn not_a_list(found: &serde_json::Value) -> Failure {
    let kind = match found {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Object(_) => "an object",
        serde_json::Value::Array(_) => "an array",
    };
    Failure {
        code: "bad_reference".into(),
        message: format!("for_each needs an array; the reference gave {kind}"),
        retryable: false,
    }
}

/// The failure a for_each step takes from its item `item`'s failure.
pub fn item_failure(item: u32, failure: &Failure) -> Failure {
    Failure {
        code: failure.code.clone(),
        message: format!("item {item}: {}", failure.message),
        retryable: false,
    }
}

/// One step as the choice of the next compensation sees it.
#[derive(Debug, Clone, Copy)]
pub struct Done {
    pub index: usize,
    pub status: StepStatus,
    /// The order in which steps ended, from 1; 0 if it has not.
    pub seq: u64,
    /// The step has a `compensate`.
    pub compensable: bool,
    /// Its compensation has started (and runs or ended).
    pub compensated: bool,
}

/// The next compensation to run: of the steps that succeeded and have a
/// `compensate` not started yet, the one that ended last; None when every
/// compensation has run.
pub fn next_compensation(steps: impl IntoIterator<Item = Done>) -> Option<usize> {
    steps
        .into_iter()
        .filter(|d| d.status == StepStatus::Succeeded && d.compensable && !d.compensated)
        .max_by_key(|d| d.seq)
        .map(|d| d.index)
}

/// The status a run ends with once its compensations have run: `failed` if
/// a failure ended it (it has an error), else `cancelled`.
pub fn after_compensation(error: Option<&RunError>) -> RunStatus {
    if error.is_some() {
        RunStatus::Failed
    } else {
        RunStatus::Cancelled
    }
}

/// Whether a for_each step whose last progress event went at `last` may
/// send another at `now`.
pub fn progress_event_due(last: Millis, now: Millis) -> bool {
    now >= last.saturating_add(ITEM_EVENT_MS)
}

/// How long a sleep step waits, as its document or its resolved
/// `sleep_until` says.
#[derive(Debug, Clone, PartialEq)]
pub enum SleepFor<'a> {
    Ms(u64),
    /// The text `sleep_until` resolved to.
    Until(&'a serde_json::Value),
}

/// When a run submitted at `now` with `start_at` (RFC 3339) or `delay_ms`
/// starts: `None` at once (neither given, or a time that has passed),
/// else its time, at most 365 days ahead. Both given, text that is no RFC
/// 3339 time, or a time too far ahead is refused with why.
pub fn start_due(
    start_at: Option<&str>,
    delay_ms: Option<u64>,
    now: Millis,
) -> Result<Option<Millis>, String> {
    let due = match (start_at, delay_ms) {
        (Some(_), Some(_)) => return Err("give start_at or delay_ms, not both".into()),
        (None, None) => return Ok(None),
        (None, Some(ms)) => now.saturating_add(ms),
        (Some(text), None) => crate::scheduler::clock::parse_rfc3339(text).ok_or_else(|| {
            let shown: String = text.chars().take(64).collect();
            format!("start_at: {shown:?} is not an RFC 3339 time such as 2026-12-24T18:00:00Z")
        })?,
    };
    if due > now.saturating_add(MAX_WAIT_MS) {
        return Err(format!(
            "the run would start more than 365 days ahead ({})",
            crate::scheduler::clock::rfc3339(due)
        ));
    }
    Ok((due > now).then_some(due))
}

/// When a sleep step reached at `now` is due: `sleep_ms` after now, or the
/// time `sleep_until` names (a time passed is due now). Text that is no
/// RFC 3339 time, or a time more than 365 days ahead, fails the step
/// `invalid_time`.
pub fn sleep_due(sleep: SleepFor<'_>, now: Millis) -> Result<Millis, Failure> {
    let invalid = |message: String| Failure {
        code: "invalid_time".into(),
        message,
        retryable: false,
    };
    let due = match sleep {
        SleepFor::Ms(ms) => now.saturating_add(ms),
        SleepFor::Until(serde_json::Value::String(text)) => {
            crate::scheduler::clock::parse_rfc3339(text).ok_or_else(|| {
                let shown: String = text.chars().take(64).collect();
                invalid(format!(
                    "sleep_until: {shown:?} is not an RFC 3339 time such as 2026-12-24T18:00:00Z"
                ))
            })?
        }
        SleepFor::Until(_) => {
            return Err(invalid(
                "sleep_until needs a string, an RFC 3339 time".into(),
            ));
        }
    };
    if due > now.saturating_add(MAX_WAIT_MS) {
        return Err(invalid(format!(
            "sleep_until is more than 365 days ahead ({})",
            crate::scheduler::clock::rfc3339(due)
        )));
    }
    Ok(due.max(now))
}

/// When a signal step reached at `now` times out: its `timeout_ms` after
/// now; never without one.
pub fn signal_due(step: &Step, now: Millis) -> Option<Millis> {
    step.timeout_ms.map(|t| now.saturating_add(t))
}

/// Signals of one name a run keeps before a step takes them, oldest first.
pub const MAX_BUFFERED_SIGNALS: u32 = 100;

/// What a signal sent to an unfinished run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalGoes {
    /// Step `index` waits for it: its payload becomes that step's output.
    To(usize),
    /// No step waits for it: it is kept for the next one that does.
    Buffer,
    /// No step waits for it and `MAX_BUFFERED_SIGNALS` of its name are kept.
    Full,
    /// It would take the run's stored bytes past its `run_bytes`.
    TooLarge,
}

/// Where a signal goes: to the waiting step of lowest index among
/// `waiting` (steps waiting for this name), else into the buffer holding
/// `buffered` of its name; refused when its `bytes` do not fit the run.
pub fn signal_goes(
    waiting: impl IntoIterator<Item = usize>,
    buffered: u32,
    used: u64,
    bytes: u64,
    run_bytes: u64,
) -> SignalGoes {
    if crate::scheduler::policy::over_run_bytes(used, bytes, run_bytes) {
        return SignalGoes::TooLarge;
    }
    match waiting.into_iter().min() {
        Some(index) => SignalGoes::To(index),
        None if buffered >= MAX_BUFFERED_SIGNALS => SignalGoes::Full,
        None => SignalGoes::Buffer,
    }
}

/// What a sub-workflow step ends with once its child run `id` ended with
/// `status`: the child's output, or `child_failed` with the child's error.
pub fn child_ended(
    id: &str,
    status: RunStatus,
    output: serde_json::Value,
    error: Option<&RunError>,
) -> Result<serde_json::Value, Failure> {
    match status {
        RunStatus::Succeeded => Ok(output),
        _ => Err(Failure {
            code: "child_failed".into(),
            message: match error {
                Some(e) => format!(
                    "child run {id} {}: {} ({})",
                    status.as_str(),
                    e.message,
                    e.code
                ),
                None => format!("child run {id} {}", status.as_str()),
            },
            retryable: false,
        }),
    }
}

/// What the wake-up of a waiting step decides: a sleep has ended (output
/// `null`); a signal step's time ran out before its signal came.
pub fn woken(step: &Step) -> Result<serde_json::Value, Failure> {
    match &step.action {
        Action::Signal(name) => Err(Failure {
            code: "signal_timeout".into(),
            message: format!(
                "no signal {name:?} came within {} ms",
                step.timeout_ms.unwrap_or_default()
            ),
            retryable: false,
        }),
        _ => Ok(serde_json::Value::Null),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(index: usize, status: StepStatus, seq: u64, compensable: bool) -> Done {
        Done {
            index,
            status,
            seq,
            compensable,
            compensated: false,
        }
    }

    #[test]
    fn compensations_go_in_reverse_order_of_completion() {
        use StepStatus::*;
        // Step 2 ended before step 0; step 1 has no compensation; step 3 failed.
        let steps = [
            done(0, Succeeded, 3, true),
            done(1, Succeeded, 2, false),
            done(2, Succeeded, 1, true),
            done(3, Failed, 4, true),
        ];
        assert_eq!(next_compensation(steps), Some(0));
        let mut after = steps;
        after[0].compensated = true;
        assert_eq!(next_compensation(after), Some(2));
        after[2].compensated = true;
        assert_eq!(next_compensation(after), None);
    }

    #[test]
    fn the_window_keeps_max_concurrency_items_going() {
        // (max, total, started, ended) -> to start
        let cases = [
            ((10, 0, 0, 0), 0),
            ((10, 1, 0, 0), 1),
            ((10, 100, 0, 0), 10),
            ((10, 100, 10, 1), 1),
            ((10, 100, 10, 0), 0),
            ((1, 5, 1, 1), 1),
            ((1000, 10_000, 1000, 1000), 1000),
            ((10, 12, 10, 5), 2),
        ];
        for ((max, total, started, ended), want) in cases {
            assert_eq!(
                items_to_start(max, total, started, ended),
                want,
                "{max} {total} {started} {ended}"
            );
        }
    }

    #[test]
    fn a_run_ends_failed_with_an_error_and_cancelled_without() {
        let error = RunError {
            code: "x".into(),
            message: "m".into(),
            step: None,
        };
        assert_eq!(after_compensation(Some(&error)), RunStatus::Failed);
        assert_eq!(after_compensation(None), RunStatus::Cancelled);
    }

    #[test]
    fn items_count_against_steps_per_run() {
        assert!(items_fit(1, 0, 10_000, 10_000));
        assert!(items_fit(2, 0, 9_999, 10_000));
        assert!(!items_fit(2, 0, 10_000, 10_000));
        assert!(!items_fit(2, 5_000, 5_000, 10_000));
        assert!(items_fit(10_000, 0, 0, 10_000));
    }

    #[test]
    fn progress_events_are_at_most_one_per_interval() {
        assert!(progress_event_due(0, 100));
        assert!(!progress_event_due(50, 149));
        assert!(progress_event_due(50, 150));
    }

    #[test]
    fn a_sleep_is_due_after_its_time_and_at_most_a_year_ahead() {
        let now = 1_000_000;
        assert_eq!(sleep_due(SleepFor::Ms(500), now), Ok(now + 500));
        let at = serde_json::json!("2026-12-24T18:00:00Z");
        let due = sleep_due(SleepFor::Until(&at), 1_790_000_000_000).unwrap();
        assert_eq!(due, 1_798_135_200_000);
        let offset = serde_json::json!("2026-12-24T19:00:00+01:00");
        assert_eq!(
            sleep_due(SleepFor::Until(&offset), 1_790_000_000_000),
            Ok(due)
        );
        // A time passed is due now.
        assert_eq!(sleep_due(SleepFor::Until(&at), due + 5), Ok(due + 5));
        for bad in [serde_json::json!("tomorrow"), serde_json::json!(5)] {
            let e = sleep_due(SleepFor::Until(&bad), now).unwrap_err();
            assert_eq!(e.code, "invalid_time");
        }
        let far = sleep_due(SleepFor::Until(&at), 1_700_000_000_000).unwrap_err();
        assert!(far.message.contains("365 days"), "{}", far.message);
    }

    #[test]
    fn a_run_starts_at_once_at_its_time_or_after_its_delay() {
        let now = 1_700_000_000_000;
        assert_eq!(start_due(None, None, now), Ok(None));
        assert_eq!(start_due(None, Some(3_000), now), Ok(Some(now + 3_000)));
        assert_eq!(start_due(None, Some(0), now), Ok(None));
        assert_eq!(
            start_due(Some("2023-11-14T22:13:23Z"), None, now),
            Ok(Some(now + 3_000))
        );
        assert_eq!(start_due(Some("2001-01-01T00:00:00Z"), None, now), Ok(None));
        assert!(start_due(Some("tomorrow"), None, now).is_err());
        assert!(start_due(Some("2023-11-14T22:13:23Z"), Some(1), now).is_err());
        let far = start_due(None, Some(MAX_WAIT_MS + 1), now).unwrap_err();
        assert!(far.contains("365 days"), "{far}");
    }
}
