//! What happens after an attempt: succeed, retry after a backoff, or fail.

use rand::Rng;

use crate::engine::Failure;
use crate::workflow::RetryPolicy;

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
