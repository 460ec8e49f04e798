//! Flow control: which ready task a worker takes next. Plain functions over
//! the state of a queue; the embedded backend applies them under its lock and
//! the Redis backend mirrors them in its `take` script, and the shared
//! backend suite checks both against the same cases.
//!
//! Ready work waits per (queue, tenant). A worker serves the queues its node
//! was started with, in order; within a queue it serves tenants by stride
//! scheduling (weighted fair queueing): each tenant with ready work has a
//! virtual time, the tenant with the lowest one that is under its
//! `concurrent_steps` is served next, up to its `weight` tasks per visit,
//! and is charged `STRIDE / weight` per task taken. A tenant that had no
//! ready work enters at the queue's current virtual time (its `floor`), so
//! idling earns no credit and a newcomer waits behind no backlog. Within a
//! tenant, tasks of higher-priority runs go first, then the oldest.

use std::cmp::Reverse;

use super::clock::Millis;

/// The queue a step without `"queue"` goes to; it always exists.
pub const DEFAULT_QUEUE: &str = "default";

/// A run's priority when `POST /v1/runs` gives none.
pub const DEFAULT_PRIORITY: u8 = 5;

/// The highest priority; the lowest is 0.
pub const MAX_PRIORITY: u8 = 9;

/// The virtual time a tenant of weight 1 is charged per task it is given.
pub const STRIDE: u64 = 1 << 20;

/// The largest tenant `weight`.
pub const MAX_WEIGHT: u32 = 1_000;

/// A tenant's limits as the dispatcher reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    /// Tasks per visit, and the inverse of the charge per task.
    pub weight: u32,
    /// Attempts of the tenant that may run at once, cluster-wide.
    pub concurrent_steps: u32,
}

impl Default for Share {
    fn default() -> Self {
        Self {
            weight: 1,
            concurrent_steps: 10_000,
        }
    }
}

/// The order of a task within its tenant's ready work: higher priority
/// first, then first come (`seq`, or the time it became ready).
pub fn rank(priority: u8, seq: u64) -> (Reverse<u8>, u64) {
    (Reverse(priority.min(MAX_PRIORITY)), seq)
}

/// Whether a tenant with `running` attempts running may be given more.
pub fn may_run(share: Share, running: u32) -> bool {
    running < share.concurrent_steps
}

/// The virtual time at which a tenant is served: its own, or the queue's
/// `floor` if that is later (a tenant that just got ready work enters there).
pub fn served_at(vt: u64, floor: u64) -> u64 {
    vt.max(floor)
}

/// The virtual time one task costs a tenant of `weight`.
pub fn stride(weight: u32) -> u64 {
    STRIDE / u64::from(weight.clamp(1, MAX_WEIGHT))
}

/// A tenant's virtual time after a visit at `at` gave it `taken` tasks.
pub fn charge(at: u64, taken: usize, weight: u32) -> u64 {
    at + taken as u64 * stride(weight)
}

/// What one visit of a queue does: serve `tenant` at virtual time `at`
/// with up to `n` of its tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Visit<T> {
    pub tenant: T,
    pub at: u64,
    pub n: usize,
    pub share: Share,
}

/// The next visit of a queue whose tenants with ready work are
/// `candidates`, in order of (virtual time, name), each with its share and
/// running attempts; `room` is how many tasks the worker can take.
///
/// The first tenant that may run is served, at [`served_at`]. It gets as
/// many tasks as keep it no further ahead than the next tenant that may run
/// (all there is room for when it is the only one), at least its weight,
/// and no more than its headroom under `concurrent_steps`. `None` when
/// every tenant is at its `concurrent_steps`.
pub fn visit<T>(
    candidates: impl IntoIterator<Item = (T, u64, Share, u32)>,
    floor: u64,
    room: usize,
) -> Option<Visit<T>> {
    let mut may = candidates
        .into_iter()
        .filter(|(_, _, share, running)| may_run(*share, *running));
    let (tenant, vt, share, running) = may.next()?;
    let at = served_at(vt, floor);
    let fair = match may.next() {
        None => usize::MAX,
        Some((_, next, _, _)) => {
            let ahead = served_at(next, floor).saturating_sub(at) / stride(share.weight);
            (share.weight.clamp(1, MAX_WEIGHT) as usize).max(ahead as usize)
        }
    };
    let headroom = share.concurrent_steps.saturating_sub(running) as usize;
    Some(Visit {
        tenant,
        at,
        n: fair.min(room).min(headroom),
        share,
    })
}

/// Whether one more attempt may take a concurrency key that `holding`
/// attempts hold, of `limit`; the others wait, first come first, and each
/// ending attempt hands its slot to the next.
pub fn may_hold(holding: u32, limit: u32) -> bool {
    holding < limit.max(1)
}

/// A tenant's rate limit: starts per second, and how many may start at
/// once after a quiet spell.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

/// A token bucket: `tokens` as of `at`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub tokens: f64,
    pub at: Millis,
}

