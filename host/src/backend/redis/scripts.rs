//! The Lua scripts of the Redis backend: every transition of a run is one
//! script, so that it happens whole or not at all.
//!
//! Keys of run R (all in one Redis Cluster slot):
//! - `weft:{run:R}:run`, a hash: `spec`, `tenant`, `status`, `created_at`,
//!   `started_at`, `finished_at`, `output`, `error`, `remaining` (steps not
//!   yet succeeded), `n` (steps), `leases` (lease counter).
//! - `weft:{run:R}:steps`, a hash with fields per step i: `s<i>` status,
//!   `a<i>` attempts, `l<i>` lease, `w<i>` dependencies not yet succeeded,
//!   `d<i>` dependents (comma separated), `i<i>` id, `e<i>` error (JSON),
//!   `t<i>` started at, `f<i>` finished at, `g<i>` logs (JSON), `o<i>` output (JSON),
//!   `r<i>` when it was last claimed, `c<i>` how many times its output was
//!   committed (never more than once: operators and tests can check),
//!   `v<i>` deliveries of the attempt holding it; and `b`, the bytes the run
//!   stores (its input, outputs, errors and logs), counted against `run_bytes`.
//! - The run hash also keeps `retention` (ms) and `idem` (its idempotency key).
//!
//! Events are published on `weft:events:{run:R}` as JSON with `at` in
//! milliseconds.

/// Functions every script starts with.
const PRELUDE: &str = r#"
local function terminal(s)
  return s == 'succeeded' or s == 'failed' or s == 'cancelled'
end

local function channel(run)
  return 'weft:events:{run:' .. run .. '}'
end

local function step_event(run, steps, i, status, attempt, now, err)
  local msg = '{"type":"step","run":' .. cjson.encode(run)
    .. ',"step":' .. cjson.encode(redis.call('HGET', steps, 'i' .. i))
    .. ',"status":"' .. status .. '","attempt":' .. attempt .. ',"at":' .. now
  if err and err ~= '' then msg = msg .. ',"error":' .. err end
  redis.call('PUBLISH', channel(run), msg .. '}')
end

local function run_event(run, status, now)
  redis.call('PUBLISH', channel(run),
    '{"type":"run","run":' .. cjson.encode(run) .. ',"status":"' .. status .. '","at":' .. now .. '}')
end

-- Ends a run: steps not started are skipped, steps waiting for a retry and
-- running steps are cancelled. Returns the indexes of the running ones.
-- The run, its steps and its idempotency key are kept for the run's retention;
-- nodes running its steps are told on `weft:cancel`.
local function end_run(run_key, steps, active, run, status, now, err)
  local n = tonumber(redis.call('HGET', run_key, 'n'))
  local retention = redis.call('HGET', run_key, 'retention') or '86400000'
  local idem = redis.call('HGET', run_key, 'idem')
  local stopped = {}
  for j = 0, n - 1 do
    local s = redis.call('HGET', steps, 's' .. j)
    local a = tonumber(redis.call('HGET', steps, 'a' .. j))
    local next = nil
    if s == 'running' then
      next = 'cancelled'
      table.insert(stopped, j)
    elseif s == 'queued' and a > 0 then
      next = 'cancelled'
    elseif s == 'pending' or s == 'queued' then
      next = 'skipped'
    end
    if next then
      redis.call('HSET', steps, 's' .. j, next, 'f' .. j, now)
      step_event(run, steps, j, next, a, now, nil)
    end
  end
  redis.call('HSET', run_key, 'status', status, 'finished_at', now)
  if err then redis.call('HSET', run_key, 'error', err) end
  redis.call('DECR', active)
  redis.call('PEXPIRE', run_key, retention)
  redis.call('PEXPIRE', steps, retention)
  if idem then redis.call('PEXPIRE', idem, retention) end
  run_event(run, status, now)
  if #stopped > 0 then redis.call('PUBLISH', 'weft:cancel', run) end
  return stopped
end
"#;

/// Creates a run unless its idempotency key is known or the tenant is at its
/// limit of unfinished runs.
///
/// KEYS: run, steps, ready stream, tenant's active counter, idempotency key
/// ARGV: run id, spec JSON, tenant, now, max active, has idempotency key (0/1),
/// fingerprint, retention (ms), step count, stored bytes of the input, then per step:
/// id, dependency count, dependents (comma separated)
/// The idempotency key lives as long as its run: it expires with it.
/// Returns `{'created'}`, `{'existing', '<fingerprint> <run>'}` or `{'limit', active}`.
const CREATE: &str = r#"
local run_key, steps, ready, active, idem = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local run, now, n = ARGV[1], ARGV[4], tonumber(ARGV[9])
if ARGV[6] == '1' then
  local seen = redis.call('GET', idem)
  if seen then return {'existing', seen} end
