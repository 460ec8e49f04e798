//! What happens after an attempt: succeed, retry after a backoff, or fail.

use rand::Rng;

use crate::engine::Failure;
use crate::workflow::{ResolveError, RetryPolicy};

/// The scheduler's decision about one finished attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Succeed(serde_json::Value),
    Retry { failure: Failure, delay_ms: u64 },
    Fail(Failure),
}

/// Decides what follows attempt number `attempt` (1-based) of a step.
pub fn decide(
    result: Result<serde_json::Value, Failure>,
    attempt: u32,
    retry: &RetryPolicy,
    rng: &mut impl Rng,
) -> Decision {
    match result {
        Ok(output) => Decision::Succeed(output),
        Err(failure) if failure.retryable && attempt < retry.max_attempts => {
            let delay_ms = backoff_ms(attempt, retry, rng);
            Decision::Retry { failure, delay_ms }
        }
        Err(failure) => Decision::Fail(failure),
    }
}

/// Whether recording `adding` more bytes in a run that stores `used` would
/// pass its `run_bytes`: then the step fails [`run_too_large`] instead.
/// (The Redis commit script applies the same rule.)
pub fn over_run_bytes(used: u64, adding: u64, run_bytes: u64) -> bool {
    used.saturating_add(adding) > run_bytes
}

/// The failure recorded in place of an outcome that would pass `run_bytes`.
pub fn run_too_large(run_bytes: u64) -> Failure {
    Failure {
        code: "run_too_large".into(),
        message: format!("the run would store more than its run_bytes ({run_bytes} bytes)"),
        retryable: false,
    }
}

/// What a run stores when it is created, counted against its `run_bytes`: its input.
pub fn stored_input_bytes(spec: &crate::scheduler::model::RunSpec) -> u64 {
    crate::workflow::json_size(&spec.input, usize::MAX).unwrap_or(0) as u64
}

/// The failure of an attempt delivered more often than `max_deliveries`
/// allows; retryable, so that the step's own retry policy decides what follows.
pub fn delivery_limit(max_deliveries: u32) -> Failure {
    Failure {
        code: "delivery_limit".into(),
        message: format!(
            "the nodes running this attempt stopped {max_deliveries} times; it is not delivered again"
        ),
        retryable: true,
    }
}

/// Every error code the host itself gives a step.
pub const HOST_CODES: &[&str] = &[
    "trap",
    "out_of_fuel",
    "memory_limit",
    "timeout",
    "invalid_output",
    "output_too_large",
    "bad_reference",
    "input_too_large",
    "run_too_large",
    "delivery_limit",
    "component_unavailable",
    "cancelled",
];

/// An error code as a metric label: a host code as it is; any code of a
/// component's own is `component`, so labels come from a fixed set.
pub fn code_label(code: &str) -> &'static str {
    HOST_CODES
        .iter()
        .find(|c| **c == code)
        .copied()
        .unwrap_or("component")
}

/// Exponential backoff with full jitter: uniform in
/// `[0, min(max, initial * 2^(attempt-1))]`.
pub fn backoff_ms(attempt: u32, retry: &RetryPolicy, rng: &mut impl Rng) -> u64 {
    let exp = attempt.saturating_sub(1).min(32);
    let ceiling = retry
        .initial_backoff_ms
        .saturating_mul(1u64 << exp)
        .min(retry.max_backoff_ms);
    if ceiling == 0 {
        0
    } else {
        rng.random_range(0..=ceiling)
    }
}

/// The failure of a step (or of a run's output) whose references could not be resolved;
/// neither is retried, since resolving again gives the same answer.
pub fn resolve_failure(what: &str, error: ResolveError) -> Failure {
    let code = match error {
        ResolveError::BadReference(_) => "bad_reference",
        ResolveError::TooLarge { .. } => "input_too_large",
    };
    let message = match error {
        ResolveError::TooLarge { limit } => format!(
            "{what} would be larger than the tenant's input_bytes ({limit} bytes) once its references are resolved"
        ),
        other => other.to_string(),
    };
    Failure {
        code: code.into(),
        message,
        retryable: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn policy(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            initial_backoff_ms: 100,
            max_backoff_ms: 1_000,
        }
    }

    fn failure(retryable: bool) -> Failure {
        Failure {
            code: "boom".into(),
            message: "x".into(),
            retryable,
        }
    }

    #[test]
    fn retryable_failures_retry_until_max_attempts() {
        let mut rng = StdRng::seed_from_u64(1);
        let p = policy(3);
        assert!(matches!(
            decide(Err(failure(true)), 1, &p, &mut rng),
            Decision::Retry { .. }
        ));
        assert!(matches!(
            decide(Err(failure(true)), 2, &p, &mut rng),
            Decision::Retry { .. }
        ));
        assert!(matches!(
            decide(Err(failure(true)), 3, &p, &mut rng),
            Decision::Fail(_)
        ));
    }

    #[test]
    fn non_retryable_failure_stops_at_once() {
        let mut rng = StdRng::seed_from_u64(1);
        assert!(matches!(
            decide(Err(failure(false)), 1, &policy(5), &mut rng),
            Decision::Fail(_)
        ));
    }

    #[test]
    fn backoff_is_bounded_by_exponential_ceiling_and_max() {
        let mut rng = StdRng::seed_from_u64(7);
        let p = policy(10);
        for attempt in 1..10u32 {
            let ceiling = (100u64 << (attempt - 1)).min(1_000);
            let samples: Vec<u64> = (0..200)
                .map(|_| backoff_ms(attempt, &p, &mut rng))
                .collect();
            assert!(samples.iter().all(|&d| d <= ceiling), "attempt {attempt}");
            // Full jitter spreads over the whole range, not just near the ceiling.
            assert!(
                samples.iter().any(|&d| d < ceiling / 2),
                "attempt {attempt}"
            );
        }
    }
}
