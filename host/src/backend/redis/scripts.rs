//! The Lua scripts of the Redis backend: every transition of a run is one
//! script, so that it happens whole or not at all.
//!
//! Keys of run R (all in one Redis Cluster slot):
//! - `weft:{run:R}:run`, a hash: `spec`, `tenant`, `status`, `created_at`,
//!   `started_at`, `finished_at`, `output`, `error`, `remaining` (steps not
//!   yet ended), `n` (steps), `leases` (lease counter).
//! - `weft:{run:R}:steps`, a hash with fields per step i: `s<i>` status,
//!   `a<i>` attempts, `l<i>` lease, `w<i>` dependencies not yet ended,
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

mod attempts;

use attempts::{CLAIM, COMMIT};

/// Functions every script starts with.
///
/// A "slot" names the fields of one attempt sequence: `i` for step i (in the
/// steps hash), `i.k` for item k of step i (in the items hash), `ci` for the
/// compensation of step i (in the steps hash). Fields of a slot: `s` status,
/// `a` attempts, `l` lease, `v` deliveries, `r` last claim, `t` started, `f`
/// finished, `o` output, `e` error, `g` logs; items also `x` (the item).
/// Per step also: `q<i>` when it ended among the run's steps, `rs<i>` why it
/// was skipped, `k<i>` a for_each step's max_concurrency, `n<i>` its item
/// count, `p<i>` items started, `z<i>` items ended, `ns<i>`, `nf<i>`,
/// `nr<i>` and `nc<i>` its items succeeded, failed, running and cancelled,
/// `fi<i>` the first 100 failed ones, `ev<i>` its last progress event,
/// `cp<i>` 1 when it has a compensation. The run hash also
/// keeps `ended` (steps ended), `items` (items expanded beyond one per step), `spr`
/// (steps_per_run), `rb` (run_bytes) and `comp` (1 when any step has a compensation).
/// Signals sent before a step took them are kept in the steps hash, per
/// name N: `qh:N` and `qt:N` the first kept and the next free number,
/// `qp:N:<n>` each payload; `qw:N` lists the steps that waited for N
/// (comma separated; those no longer waiting are passed over).
const PRELUDE: &str = r#"
-- Flow control (`scheduler::flow`): ready work waits per queue, tenant and
-- priority p in the list `weft:flow:<queue>:t:<tenant>:p<p>` of tasks
-- `run|kind|i|a|item|time`, first come first; the sorted set
-- `weft:flow:<queue>:t:<tenant>` holds the priorities with work (score 9 - p),
-- and `weft:flow:<queue>:tenants` the tenants with work by virtual time.
-- Where a run's tasks go is read once per script.
local placed, entered = {}, {}

-- A task as the ready lists keep it: `run|kind|i|a|item|time`, and
-- `|key` after it for one that holds a concurrency key.
local function member(run, kind, i, a, item, now, key)
  local m = run .. '|' .. kind .. '|' .. i .. '|' .. a .. '|' .. (item or '') .. '|' .. now
  if key then m = m .. '|' .. key end
  return m
end

-- The parts of a `member`: run, kind, i, a, item (nil for none), time and
-- key ('' for none); nil for text that is not one.
local function parse_member(m)
  local run, kind, i, a, item, at, key = string.match(m, '^(.-)|(%a)|(%d+)|(%d+)|(%d*)|(%d+)|?(.*)$')
  if item == '' then item = nil end
  return run, kind, i, a, item, at, key
end

local function place_of(run)
  local p = placed[run]
  if p then return p end
  local f = redis.call('HMGET', 'weft:{run:' .. run .. '}:run', 'tenant', 'pri', 'qs', 'rls', 'cks')
  p = {f[1] or '', tonumber(f[2] or '5'), f[3] == '1', f[4] == '1', f[5] == '1'}
  placed[run] = p
  return p
end

-- `tenant` has ready work in `queue`: a tenant that had none enters the
-- rotation (at the floor) and nodes waiting for work are woken; once per
-- script and tenant.
local function enter(queue, tenant)
  local rotation = 'weft:flow:' .. queue .. ':tenants'
  if entered[rotation .. ' ' .. tenant] then return end
  entered[rotation .. ' ' .. tenant] = true
  if redis.call('ZADD', rotation, 'NX', 0, tenant) == 1 then
    redis.call('PUBLISH', 'weft:flow:wake', queue)
  end
end

-- Task `kind` (`s` step, `e` item, `c` compensation, `f` finalisation) of
-- run `run` is ready: to the end of its tenant's work of its priority; a
-- task holding a concurrency key carries it (`|key` at the end), so that
-- its delivery gives it back.
local function push_task(run, kind, i, a, item, now, key)
  local p = place_of(run)
  local queue = 'default'
  if p[3] and kind ~= 'f' then
    queue = redis.call('HGET', 'weft:{run:' .. run .. '}:steps', 'qu' .. i) or 'default'
  end
  local tasks = 'weft:flow:' .. queue .. ':t:' .. p[1]
  if redis.call('RPUSH', tasks .. ':p' .. p[2], member(run, kind, i, a, item, now, key)) == 1 then
    redis.call('ZADD', tasks, 9 - p[2], p[2])
  end
  enter(queue, p[1])