end
local count = tonumber(redis.call('GET', active) or '0')
if count >= tonumber(ARGV[5]) then return {'limit', tostring(count)} end
redis.call('INCR', active)
redis.call('HSET', run_key, 'spec', ARGV[2], 'tenant', ARGV[3], 'status', 'queued',
  'created_at', now, 'remaining', n, 'n', n, 'leases', 0, 'retention', ARGV[8])
redis.call('HSET', steps, 'b', ARGV[10])
if ARGV[6] == '1' then redis.call('HSET', run_key, 'idem', idem) end
for i = 0, n - 1 do
  local base = 11 + 3 * i
  local deps = tonumber(ARGV[base + 1])
  local status = 'pending'
  if deps == 0 then status = 'queued' end
  redis.call('HSET', steps, 's' .. i, status, 'a' .. i, 0, 'l' .. i, 0, 'w' .. i, deps,
    'd' .. i, ARGV[base + 2], 'i' .. i, ARGV[base])
  if deps == 0 then
    redis.call('XADD', ready, '*', 'r', run, 'k', 's', 'i', i, 'a', 1)
  end
end
if ARGV[6] == '1' then
  redis.call('SET', idem, ARGV[7] .. ' ' .. run)
end
return {'created'}
"#;

/// Claims tasks: for each, checks it is current, marks the step running with
/// a new lease, and returns what the attempt needs. Many claims go in one call.
///
/// KEYS: run and steps of each claim
/// ARGV: now, claim count, then per claim: kind (`s` or `f`), index, attempt,
/// most deliveries of one attempt, count of reads, the indexes of the steps
/// whose outputs the step reads
/// Returns per claim `{'stale'}`, `{'step', lease, '' or 'over' (delivered
/// more often than allowed), started run (0/1), outputs...}` or
/// `{'finalize', '', outputs of every step...}`.
/// `v<i>` counts the deliveries of the attempt that holds step i.
const CLAIM: &str = r#"
local function claim_one(run_key, steps, kind, i, attempt, max_deliveries, now, reads)
  local status = redis.call('HGET', run_key, 'status')
  if not status or terminal(status) then return {'stale'} end
  local run = string.sub(run_key, 11, -6)
  if kind == 'f' then
    if redis.call('HGET', run_key, 'remaining') ~= '0' then return {'stale'} end
    local n = tonumber(redis.call('HGET', run_key, 'n'))
    local out = {'finalize', ''}
    for j = 0, n - 1 do
      table.insert(out, redis.call('HGET', steps, 'o' .. j) or '')
    end
    return out
  end
  local sa = redis.call('HMGET', steps, 's' .. i, 'a' .. i)
  local s, a = sa[1], tonumber(sa[2])
  local over = ''
  if s == 'queued' and attempt == a + 1 then
    redis.call('HSET', steps, 's' .. i, 'running', 'a' .. i, attempt, 'v' .. i, 1)
    redis.call('HSETNX', steps, 't' .. i, now)
  elseif s == 'running' and attempt == a then
    -- Delivered again: the node that held it is gone.
    if redis.call('HINCRBY', steps, 'v' .. i, 1) > max_deliveries then over = 'over' end
  else
    return {'stale'}
  end
  local lease = redis.call('HINCRBY', run_key, 'leases', 1)
  redis.call('HSET', steps, 'l' .. i, lease, 'r' .. i, now)
  local started = 0
  if status == 'queued' then
    redis.call('HSET', run_key, 'status', 'running', 'started_at', now)
    run_event(run, 'running', now)
    started = 1
  end
  step_event(run, steps, i, 'running', attempt, now, nil)
  local out = {'step', lease, over, started}
  for _, d in ipairs(reads) do
    table.insert(out, redis.call('HGET', steps, 'o' .. d) or '')
  end
  return out
end

local now, count, pos = ARGV[1], tonumber(ARGV[2]), 3
local results = {}
for c = 1, count do
  local nreads = tonumber(ARGV[pos + 4])
  local reads = {}
  for r = 1, nreads do reads[r] = ARGV[pos + 4 + r] end
  results[c] = claim_one(KEYS[2 * c - 1], KEYS[2 * c], ARGV[pos], ARGV[pos + 1],
    tonumber(ARGV[pos + 2]), tonumber(ARGV[pos + 3]), now, reads)
  pos = pos + 5 + nreads
end
return results
"#;

