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

/// How many tasks one visit takes from a tenant: up to its weight, within
/// the `room` the worker has and the tenant's headroom under
/// `concurrent_steps` (`running` attempts of it run now).
pub fn quantum(share: Share, room: usize, running: u32) -> usize {
    let headroom = share.concurrent_steps.saturating_sub(running) as usize;
    (share.weight.clamp(1, MAX_WEIGHT) as usize)
        .min(room)
        .min(headroom)
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

/// A tenant's virtual time after a visit at `at` gave it `taken` tasks.
pub fn charge(at: u64, taken: usize, weight: u32) -> u64 {
    at + taken as u64 * (STRIDE / u64::from(weight.clamp(1, MAX_WEIGHT)))
}

/// Which tenant a visit serves: the first, in order of (virtual time, name),
/// that may run more; `None` when every one is at its `concurrent_steps`.
pub fn pick<'a, T>(
    candidates: impl IntoIterator<Item = (&'a T, Share, u32)>,
) -> Option<(&'a T, Share, u32)>
where
    T: ?Sized + 'a,
{
    candidates
        .into_iter()
        .find(|(_, share, running)| may_run(*share, *running))
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

    #[test]
    fn higher_priority_goes_first_then_the_oldest() {
        let mut tasks = [(1, 10), (9, 30), (5, 20), (9, 40), (5, 5)];
        tasks.sort_by_key(|&(p, s)| rank(p, s));
        assert_eq!(tasks, [(9, 30), (9, 40), (5, 5), (5, 20), (1, 10)]);
    }

    #[test]
    fn a_visit_takes_the_weight_within_room_and_headroom() {
        let share = |weight, concurrent_steps| Share {
            weight,
            concurrent_steps,
        };
        assert_eq!(quantum(share(3, 100), 10, 0), 3);
        assert_eq!(quantum(share(3, 100), 2, 0), 2);
        assert_eq!(quantum(share(3, 100), 10, 99), 1);
        assert_eq!(quantum(share(3, 100), 10, 100), 0);
        assert_eq!(quantum(share(0, 100), 10, 0), 1, "weight 0 counts as 1");
        assert!(!may_run(share(1, 5), 5));
    }

    #[test]
    fn weights_three_to_one_share_three_to_one() {
        // Two tenants that always have work: replay the visits.
        let shares = [
            Share {
                weight: 3,
                ..Share::default()
            },
            Share::default(),
        ];
        let mut vt = [0u64, 0];
        let mut served = [0usize, 0];
        let mut floor = 0;
        for _ in 0..4_000 {
            let order = if (vt[0], 0) <= (vt[1], 1) {
                [0, 1]
            } else {
                [1, 0]
            };
            let t = order[0];
            let at = served_at(vt[t], floor);
            floor = at;
            let n = quantum(shares[t], 1, 0);
            served[t] += n;
            vt[t] = charge(at, n, shares[t].weight);
        }
        assert_eq!(served, [3_000, 1_000]);
    }

    #[test]
    fn a_tenant_entering_late_is_served_at_the_floor() {
        assert_eq!(served_at(0, 5 * STRIDE), 5 * STRIDE);
        assert_eq!(served_at(7 * STRIDE, 5 * STRIDE), 7 * STRIDE);
        assert_eq!(charge(5 * STRIDE, 2, 2), 6 * STRIDE);
    }

    #[test]
    fn a_tenant_at_its_cap_is_passed_over() {
        let full = Share {
            weight: 1,
            concurrent_steps: 2,
        };
        let candidates = [("a", full, 2), ("b", full, 1)];
        let picked = pick(candidates.iter().map(|(n, s, r)| (*n, *s, *r)));
        assert_eq!(picked.map(|p| p.0), Some("b"));
        let all_full = [("a", full, 2)];
        assert!(pick(all_full.iter().map(|(n, s, r)| (*n, *s, *r))).is_none());
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