end

-- A task past its rate limit takes a slot of its concurrency key
-- (`flow::may_hold`; `weft:flow:ckhold:<tenant>` counts the holders per
-- key) and is ready, or waits for one in `weft:flow:ckwait:<tenant>:<key>`.
local function push_ready(run, kind, i, a, item, now)
  local p = place_of(run)
  if p[5] and (kind == 's' or kind == 'e') then
    local c = redis.call('HMGET', 'weft:{run:' .. run .. '}:steps', 'ck' .. i, 'cl' .. i)
    if c[1] then
      local hold = 'weft:flow:ckhold:' .. p[1]
      if redis.call('HINCRBY', hold, c[1], 1) > math.max(tonumber(c[2] or '1'), 1) then
        redis.call('HINCRBY', hold, c[1], -1)
        redis.call('RPUSH', 'weft:flow:ckwait:' .. p[1] .. ':' .. c[1], member(run, kind, i, a, item, now))
        return
      end
      push_task(run, kind, i, a, item, now, c[1])
      return
    end
  end
  push_task(run, kind, i, a, item, now, nil)
end

-- A rate-limited task waits for its limit's tokens in
-- `weft:flow:rl:<tenant>:<name>`; `weft:flow:rl:due` holds each limit with
-- waiting tasks by when to look at it again (`flow::release`, in PROMOTE).
local function wait_for_rate(tenant, name, member)
  redis.call('RPUSH', 'weft:flow:rl:' .. tenant .. ':' .. name, member)
  redis.call('ZADD', 'weft:flow:rl:due', 'NX', 0, tenant .. '|' .. name)
end

-- A task is ready: it waits for its step's rate limit if it has one (a
-- step's own attempts and its items'), else into its tenant's ready work.
local function enqueue(run, kind, i, a, item, now)
  local p = place_of(run)
  if p[4] and (kind == 's' or kind == 'e') then
    local name = redis.call('HGET', 'weft:{run:' .. run .. '}:steps', 'rl' .. i)
    if name then
      wait_for_rate(p[1], name, member(run, kind, i, a, item, now))
      return
    end
  end
  push_ready(run, kind, i, a, item, now)
end

-- Acknowledges and deletes a delivery (`id`, or `id`, tenant and the
-- concurrency key it holds, separated by \x1f); its tenant runs one
-- attempt fewer, counted down by `released` at the end of the script, and
-- its key passes to the next task waiting for it. Returns 1 when this node
-- still held it.
local acked_by = {}
local function ack_entry(stream, group, entry)
  local id, tenant, key = string.match(entry, '^([^\31]+)\31([^\31]*)\31?(.*)$')
  if not id then id = entry end
  local acked = redis.call('XACK', stream, group, id)
  redis.call('XDEL', stream, id)
  if acked == 1 and tenant then acked_by[tenant] = (acked_by[tenant] or 0) + 1 end
  if acked == 1 and key and key ~= '' then
    local waiting = redis.call('LPOP', 'weft:flow:ckwait:' .. tenant .. ':' .. key)
    local run, kind, i, a, item, at
    if waiting then run, kind, i, a, item, at = parse_member(waiting) end
    if run then
      push_task(run, kind, i, a, item, at, key)
    else
      local hold = 'weft:flow:ckhold:' .. tenant
      if redis.call('HINCRBY', hold, key, -1) <= 0 then redis.call('HDEL', hold, key) end
    end
  end
  return acked
end

-- Counts down the running attempts of the tenants whose deliveries `ack_entry` acknowledged.
local function released()
  for tenant, n in pairs(acked_by) do
    local key = 'weft:flow:tenant:' .. tenant
    if redis.call('HINCRBY', key, 'run', -n) < 0 then redis.call('HSET', key, 'run', 0) end
  end
  acked_by = {}
end

local function terminal(s)
  return s == 'succeeded' or s == 'failed' or s == 'cancelled'
end

local function channel(run)
  return 'weft:events:{run:' .. run .. '}'
end

-- An attempt of step i, or of its compensation (`kind`), changed status.
local function attempt_event(kind, run, steps, i, status, attempt, now, err)
  local msg = '{"type":"' .. kind .. '","run":' .. cjson.encode(run)
    .. ',"step":' .. cjson.encode(redis.call('HGET', steps, 'i' .. i))
    .. ',"status":"' .. status .. '","attempt":' .. attempt .. ',"at":' .. now
  if err and err ~= '' then msg = msg .. ',"error":' .. err end
  redis.call('PUBLISH', channel(run), msg .. '}')
end

local function step_event(run, steps, i, status, attempt, now, err)
  attempt_event('step', run, steps, i, status, attempt, now, err)
end

local function compensation_event(run, steps, i, status, attempt, now, err)
  attempt_event('compensation', run, steps, i, status, attempt, now, err)
