//! Schedules in Redis: each tenant's in a hash of JSON records, and the due
//! ones in one sorted set by next tick. A change is one script, applied only
//! over the version it was made from.

use super::{RedisBackend, corrupt, json, keys, unavailable};
use crate::backend::{BackendError, Schedule};
use crate::scheduler::clock::Millis;

/// KEYS: the tenant's schedules, the due set. ARGV: name, record, next tick
/// (-1: none), due member, the version the stored record must have (-1: no
/// record may be stored). 1 when stored.
const PUT: &str = r"
local old = redis.call('HGET', KEYS[1], ARGV[1])
local expected = tonumber(ARGV[5])
if expected < 0 then
  if old then return 0 end
else
  if not old or cjson.decode(old).version ~= expected then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if tonumber(ARGV[3]) >= 0 then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
else
  redis.call('ZREM', KEYS[2], ARGV[4])
end
return 1
";

fn member(tenant: &str, name: &str) -> String {
    format!("{tenant}|{name}")
}

fn parse(text: &str) -> Result<Schedule, BackendError> {
    serde_json::from_str(text).map_err(|e| corrupt(format!("schedule: {e}")))
}

impl RedisBackend {
    /// Stores `schedule` over the stored version `expected` (none: over no record).
    pub(super) async fn put_schedule_now(
        &self,
        tenant: &str,
        schedule: &Schedule,
        expected: Option<u64>,
    ) -> Result<bool, BackendError> {
        static PUT_SCRIPT: std::sync::LazyLock<redis::Script> =
            std::sync::LazyLock::new(|| redis::Script::new(&format!("#!lua\n{PUT}")));
        let stored: i64 = PUT_SCRIPT
            .key(keys::schedules(tenant))
            .key(keys::SCHEDULES_DUE)
            .arg(&schedule.name)
            .arg(json(schedule))
            .arg(schedule.next_tick.map_or(-1, |t| t as i64))
            .arg(member(tenant, &schedule.name))
            .arg(expected.map_or(-1, |v| v as i64))
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(stored == 1)
    }

    pub(super) async fn schedules_now(&self, tenant: &str) -> Result<Vec<Schedule>, BackendError> {
        let all: Vec<String> = redis::cmd("HVALS")
            .arg(keys::schedules(tenant))
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let mut schedules = all
            .iter()
            .map(|s| parse(s))
            .collect::<Result<Vec<_>, _>>()?;
        schedules.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(schedules)
    }

    pub(super) async fn schedule_now(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Option<Schedule>, BackendError> {
        let text: Option<String> = redis::cmd("HGET")
            .arg(keys::schedules(tenant))
            .arg(name)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        text.as_deref().map(parse).transpose()
    }

    pub(super) async fn delete_schedule_now(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<bool, BackendError> {
        let (deleted, _): (i64, i64) = redis::pipe()
            .atomic()
            .hdel(keys::schedules(tenant), name)
            .zrem(keys::SCHEDULES_DUE, member(tenant, name))
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(deleted == 1)
    }

    pub(super) async fn due_schedules_now(
        &self,
        now: Millis,
        max: usize,
    ) -> Result<Vec<(String, Schedule)>, BackendError> {
        let due: Vec<String> = redis::cmd("ZRANGE")
            .arg(keys::SCHEDULES_DUE)
            .arg("-inf")
            .arg(now)
            .arg("BYSCORE")
            .arg("LIMIT")
            .arg(0)
            .arg(max)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        let mut owners = Vec::with_capacity(due.len());
        for member in &due {
            let Some((tenant, name)) = member.split_once('|') else {
                return Err(corrupt(format!("due schedule {member:?}")));
            };
            pipe.hget(keys::schedules(tenant), name);
            owners.push(tenant.to_string());
        }
        let records: Vec<Option<String>> = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let mut schedules = Vec::with_capacity(records.len());
        for (tenant, record) in owners.into_iter().zip(records) {
            // Deleted since the due set was read.
            if let Some(record) = record {
                schedules.push((tenant, parse(&record)?));
            }
        }
        Ok(schedules)
    }
}