/// Records outcomes of attempts holding a lease. Many commits go in one call.
///
/// KEYS: ready stream, delayed set, then run, steps and the tenant's active
/// counter of each commit
/// ARGV: group, commit count, then per commit: index, lease, outcome (`ok`,
/// `retry`, `fail`), output or error JSON, logs JSON, now, due (retry),
/// stored bytes of the outcome, the run's `run_bytes`, run error JSON (fail),
/// the stream entry of the attempt's delivery ('' if unknown)
/// An outcome that would take the run's stored bytes past `run_bytes` is
/// recorded as the failure `run_too_large` instead (`policy::over_run_bytes`).
/// Returns per commit `{applied (0/1), retrying (0/1), run ended ('' or
/// status), delivery acknowledged (0/1), stopped steps...}`.
const COMMIT: &str = r#"
local ready, delayed, group = KEYS[1], KEYS[2], ARGV[1]

local function commit_one(run_key, steps, active, i, lease, outcome, payload, logs, now, due, bytes, limit, run_error, entry)
  -- Acknowledges the delivery with the transition: the task is done.
  local function ack()
    if entry == '' then return 0 end
    redis.call('XACK', ready, group, entry)
    redis.call('XDEL', ready, entry)
    return 1
  end
  local status = redis.call('HGET', run_key, 'status')
  if not status or terminal(status) then return {0, 0, '', ack()} end
  local sl = redis.call('HMGET', steps, 's' .. i, 'l' .. i, 'a' .. i, 'd' .. i, 'b')
  if sl[1] ~= 'running' or sl[2] ~= lease then
    -- Superseded: the delivery may belong to another node now.
    return {0, 0, '', 0}
  end
  local run = string.sub(run_key, 11, -6)
  local attempt = tonumber(sl[3])
  -- The run's stored bytes live in the steps hash (`b`), read above and
  -- written with the step's own fields below: the budget costs no call.
  local used = tonumber(sl[5] or '0') + tonumber(bytes)
  if used > tonumber(limit) then
    used = used - tonumber(bytes)
    local id = redis.call('HGET', steps, 'i' .. i)
    local message = 'the run would store more than its run_bytes (' .. limit .. ' bytes)'
    outcome, logs = 'fail', '[]'
    payload = cjson.encode({code = 'run_too_large', message = message, retryable = false})
    run_error = cjson.encode({code = 'run_too_large', step = id,
      message = 'step `' .. id .. '` failed: ' .. message})
  end
  if outcome == 'ok' then
    redis.call('HSET', steps, 's' .. i, 'succeeded', 'o' .. i, payload, 'g' .. i, logs, 'f' .. i, now, 'b', used)
    redis.call('HDEL', steps, 'e' .. i)
    redis.call('HINCRBY', steps, 'c' .. i, 1)
    step_event(run, steps, i, 'succeeded', attempt, now, nil)
    local remaining = redis.call('HINCRBY', run_key, 'remaining', -1)
    for d in string.gmatch(sl[4], '[^,]+') do
      local waiting = redis.call('HINCRBY', steps, 'w' .. d, -1)
      if waiting == 0 and redis.call('HGET', steps, 's' .. d) == 'pending' then
        redis.call('HSET', steps, 's' .. d, 'queued')
        redis.call('XADD', ready, '*', 'r', run, 'k', 's', 'i', d, 'a', 1)
        step_event(run, steps, d, 'queued', 0, now, nil)
      end
    end
    if remaining == 0 then
      redis.call('XADD', ready, '*', 'r', run, 'k', 'f', 'i', 0, 'a', 0)
    end
    return {1, 0, '', ack()}
  elseif outcome == 'retry' then
    redis.call('HSET', steps, 's' .. i, 'queued', 'e' .. i, payload, 'g' .. i, logs, 'b', used)
    redis.call('ZADD', delayed, due, run .. '|' .. i .. '|' .. (attempt + 1))
    step_event(run, steps, i, 'queued', attempt, now, payload)
    return {1, 1, '', ack()}
  end
  redis.call('HSET', steps, 's' .. i, 'failed', 'e' .. i, payload, 'g' .. i, logs, 'f' .. i, now, 'b', used)
  step_event(run, steps, i, 'failed', attempt, now, payload)
  local stopped = end_run(run_key, steps, active, run, 'failed', now, run_error)
  local out = {1, 0, 'failed', ack()}
  for _, j in ipairs(stopped) do table.insert(out, j) end
  return out
end

local count, pos = tonumber(ARGV[2]), 3
local results = {}
for c = 1, count do
  local k = 3 * c
  results[c] = commit_one(KEYS[k], KEYS[k + 1], KEYS[k + 2], ARGV[pos], ARGV[pos + 1],
    ARGV[pos + 2], ARGV[pos + 3], ARGV[pos + 4], ARGV[pos + 5], ARGV[pos + 6],
    ARGV[pos + 7], ARGV[pos + 8], ARGV[pos + 9], ARGV[pos + 10])
  pos = pos + 11
end
return results
"#;