/// What releasing rate-limited tasks does at `now`: how many of the
/// `waiting` start, the bucket after, and when the next token comes if some
/// still wait. A bucket never used is full (`burst` tokens).
pub fn release(
    bucket: Option<Bucket>,
    rate: Rate,
    waiting: usize,
    now: Millis,
) -> (usize, Bucket, Option<Millis>) {
    let burst = f64::from(rate.burst.max(1));
    let per_ms = rate.per_second / 1000.0;
    let tokens = match bucket {
        None => burst,
        Some(b) => (b.tokens + now.saturating_sub(b.at) as f64 * per_ms).min(burst),
    };
    let n = (tokens.floor().max(0.0) as usize).min(waiting);
    let tokens = tokens - n as f64;
    // The next whole millisecond at which a token is there (a hair of
    // rounding below it counts as there).
    let next =
        (waiting > n).then(|| now + ((1.0 - tokens) / per_ms - 1e-9).ceil().max(1.0) as Millis);
    (n, Bucket { tokens, at: now }, next)
}

/// Whether `name` can name a queue: `[a-z][a-z0-9_-]{0,62}`, like step ids.
pub fn valid_queue(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 63
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(weight: u32, concurrent_steps: u32) -> Share {
        Share {
            weight,
            concurrent_steps,
        }
    }

    #[test]
    fn higher_priority_goes_first_then_the_oldest() {
        let mut tasks = [(1, 10), (9, 30), (5, 20), (9, 40), (5, 5)];
        tasks.sort_by_key(|&(p, s)| rank(p, s));
        assert_eq!(tasks, [(9, 30), (9, 40), (5, 5), (5, 20), (1, 10)]);
    }

    #[test]
    fn a_visit_takes_the_weight_within_room_and_headroom() {
        let two = |a: Share, ra: u32, b: Share, rb: u32| [("a", 0, a, ra), ("b", 0, b, rb)];
        let n = |c: [(&'static str, u64, Share, u32); 2], room| {
            visit(c, 0, room).map(|v| (v.tenant, v.n))
        };
        assert_eq!(
            n(two(share(3, 100), 0, share(1, 100), 0), 10),
            Some(("a", 3))
        );
        assert_eq!(
            n(two(share(3, 100), 0, share(1, 100), 0), 2),
            Some(("a", 2))
        );
        assert_eq!(
            n(two(share(3, 100), 99, share(1, 100), 0), 10),
            Some(("a", 1))
        );
        assert_eq!(
            n(two(share(0, 100), 0, share(1, 100), 0), 10),
            Some(("a", 1)),
            "weight 0 counts as 1"
        );
        // At its cap it is passed over; with none left, nobody is served.
        assert_eq!(
            n(two(share(3, 5), 5, share(1, 100), 0), 10),
            Some(("b", 10))
        );
        assert_eq!(n(two(share(1, 5), 5, share(1, 2), 2), 10), None);
    }

    #[test]
    fn a_tenant_alone_takes_all_there_is_room_for_and_one_behind_takes_up_to_the_next() {
        assert_eq!(visit([("a", 0, share(1, 100), 0)], 0, 64).unwrap().n, 64);
        let behind = [
            ("a", 0, share(1, 100), 0),
            ("b", 5 * STRIDE, share(1, 100), 0),
        ];
        assert_eq!(visit(behind, 0, 64).unwrap().n, 5);
    }

    #[test]
    fn weights_three_to_one_share_three_to_one() {
        // Two tenants that always have work, served one task at a time.
        let shares = [share(3, 10_000), share(1, 10_000)];
        let mut vt = [0u64, 0];
        let mut served = [0usize, 0];
        let mut floor = 0;
        for _ in 0..4_000 {
            let mut order = [0usize, 1];
            order.sort_by_key(|&t| (vt[t], t));
            let v = visit(order.map(|t| (t, vt[t], shares[t], 0)), floor, 1).unwrap();
            floor = v.at;
            served[v.tenant] += v.n;
            vt[v.tenant] = charge(v.at, v.n, v.share.weight);
        }
        assert_eq!(served, [3_000, 1_000]);
    }

    #[test]
    fn a_tenant_entering_late_is_served_at_the_floor() {
        assert_eq!(served_at(0, 5 * STRIDE), 5 * STRIDE);
        assert_eq!(served_at(7 * STRIDE, 5 * STRIDE), 7 * STRIDE);
        assert_eq!(charge(5 * STRIDE, 2, 2), 6 * STRIDE);
        let late = visit([("new", 0, share(1, 10), 0)], 5 * STRIDE, 1).unwrap();
        assert_eq!(late.at, 5 * STRIDE);
    }

    #[test]
    fn a_bucket_lets_a_burst_go_then_one_per_interval() {
        let rate = Rate {
            per_second: 20.0,
            burst: 5,
        };
        let (n, b, next) = release(None, rate, 8, 1_000);
        assert_eq!((n, next), (5, Some(1_050)));
        let (n, b, next) = release(Some(b), rate, 3, 1_049);
        assert_eq!((n, next), (0, Some(1_050)));
        let (n, b, next) = release(Some(b), rate, 3, 1_050);
        assert_eq!((n, next), (1, Some(1_100)));
        // After a quiet spell the bucket holds no more than its burst.
        let (n, _, next) = release(Some(b), rate, 9, 60_000);
        assert_eq!((n, next), (5, Some(60_050)));
        assert_eq!(release(None, rate, 0, 0).0, 0);
    }

    #[test]
    fn queue_names() {
        assert!(valid_queue("default"));
        assert!(valid_queue("gpu-large_2"));
        assert!(!valid_queue("GPU"));
        assert!(!valid_queue("2gpu"));
        assert!(!valid_queue(""));
        assert!(!valid_queue(&"a".repeat(64)));
    }
}