end

local function items_event(run, steps, items, i, now)
  local c = redis.call('HMGET', steps, 'n' .. i, 'ns' .. i, 'nf' .. i)
  redis.call('PUBLISH', channel(run), '{"type":"items","run":' .. cjson.encode(run)
    .. ',"step":' .. cjson.encode(redis.call('HGET', steps, 'i' .. i))
    .. ',"total":' .. (c[1] or 0) .. ',"succeeded":' .. (c[2] or 0) .. ',"failed":' .. (c[3] or 0)
    .. ',"at":' .. now .. '}')
end

local function run_event(run, status, now)
  redis.call('PUBLISH', channel(run),
    '{"type":"run","run":' .. cjson.encode(run) .. ',"status":"' .. status .. '","at":' .. now .. '}')
end

-- Step i ended (succeeded, or else skipped or failed with on_error
-- continue): in a run with compensations it is numbered; its dependents
-- that wait on nothing more are queued (their gate decides at their claim);
-- the last one queues finalisation. `dependents` is its `d` field when the
-- caller read it already; a dependent of a step that did not succeed is
-- marked (`x`), so that its claim tells how its dependencies ended.
local function step_ended(run_key, steps, ready, run, i, now, succeeded, dependents, numbered)
  if numbered then
    redis.call('HSET', steps, 'q' .. i, redis.call('HINCRBY', run_key, 'ended', 1))
  end
  local remaining = redis.call('HINCRBY', run_key, 'remaining', -1)
  dependents = dependents or redis.call('HGET', steps, 'd' .. i) or ''
  for d in string.gmatch(dependents, '[^,]+') do
    if not succeeded then redis.call('HSET', steps, 'x' .. d, 1) end
    local waiting = redis.call('HINCRBY', steps, 'w' .. d, -1)
    if waiting == 0 and redis.call('HGET', steps, 's' .. d) == 'pending' then
      redis.call('HSET', steps, 's' .. d, 'queued')
      enqueue(run, 's', d, 1, nil, now)
      step_event(run, steps, d, 'queued', 0, now, nil)
    end
  end
  if remaining == 0 then
    enqueue(run, 'f', 0, 0, nil, now)
  end
end

-- Step i succeeded with `output`: recorded with the run's stored bytes
-- `used`, then it ended.
local function step_succeeded(run_key, steps, ready, run, i, output, logs, attempt, now, used, dependents, numbered)
  redis.call('HSET', steps, 'b', used, 's' .. i, 'succeeded', 'o' .. i, output, 'g' .. i, logs, 'f' .. i, now)
  redis.call('HDEL', steps, 'e' .. i)
  redis.call('HINCRBY', steps, 'c' .. i, 1)
  step_event(run, steps, i, 'succeeded', attempt, now, nil)
  step_ended(run_key, steps, ready, run, i, now, true, dependents, numbered)
end

-- Takes the oldest kept signal `name`: its payload, or nil when none is kept.
local function take_signal(steps, name)
  local ht = redis.call('HMGET', steps, 'qh:' .. name, 'qt:' .. name)
  local h, t = tonumber(ht[1] or '0'), tonumber(ht[2] or '0')
  if t <= h then return nil end
  local field = 'qp:' .. name .. ':' .. h
  local payload = redis.call('HGET', steps, field)
  redis.call('HDEL', steps, field)
  if h + 1 == t then
    redis.call('HDEL', steps, 'qh:' .. name, 'qt:' .. name)
  else
    redis.call('HSET', steps, 'qh:' .. name, h + 1)
  end
  return payload
end

-- Starts as many items of for_each step i as keep its window full
-- (`rules::items_to_start`).
local function start_items(steps, items, ready, run, i, now)
  local c = redis.call('HMGET', steps, 'k' .. i, 'n' .. i, 'p' .. i, 'z' .. i)
  local max, total, started, ended = tonumber(c[1]), tonumber(c[2]), tonumber(c[3] or '0'), tonumber(c[4] or '0')
  local start = math.min(max - (started - ended), total - started)
  if start <= 0 then return end
  for k = started, started + start - 1 do
    local slot = i .. '.' .. k
    redis.call('HSET', items, 's' .. slot, 'queued', 'a' .. slot, 0, 'l' .. slot, 0)
    enqueue(run, 'e', i, 1, k, now)
  end
  redis.call('HSET', steps, 'p' .. i, started + start)
end

-- The compensation to run next (`rules::next_compensation`): of the steps
-- that succeeded and have one not started, the one that ended last.
local function next_compensation(run_key, steps)
  if redis.call('HGET', run_key, 'comp') ~= '1' then return nil end
  local n = tonumber(redis.call('HGET', run_key, 'n'))
  local best, best_seq = nil, -1
  for j = 0, n - 1 do
    local f = redis.call('HMGET', steps, 's' .. j, 'cp' .. j, 'q' .. j, 'sc' .. j)
    if f[1] == 'succeeded' and f[2] == '1' and not f[4] then
      local q = tonumber(f[3] or '0')
      if q > best_seq then best, best_seq = j, q end
    end
  end
  return best
