//! Key names. Every key of a run carries the hash tag `{run:<id>}`, so that
//! a run lives in one Redis Cluster slot.

pub const READY: &str = "weft:queue:ready";
pub const DELAYED: &str = "weft:queue:delayed";
pub const GROUP: &str = "workers";
pub const TENANTS: &str = "weft:tenants";
pub const KEYS: &str = "weft:keys";
pub const NODES: &str = "weft:nodes";
pub const EVENTS_PATTERN: &str = "weft:events:*";
/// Where the scripts publish the id of a run that ended while steps of it ran.
pub const CANCEL: &str = "weft:cancel";

/// Where the scripts publish a queue that got ready work after it had none.
pub const WAKE: &str = "weft:flow:wake";
/// The queues an admin declared (`default` always exists).
pub const QUEUES: &str = "weft:queues";

/// A tenant's share (`w` weight, `cap` concurrent_steps) and `run`, the
/// attempts of it running now; read by the `take` script.
pub fn flow_tenant(tenant: &str) -> String {
    format!("weft:flow:tenant:{tenant}")
}

/// The rate limits with waiting tasks (`tenant|name`), by when to look again.
pub const RATE_DUE: &str = "weft:flow:rl:due";

/// A tenant's rate limits: name -> `{"name","per_second","burst"}`.
pub fn rate_limits(tenant: &str) -> String {
    format!("weft:ratelimits:{tenant}")
}

pub fn run(id: &str) -> String {
    format!("weft:{{run:{id}}}:run")
}

pub fn steps(id: &str) -> String {
    format!("weft:{{run:{id}}}:steps")
}

/// The items of a run's for_each steps.
pub fn items(id: &str) -> String {
    format!("weft:{{run:{id}}}:items")
}

pub fn active(tenant: &str) -> String {
    format!("weft:tenant:{tenant}:active")
}

/// The tenant's run ids, all of score 0, so ordered as ids are: by creation time.
pub fn tenant_runs(tenant: &str) -> String {
    format!("weft:tenant:{tenant}:runs")
}

pub fn idempotency(tenant: &str, key: &str) -> String {
    format!("weft:tenant:{tenant}:idem:{key}")
}

/// The tenant's secrets: name -> the sealed value.
pub fn secrets(tenant: &str) -> String {
    format!("weft:tenant:{tenant}:secrets")
}

/// When each of the tenant's secrets was set: name -> milliseconds.
pub fn secret_times(tenant: &str) -> String {
    format!("weft:tenant:{tenant}:secret-times")
}

pub fn blob(digest: &str) -> String {
    format!("weft:blob:{digest}")
}

pub fn versions(tenant: &str, name: &str) -> String {
    format!("weft:registry:{tenant}:{name}")
}

pub fn components(tenant: &str) -> String {
    format!("weft:registry:{tenant}")
}

pub fn node(id: &str) -> String {
    format!("weft:node:{id}")
}

/// A tenant's schedules: name -> the schedule's JSON record. The schedule
/// keys share the hash tag `{schedules}`, so that one script changes a
/// schedule and the due set together.
pub fn schedules(tenant: &str) -> String {
    format!("weft:{{schedules}}:t:{tenant}")
}

/// The schedules not paused (`tenant|name`), by when their next tick is due.
pub const SCHEDULES_DUE: &str = "weft:{schedules}:due";