/// Ends a run whose steps all succeeded.
///
/// KEYS: run, steps, tenant's active counter
/// ARGV: `ok` or `err`, output JSON or run error JSON, now
/// Returns 1 when the run ended now.
const FINISH: &str = r#"
local run_key, steps, active = KEYS[1], KEYS[2], KEYS[3]
local status = redis.call('HGET', run_key, 'status')
if not status or terminal(status) or redis.call('HGET', run_key, 'remaining') ~= '0' then
  return 0
end
local run = string.sub(run_key, 11, -6)
if ARGV[1] == 'ok' then
  redis.call('HSET', run_key, 'output', ARGV[2])
  end_run(run_key, steps, active, run, 'succeeded', ARGV[3], nil)
else
  end_run(run_key, steps, active, run, 'failed', ARGV[3], ARGV[2])
end
return 1
"#;

/// Cancels a run of a tenant.
///
/// KEYS: run, steps, tenant's active counter
/// ARGV: tenant, now
/// Returns `{'missing'}`, `{'ended', status}` or `{'cancelled', stopped steps...}`.
const CANCEL: &str = r#"
local run_key, steps, active = KEYS[1], KEYS[2], KEYS[3]
local status = redis.call('HGET', run_key, 'status')
if not status or redis.call('HGET', run_key, 'tenant') ~= ARGV[1] then return {'missing'} end
if terminal(status) then return {'ended', status} end
local run = string.sub(run_key, 11, -6)
local stopped = end_run(run_key, steps, active, run, 'cancelled', ARGV[2], nil)
local out = {'cancelled'}
for _, j in ipairs(stopped) do table.insert(out, j) end
return out
"#;

/// Moves retries that are due from the delayed set to the ready stream.
///
/// KEYS: delayed set, ready stream
/// ARGV: now, most to move
/// Returns `{moved, due time of the next one or -1}`.
const PROMOTE: &str = r#"
local delayed, ready = KEYS[1], KEYS[2]
local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  local run, i, a = string.match(member, '^(.*)|(%d+)|(%d+)$')
  if run then
    redis.call('XADD', ready, '*', 'r', run, 'k', 's', 'i', i, 'a', a)
  end
  redis.call('ZREM', delayed, member)
end
local next = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
if #next == 0 then return {#due, -1} end
return {#due, tonumber(next[2])}
"#;

/// Acknowledges and deletes the entries this node still owns (one reclaimed
/// by another node after the visibility timeout is left to that node).
///
/// KEYS: ready stream
/// ARGV: group, consumer, entry ids...
const ACK: &str = r#"
local acked = 0
for k = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[k], ARGV[k], 1)
  if #p == 1 and p[1][2] == ARGV[2] then
    acked = acked + redis.call('XACK', KEYS[1], ARGV[1], ARGV[k])
    redis.call('XDEL', KEYS[1], ARGV[k])
  end
end
return acked
"#;

/// Hands back the entries a consumer holds: each is queued again as a new
/// entry and the old one acknowledged and deleted; then the consumer is removed.
///
/// KEYS: ready stream
/// ARGV: group, consumer
/// Returns how many entries were handed back.
const RELEASE: &str = r#"
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local released = 0
while true do
  local pending = redis.call('XPENDING', stream, group, '-', '+', 100, consumer)
  if #pending == 0 then break end
  for _, p in ipairs(pending) do
    local id = p[1]
    local entry = redis.call('XRANGE', stream, id, id)
    if #entry == 1 then
      redis.call('XADD', stream, '*', unpack(entry[1][2]))
      released = released + 1
    end
    redis.call('XACK', stream, group, id)
    redis.call('XDEL', stream, id)
  end
end
redis.call('XGROUP', 'DELCONSUMER', stream, group, consumer)
return released
"#;

/// The scripts, loaded once per backend.
pub struct Scripts {
    pub create: redis::Script,
    pub claim: redis::Script,
    pub commit: redis::Script,
    pub finish: redis::Script,
    pub cancel: redis::Script,
    pub promote: redis::Script,
    pub ack: redis::Script,
    pub release: redis::Script,
}

impl Scripts {
    pub fn new() -> Self {
        // The shebang makes Redis refuse a script that writes before it starts
        // (OOM, READONLY, ...), instead of at its first write: no transition is
        // ever applied in part.
        let with_prelude = |body: &str| redis::Script::new(&format!("#!lua\n{PRELUDE}\n{body}"));
        let alone = |body: &str| redis::Script::new(&format!("#!lua\n{body}"));
        Self {
            create: with_prelude(CREATE),
            claim: with_prelude(CLAIM),
            commit: with_prelude(COMMIT),
            finish: with_prelude(FINISH),
            cancel: with_prelude(CANCEL),
            promote: alone(PROMOTE),
            ack: alone(ACK),
            release: alone(RELEASE),
        }
    }
}