end

local function start_compensation(steps, ready, run, i, now)
  local slot = 'c' .. i
  redis.call('HSET', steps, 's' .. slot, 'queued', 'a' .. slot, 0, 'l' .. slot, 0)
  enqueue(run, 'c', i, 1, nil, now)
  compensation_event(run, steps, i, 'queued', 0, now, nil)
end

-- Steps not started are skipped, steps waiting for a retry and running steps
-- (and the items of for_each steps) are cancelled. Returns the indexes of the
-- running ones.
local function stop_steps(run_key, steps, items, run, now)
  local n = tonumber(redis.call('HGET', run_key, 'n'))
  local stopped = {}
  for j = 0, n - 1 do
    local sa = redis.call('HMGET', steps, 's' .. j, 'a' .. j, 'p' .. j)
    local s, a = sa[1], tonumber(sa[2])
    for k = 0, tonumber(sa[3] or '0') - 1 do
      local slot = j .. '.' .. k
      local is = redis.call('HGET', items, 's' .. slot)
      if is == 'running' or is == 'queued' then
        redis.call('HSET', items, 's' .. slot, 'cancelled', 'f' .. slot, now)
        redis.call('HINCRBY', steps, 'nc' .. j, 1)
        if is == 'running' then redis.call('HINCRBY', steps, 'nr' .. j, -1) end
      end
    end
    local next = nil
    if s == 'running' then
      next = 'cancelled'
      table.insert(stopped, j)
    elseif s == 'waiting' then
      next = 'cancelled'
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
  return stopped
end

-- Ends a run with `status`. The run, its steps, its items and its
-- idempotency key are kept for the run's retention. A child run (`parent`,
-- `pstep` in the run hash) wakes its parent's step.
local function finish_run(run_key, steps, items, active, ready, run, status, now)
  local retention = redis.call('HGET', run_key, 'retention') or '86400000'
  local idem = redis.call('HGET', run_key, 'idem')
  redis.call('HSET', run_key, 'status', status, 'finished_at', now)
  local parent = redis.call('HMGET', run_key, 'parent', 'pstep')
  if parent[1] then
    -- A child run: its parent's sub-workflow step is woken to end with it.
    enqueue(parent[1], 's', parent[2], 1, nil, now)
  else
    redis.call('DECR', active)
  end
  redis.call('PEXPIRE', run_key, retention)
  redis.call('PEXPIRE', steps, retention)
  redis.call('PEXPIRE', items, retention)
  if idem then redis.call('PEXPIRE', idem, retention) end
  run_event(run, status, now)
end

-- Stops a run that failed (err) or was cancelled (no err): its steps stop,
-- then its compensations run, or it ends. Nodes running its attempts are
-- told on `weft:cancel`. Returns the indexes of the steps that were running.
local function stop_run(run_key, steps, items, active, ready, run, now, err)
  local stopped = stop_steps(run_key, steps, items, run, now)
  if err then redis.call('HSET', run_key, 'error', err) end
  local next = next_compensation(run_key, steps)
  if next then
    redis.call('HSET', run_key, 'status', 'compensating')
    start_compensation(steps, ready, run, next, now)
    run_event(run, 'compensating', now)
  else
    local status = 'cancelled'
    if redis.call('HEXISTS', run_key, 'error') == 1 then status = 'failed' end
    finish_run(run_key, steps, items, active, ready, run, status, now)
  end
  if #stopped > 0 then redis.call('PUBLISH', 'weft:cancel', run) end
  return stopped
end
"#;

/// Creates a run unless its idempotency key is known or the tenant is at its
/// limit of unfinished runs.
///
/// KEYS: run, steps, ready stream, tenant's active counter, idempotency key,
/// tenant's run index, delayed set
/// ARGV: run id, spec JSON, tenant, now, max active, has idempotency key (0/1),
/// fingerprint, retention (ms), step count, stored bytes of the input,
/// steps_per_run, any compensation (0/1), workflow name, parent run ('' for
/// none), run_bytes, the parent's sub-workflow step, priority, any step on
/// a queue of its own (0/1), when it starts (0: now), the count of the steps
/// hash's field/value arguments and those, the count of queues with first
/// steps, and per queue: its name, the count of its tasks and those
/// (`run|s|i|1||now`; for a run that starts later, delayed-set score/member
/// pairs)
/// The idempotency key lives as long as its run: it expires with it.
/// Returns `{'created'}`, `{'existing', '<fingerprint> <run>'}` or `{'limit', active}`.
const CREATE: &str = r#"
local run_key, steps, ready, active, idem, listed =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local run, now, n = ARGV[1], ARGV[4], tonumber(ARGV[9])
if ARGV[6] == '1' then
  local seen = redis.call('GET', idem)
  if seen then return {'existing', seen} end
end
local count = tonumber(redis.call('GET', active) or '0')
if count >= tonumber(ARGV[5]) then return {'limit', tostring(count)} end
-- A child run does not count against its tenant's concurrent_runs.
if ARGV[14] == '' then redis.call('INCR', active) end
redis.call('HSET', run_key, 'spec', ARGV[2], 'tenant', ARGV[3], 'status', 'queued',
  'created_at', now, 'remaining', n, 'n', n, 'leases', 0, 'retention', ARGV[8],
  'ended', 0, 'items', 0, 'spr', ARGV[11], 'comp', ARGV[12], 'workflow', ARGV[13], 'rb', ARGV[15],
  'pri', ARGV[17])
if ARGV[18] == '1' then redis.call('HSET', run_key, 'qs', 1) end
-- A run to start later is scheduled: its first steps wait in the delayed
-- set until its time, as retries do.
local start_at = tonumber(ARGV[19])
if start_at > 0 then redis.call('HSET', run_key, 'status', 'scheduled') end
if ARGV[14] ~= '' then redis.call('HSET', run_key, 'parent', ARGV[14], 'pstep', ARGV[16]) end
-- The listing index: this run in, and the oldest ids whose runs expired out.
redis.call('ZADD', listed, 0, run)
for _, old in ipairs(redis.call('ZRANGE', listed, '-', '+', 'BYLEX', 'LIMIT', 0, 2)) do
  if redis.call('EXISTS', 'weft:{run:' .. old .. '}:run') == 0 then redis.call('ZREM', listed, old) end
end
redis.call('HSET', steps, 'b', ARGV[10])
if ARGV[6] == '1' then redis.call('HSET', run_key, 'idem', idem) end
-- The steps' fields and the first steps' tasks come ready to write, and
-- are written a few thousand values a call: a run of 20,000 steps costs
-- Redis no work per step in Lua.
local function write(command, key, from, to)
  for at = from, to, 6000 do
    redis.call(command, key, unpack(ARGV, at, math.min(at + 5999, to)))
  end
end
local nfields = tonumber(ARGV[20])
write('HSET', steps, 21, 20 + nfields)
local pos = 21 + nfields
local p = place_of(run)
for _ = 1, tonumber(ARGV[pos]) do
  local queue, count = ARGV[pos + 1], tonumber(ARGV[pos + 2])
  local from, to = pos + 3, pos + 2 + count
  if count > 0 and start_at > 0 then
    write('ZADD', KEYS[7], from, to)
  elseif count > 0 then
    local tasks = 'weft:flow:' .. queue .. ':t:' .. p[1]
    local length = 0
    for at = from, to, 6000 do
      length = redis.call('RPUSH', tasks .. ':p' .. p[2], unpack(ARGV, at, math.min(at + 5999, to)))
    end
    if length == count then redis.call('ZADD', tasks, 9 - p[2], p[2]) end
    enter(queue, p[1])
  end
  pos = to
end
-- First steps with a rate limit or a concurrency key go through them
-- (rate limit name or '', step index pairs).
if ARGV[pos + 1] == '1' then redis.call('HSET', run_key, 'rls', 1) end
if ARGV[pos + 2] == '1' then redis.call('HSET', run_key, 'cks', 1) end
placed[run] = nil
local gated = tonumber(ARGV[pos + 3])
for k = 0, gated - 1 do
  local at = pos + 4 + 2 * k
  local i = ARGV[at + 1]
  if start_at > 0 then
    redis.call('ZADD', KEYS[7], start_at, run .. '|' .. i .. '|1')
  elseif ARGV[at] ~= '' then
    wait_for_rate(p[1], ARGV[at], run .. '|s|' .. i .. '|1||' .. now)
  else
    push_ready(run, 's', i, 1, nil, now)
  end
end
if ARGV[6] == '1' then
  redis.call('SET', idem, ARGV[7] .. ' ' .. run)
end
return {'created'}
"#;

/// Ends runs whose steps all ended: each with its output, or failed by an
/// error resolving it (then its compensations run first). Many finishes go
/// in one call.
///
/// KEYS: ready stream, then run, steps, tenant's active counter and items
/// of each finish
/// ARGV: group, finish count, then per finish: `ok` or `err`, output JSON or
/// run error JSON, now, the stream entry of the finalisation's delivery (''
/// if unknown)
/// The delivery is acknowledged with it: its task is done either way.
/// Returns per finish 1 when the run ended now (or its compensations started).
const FINISH: &str = r#"
local ready, group = KEYS[1], ARGV[1]
local function finish_one(run_key, steps, active, items, kind, payload, now, entry)
  if entry ~= '' then ack_entry(ready, group, entry) end
  local status = redis.call('HGET', run_key, 'status')
  if not status or terminal(status) or status == 'compensating'
    or redis.call('HGET', run_key, 'remaining') ~= '0' then
    return 0
  end
  local run = string.sub(run_key, 11, -6)
  if kind == 'ok' then
    redis.call('HSET', run_key, 'output', payload)
    finish_run(run_key, steps, items, active, ready, run, 'succeeded', now)
  else
    stop_run(run_key, steps, items, active, ready, run, now, payload)
  end
  return 1
end

local results = {}
for c = 1, tonumber(ARGV[2]) do
  local k, a = 4 * c - 2, 4 * c - 1
  results[c] = finish_one(KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3],
    ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3])
end
released()
return results
"#;

/// Cancels a run of a tenant.
///
/// KEYS: run, steps, tenant's active counter, items, ready stream
/// ARGV: tenant, now
/// Returns `{'missing'}`, `{'ended', status}` or `{'cancelled', status now, stopped steps...}`.
const CANCEL: &str = r#"
local run_key, steps, active, items, ready = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local status = redis.call('HGET', run_key, 'status')
if not status or redis.call('HGET', run_key, 'tenant') ~= ARGV[1] then return {'missing'} end
if terminal(status) then return {'ended', status} end
-- Already being undone: its compensations run to their end.
if status == 'compensating' then return {'cancelled', status} end
local run = string.sub(run_key, 11, -6)
local stopped = stop_run(run_key, steps, items, active, ready, run, ARGV[2], nil)
local out = {'cancelled', redis.call('HGET', run_key, 'status')}
for _, j in ipairs(stopped) do table.insert(out, j) end
return out
"#;

/// Sends a signal to a run of a tenant (`rules::signal_goes`): the waiting
/// step of lowest index that waits for it succeeds with its payload, or it
/// is kept for the next step that waits for it.
///
/// KEYS: run, steps, tenant's active counter, items, ready stream, delayed set
/// ARGV: tenant, name, payload JSON, its bytes, now, most kept per name
/// Returns `{'missing'}`, `{'finished', status}`, `{'too_large', run_bytes}`,
/// `{'full'}`, `{'delivered', step id}` or `{'kept', count}`.
const SIGNAL: &str = r#"
local run_key, steps, active, items, ready, delayed = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local name, payload, bytes, now = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local rs = redis.call('HMGET', run_key, 'status', 'tenant', 'rb', 'comp')
local status = rs[1]
if not status or rs[2] ~= ARGV[1] then return {'missing'} end
if terminal(status) or status == 'compensating' then return {'finished', status} end
local used = tonumber(redis.call('HGET', steps, 'b') or '0') + bytes
if rs[3] and used > tonumber(rs[3]) then return {'too_large', rs[3]} end
local run = string.sub(run_key, 11, -6)
local waiters = redis.call('HGET', steps, 'qw:' .. name)
local still = {}
for j in string.gmatch(waiters or '', '[^,]+') do
  if redis.call('HGET', steps, 's' .. j) == 'waiting' then table.insert(still, tonumber(j)) end
end
table.sort(still)
local best = table.remove(still, 1)
if #still > 0 then
  redis.call('HSET', steps, 'qw:' .. name, table.concat(still, ','))
elseif waiters then
  redis.call('HDEL', steps, 'qw:' .. name)
end
if best then
  local attempt = redis.call('HGET', steps, 'a' .. best)
  -- Its timeout will not be needed.
  redis.call('ZREM', delayed, run .. '|' .. best .. '|' .. attempt)
  step_succeeded(run_key, steps, ready, run, best, payload, '[]', attempt, now, used, nil, rs[4] == '1')
  return {'delivered', redis.call('HGET', steps, 'i' .. best)}
end
local ht = redis.call('HMGET', steps, 'qh:' .. name, 'qt:' .. name)
local h, t = tonumber(ht[1] or '0'), tonumber(ht[2] or '0')
if t - h >= tonumber(ARGV[6]) then return {'full'} end
redis.call('HSET', steps, 'qp:' .. name .. ':' .. t, payload, 'qt:' .. name, t + 1, 'qh:' .. name, h, 'b', used)
return {'kept', t + 1 - h}
"#;

/// Moves retries that are due from the delayed set to their tenants' ready work.
///
/// KEYS: delayed set
/// ARGV: now, most to move
/// Returns `{moved, due time of the next one or -1}`.
const PROMOTE: &str = r#"
local delayed, now = KEYS[1], ARGV[1]
local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
for _, due_member in ipairs(due) do
  -- `run|i|a` a step, `run|i|a|k` item k, `run|i|a|c` a compensation.
  local run, i, a, k = string.match(due_member, '^(.*)|(%d+)|(%d+)|(%w+)$')
  if run and k == 'c' then
    enqueue(run, 'c', i, a, nil, now)
  elseif run then
    enqueue(run, 'e', i, a, k, now)
  else
    run, i, a = string.match(due_member, '^(.*)|(%d+)|(%d+)$')
    if run then enqueue(run, 's', i, a, nil, now) end
  end
  redis.call('ZREM', delayed, due_member)
end
-- Rate limits with waiting tasks whose time has come (`flow::release`):
-- as many go as there are tokens; a limit no longer declared lets all go.
local rl_due = 'weft:flow:rl:due'
for _, key in ipairs(redis.call('ZRANGEBYSCORE', rl_due, '-inf', now, 'LIMIT', 0, 100)) do
  local tenant, name = string.match(key, '^(.-)|(.*)$')
  local list = 'weft:flow:rl:' .. tenant .. ':' .. name
  local waiting = redis.call('LLEN', list)
  local n, next_at = waiting, nil
  local declared = redis.call('HGET', 'weft:ratelimits:' .. tenant, name)
  if declared then
    local rate = cjson.decode(declared)
    local burst, per_ms = math.max(rate.burst, 1), rate.per_second / 1000
    local b = redis.call('HMGET', list .. ':b', 'tokens', 'at')
    local tokens = burst
    if b[1] then
      tokens = math.min(burst, tonumber(b[1]) + math.max(0, tonumber(now) - tonumber(b[2])) * per_ms)
    end
    n = math.min(math.max(math.floor(tokens), 0), waiting)
    tokens = tokens - n
    if waiting > n then next_at = tonumber(now) + math.max(1, math.ceil((1 - tokens) / per_ms - 1e-9)) end
    redis.call('HSET', list .. ':b', 'tokens', tokens, 'at', now)
  end
  if n > 0 then
    for _, m in ipairs(redis.call('LPOP', list, n)) do
      local run, kind, i, a, item = parse_member(m)
      if run then push_ready(run, kind, i, a, item, now) end
    end
  end
  if next_at then redis.call('ZADD', rl_due, next_at, key) else redis.call('ZREM', rl_due, key) end
end
local next = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
local rl_next = redis.call('ZRANGE', rl_due, 0, 0, 'WITHSCORES')
local at = -1
if #next > 0 then at = tonumber(next[2]) end
if #rl_next > 0 and (at < 0 or tonumber(rl_next[2]) < at) then at = tonumber(rl_next[2]) end
return {#due, at}
"#;

/// Acknowledges and deletes the entries this node still owns (one reclaimed
/// by another node after the visibility timeout is left to that node).
///
/// KEYS: ready stream
/// ARGV: group, consumer, entries (`id tenant`)...
const ACK: &str = r#"
local acked = 0
for k = 3, #ARGV do
  local id = string.match(ARGV[k], '^([^\31]+)')
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  if #p == 1 and p[1][2] == ARGV[2] then
    acked = acked + ack_entry(KEYS[1], ARGV[1], ARGV[k])
  end
end
released()
return acked
"#;

/// Hands back the entries a consumer holds: each is queued again in its
/// tenant's ready work and the entry acknowledged and deleted; then the
/// consumer is removed.
///
/// KEYS: ready stream
/// ARGV: group, consumer, now
/// Returns how many entries were handed back.
const RELEASE: &str = r#"
local stream, group, consumer, now = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local handed = 0
while true do
  local pending = redis.call('XPENDING', stream, group, '-', '+', 100, consumer)
  if #pending == 0 then break end
  for _, p in ipairs(pending) do
    local id = p[1]
    local entry = redis.call('XRANGE', stream, id, id)
    local tenant = nil
    if #entry == 1 then
      local f = {}
      local fields = entry[1][2]
      for j = 1, #fields, 2 do f[fields[j]] = fields[j + 1] end
      if f.r and f.k then
        enqueue(f.r, f.k, f.i or 0, f.a or 0, f.n, now)
        handed = handed + 1
      end
      tenant = f.t
      if tenant then tenant = tenant .. '\31' .. (f.ck or '') end
    end
    if tenant then ack_entry(stream, group, id .. '\31' .. tenant) else ack_entry(stream, group, id) end
  end
end
redis.call('XGROUP', 'DELCONSUMER', stream, group, consumer)
released()
return handed
"#;

/// Takes up to `max` ready tasks from the node's queues, in their order, by
/// the rules of `scheduler::flow`: per queue, the tenant of lowest virtual
/// time under its `concurrent_steps` first, up to its weight per visit,
/// higher priorities first within it. The tasks go into the stream and are
/// read at once by this consumer, so that a node that dies holding them
/// leaves them to be reclaimed like any delivery.
///
/// KEYS: ready stream
/// ARGV: group, consumer, max, queues...
/// Returns `{capped (0/1), entries}`: capped when a tenant at its
/// `concurrent_steps` was passed over; entries as XREADGROUP gives them.
const TAKE: &str = r#"
local stream, group, consumer, max = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])
local STRIDE, MAX_WEIGHT = 1048576, 1000
local taken, capped = 0, 0
local shares = {}
local function share(t)
  local s = shares[t]
  if s then return s end
  local f = redis.call('HMGET', 'weft:flow:tenant:' .. t, 'w', 'cap', 'run')
  s = {w = math.min(math.max(tonumber(f[1] or '1'), 1), MAX_WEIGHT),
    cap = tonumber(f[2] or '10000'), run = tonumber(f[3] or '0')}
  shares[t] = s
  return s
end
for q = 4, #ARGV do
  local queue = ARGV[q]
  local rotation = 'weft:flow:' .. queue .. ':tenants'
  local floor_key = 'weft:flow:' .. queue .. ':floor'
  local floor = tonumber(redis.call('GET', floor_key) or '0')
  while taken < max do
    local entries = redis.call('ZRANGE', rotation, 0, -1, 'WITHSCORES')
    -- `flow::visit`: the first tenant under its cap, served at the floor
    -- at the earliest, as far as the next such tenant.
    local tenant, vt, next = nil, 0, nil
    for j = 1, #entries, 2 do
      local s = share(entries[j])
      if s.run >= s.cap then
        capped = 1
      elseif tenant then
        next = tonumber(entries[j + 1])
        break
      else
        tenant, vt = entries[j], tonumber(entries[j + 1])
      end
    end
    if not tenant then break end
    local s = share(tenant)
    local at = math.max(vt, floor)
    floor = at
    local stride = math.floor(STRIDE / s.w)
    local n = max - taken
    if next then n = math.max(s.w, math.floor((math.max(next, at) - at) / stride)) end
    n = math.min(n, max - taken, s.cap - s.run)
    local tasks = 'weft:flow:' .. queue .. ':t:' .. tenant
    local got = 0
    while got < n do
      local band = redis.call('ZRANGE', tasks, 0, 0)[1]
      if not band then break end
      local list = tasks .. ':p' .. band
      local popped = redis.call('LPOP', list, n - got)
      if not popped then popped = {} end
      for _, m in ipairs(popped) do
        local run, kind, i, a, item, _, key = parse_member(m)
        if run then
          local fields = {'r', run, 'k', kind, 'i', i, 'a', a, 't', tenant}
          if item then fields[#fields + 1] = 'n'; fields[#fields + 1] = item end
          if key ~= '' then fields[#fields + 1] = 'ck'; fields[#fields + 1] = key end
          redis.call('XADD', stream, '*', unpack(fields))
        end
      end
      got = got + #popped
      if got < n or redis.call('EXISTS', list) == 0 then redis.call('ZREM', tasks, band) end
    end
    if got > 0 then
      s.run = s.run + got
      redis.call('HINCRBY', 'weft:flow:tenant:' .. tenant, 'run', got)
      taken = taken + got
    end
    if got < n or redis.call('EXISTS', tasks) == 0 then
      redis.call('ZREM', rotation, tenant)
    else
      redis.call('ZADD', rotation, at + n * stride, tenant)
    end
    if redis.call('EXISTS', rotation) == 0 then floor = 0 end
  end
  if floor == 0 then redis.call('DEL', floor_key) else redis.call('SET', floor_key, floor) end
  if taken >= max then break end
end
if taken == 0 then return {capped, {}} end
local read = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', taken, 'STREAMS', stream, '>')
return {capped, read[1][2]}
"#;

/// A queue's ready work: how many tasks, and when the oldest became ready
/// (the first of each priority of each tenant is its oldest).
///
/// ARGV: queue
/// Returns `{depth, time of the oldest or -1}`.
const QUEUE_STATS: &str = r#"
local queue = ARGV[1]
local depth, oldest = 0, -1
for _, tenant in ipairs(redis.call('ZRANGE', 'weft:flow:' .. queue .. ':tenants', 0, -1)) do
  local tasks = 'weft:flow:' .. queue .. ':t:' .. tenant
  for _, band in ipairs(redis.call('ZRANGE', tasks, 0, -1)) do
    local list = tasks .. ':p' .. band
    depth = depth + redis.call('LLEN', list)
    local first = redis.call('LINDEX', list, 0)
    local at = nil
    if first then at = tonumber((select(6, parse_member(first)))) end
    if at and (oldest < 0 or at < oldest) then oldest = at end
  end
end
return {depth, oldest}
"#;

/// The scripts, loaded once per backend.
pub struct Scripts {
    pub create: redis::Script,
    pub claim: redis::Script,
    pub commit: redis::Script,
    pub finish: redis::Script,
    pub cancel: redis::Script,
    pub signal: redis::Script,
    pub promote: redis::Script,
    pub ack: redis::Script,
    pub release: redis::Script,
    pub take: redis::Script,
    pub queue_stats: redis::Script,
}

impl Scripts {
    pub fn new() -> Self {
        // The shebang makes Redis refuse a script that writes before it starts
        // (OOM, READONLY, ...), instead of at its first write: no transition is
        // ever applied in part.
        let with_prelude = |body: &str| redis::Script::new(&format!("#!lua\n{PRELUDE}\n{body}"));
        Self {
            create: with_prelude(CREATE),
            claim: with_prelude(CLAIM),
            commit: with_prelude(COMMIT),
            finish: with_prelude(FINISH),
            cancel: with_prelude(CANCEL),
            signal: with_prelude(SIGNAL),
            promote: with_prelude(PROMOTE),
            ack: with_prelude(ACK),
            release: with_prelude(RELEASE),
            take: with_prelude(TAKE),
            queue_stats: with_prelude(QUEUE_STATS),
        }
    }
}
