//! The scripts of an attempt: its claim and its commit, for a step, an item
//! of a for_each step or a compensation. They use the functions of the
//! prelude (`super::PRELUDE`) and the field names it documents.

/// Claims tasks: for each, checks it is current, marks its slot running with
/// a new lease, and returns what the attempt needs. Many claims go in one call.
///
/// KEYS: run, steps and items of each claim
/// ARGV: now, claim count, then per claim: kind (`s` step, `e` item, `c`
/// compensation, `f` finalisation), index, attempt, most deliveries of one
/// attempt, item, count of reads, the indexes of the steps whose outputs the
/// attempt reads, count of facts, the indexes of the steps whose status and
/// error it needs (the gate of a step's first attempt)
/// Returns per claim `{'stale'}`, `{'step', lease, '' or 'over' (delivered
/// more often than allowed), started run (0/1), the item ('' if none),
/// outputs..., then status and error of each fact, or nothing when every
/// dependency succeeded}` or
/// `{'finalize', '', outputs of every step...}`.
pub(super) const CLAIM: &str = r#"
local function claim_one(run_key, steps, items, kind, i, attempt, max_deliveries, k, now, reads, facts)
  local status = redis.call('HGET', run_key, 'status')
  if not status or terminal(status) then return {'stale'} end
  local run = string.sub(run_key, 11, -6)
  if kind == 'f' then
    if status == 'compensating' or redis.call('HGET', run_key, 'remaining') ~= '0' then return {'stale'} end
    local n = tonumber(redis.call('HGET', run_key, 'n'))
    local out = {'finalize', ''}
    for j = 0, n - 1 do
      table.insert(out, redis.call('HGET', steps, 'o' .. j) or '')
    end
    return out
  end
  if (kind == 'c') ~= (status == 'compensating') then return {'stale'} end
  local hash, slot = steps, i
  if kind == 'e' then
    if redis.call('HGET', steps, 's' .. i) ~= 'running' then return {'stale'} end
    hash, slot = items, i .. '.' .. k
  elseif kind == 'c' then
    slot = 'c' .. i
  end
  local sa = redis.call('HMGET', hash, 's' .. slot, 'a' .. slot, 'x' .. slot)
  local s, a = sa[1], tonumber(sa[2])
  local over = ''
  if s == 'queued' and attempt == a + 1 then
    redis.call('HSET', hash, 's' .. slot, 'running', 'a' .. slot, attempt, 'v' .. slot, 1)
    redis.call('HSETNX', hash, 't' .. slot, now)
    if kind == 'e' then redis.call('HINCRBY', steps, 'nr' .. i, 1) end
  elseif s == 'running' and attempt == a then
    -- Delivered again: the node that held it is gone.
    if redis.call('HINCRBY', hash, 'v' .. slot, 1) > max_deliveries then over = 'over' end
  elseif s == 'waiting' and attempt == a and kind == 's' then
    -- The wake-up of a waiting step: it stays waiting until its commit.
    over = 'woken'
  else
    return {'stale'}
  end
  local lease = redis.call('HINCRBY', run_key, 'leases', 1)
  redis.call('HSET', hash, 'l' .. slot, lease, 'r' .. slot, now)
  local started = 0
  if status == 'queued' or status == 'scheduled' then
    redis.call('HSET', run_key, 'status', 'running', 'started_at', now)
    run_event(run, 'running', now)
    started = 1
  end
  if kind == 's' and over ~= 'woken' then
    step_event(run, steps, i, 'running', attempt, now, nil)
  elseif kind == 'c' then
    compensation_event(run, steps, i, 'running', attempt, now, nil)
  end
  local item = ''
  if kind == 'e' then item = redis.call('HGET', items, 'x' .. slot) or 'null' end
  local out = {'step', lease, over, started, item}
  for _, d in ipairs(reads) do
    table.insert(out, redis.call('HGET', steps, 'o' .. d) or '')
  end
  -- Unmarked, every dependency succeeded: the reply says nothing of them.
  if kind == 's' and sa[3] == '1' then
    for _, d in ipairs(facts) do
      local se = redis.call('HMGET', steps, 's' .. d, 'e' .. d)
      table.insert(out, se[1] or 'pending')
      table.insert(out, se[2] or '')
    end
  end
  return out
end

local now, count, pos = ARGV[1], tonumber(ARGV[2]), 3
local results = {}
for c = 1, count do
  local nreads = tonumber(ARGV[pos + 5])
  local reads = {}
  for r = 1, nreads do reads[r] = ARGV[pos + 5 + r] end
  local at = pos + 6 + nreads
  local nfacts = tonumber(ARGV[at])
  local facts = {}
  for f = 1, nfacts do facts[f] = ARGV[at + f] end
  results[c] = claim_one(KEYS[3 * c - 2], KEYS[3 * c - 1], KEYS[3 * c], ARGV[pos], ARGV[pos + 1],
    tonumber(ARGV[pos + 2]), tonumber(ARGV[pos + 3]), ARGV[pos + 4], now, reads, facts)
  pos = at + 1 + nfacts
end
return results
"#;

/// Records outcomes of attempts holding a lease. Many commits go in one call.
///
/// KEYS: ready stream, delayed set, then run, steps, the tenant's active
/// counter and items of each commit
/// ARGV: group, commit count, then per commit: target (`s`, `e`, `c`),
/// index, item, lease, outcome (`ok`, `retry`, `fail`, `cont` (failed, the
/// run goes on), `skip`, `expand`, `wait`), output or error JSON (a skip's
/// reason, a wait's signal name or ''),
/// logs JSON, now, due (retry), stored bytes of the outcome, the run's
/// `run_bytes`, run error JSON (fail), the stream entry of the attempt's
/// delivery ('' if unknown), a second error JSON (a skip's, a failed item's
/// step, a list's that is too long), count of extras, extras (a list's items)
/// An outcome that would take the run's stored bytes past `run_bytes` is
/// recorded as the failure `run_too_large` instead (`policy::over_run_bytes`).
/// Returns per commit `{applied (0/1), retrying (0/1), run ended ('' or
/// status), delivery acknowledged (0/1), stopped steps...}`.
pub(super) const COMMIT: &str = r#"
local ready, delayed, group = KEYS[1], KEYS[2], ARGV[1]

local function commit_one(run_key, steps, active, items, target, i, k, lease, outcome, payload, logs, now, due, bytes, limit, run_error, entry, second, extras)
  -- Acknowledges the delivery with the transition: the task is done.
  local function ack()
    if entry == '' then return 0 end
    ack_entry(ready, group, entry)
    return 1
  end
  local rs = redis.call('HMGET', run_key, 'status', 'comp')
  local status, numbered = rs[1], rs[2] == '1'
  if not status or terminal(status) then return {0, 0, '', ack()} end
  if (target == 'c') ~= (status == 'compensating') then return {0, 0, '', ack()} end
  local hash, slot = steps, i
  if target == 'e' then
    hash, slot = items, i .. '.' .. k
  elseif target == 'c' then
    slot = 'c' .. i
  end
  -- A step's own commit reads the run's stored bytes (`b`, in the steps
  -- hash) and its dependents with its fields, and writes `b` with them.
  local sl
  if target == 's' then
    sl = redis.call('HMGET', steps, 's' .. slot, 'l' .. slot, 'a' .. slot, 'b', 'd' .. i)
  else
    sl = redis.call('HMGET', hash, 's' .. slot, 'l' .. slot, 'a' .. slot)
    sl[4] = redis.call('HGET', steps, 'b')
  end
  if (sl[1] ~= 'running' and sl[1] ~= 'waiting') or sl[2] ~= lease then
    -- Superseded: the delivery may belong to another node now.
    return {0, 0, '', 0}
  end
  local run = string.sub(run_key, 11, -6)
  local attempt = tonumber(sl[3])
  local dependents = sl[5]
  local used = tonumber(sl[4] or '0') + tonumber(bytes)
  if used > tonumber(limit) then
    used = used - tonumber(bytes)
    local id = redis.call('HGET', steps, 'i' .. i)
    local message = 'the run would store more than its run_bytes (' .. limit .. ' bytes)'
    outcome, logs = 'fail', '[]'
    payload = cjson.encode({code = 'run_too_large', message = message, retryable = false})
    second = payload
    run_error = cjson.encode({code = 'run_too_large', step = id,
      message = 'step `' .. id .. '` failed: ' .. message})
  end
  -- Writes fields of the steps hash, and `b` with them.
  local function put(...)
    redis.call('HSET', steps, 'b', used, ...)
  end
  if target ~= 's' then put() end
  local ended = ''
  local function fail_run(err)
    local stopped = stop_run(run_key, steps, items, active, ready, run, now, err)
    local st = redis.call('HGET', run_key, 'status')
    if terminal(st) then ended = st end
    return stopped
  end
  local function done(stopped)
    local out = {1, 0, ended, ack()}
    for _, j in ipairs(stopped or {}) do table.insert(out, j) end
    return out
  end

  if target == 'c' then
    if outcome == 'retry' then
      redis.call('HSET', steps, 's' .. slot, 'queued', 'e' .. slot, payload, 'g' .. slot, logs)
      redis.call('ZADD', delayed, due, run .. '|' .. i .. '|' .. (attempt + 1) .. '|c')
      compensation_event(run, steps, i, 'queued', attempt, now, payload)
      return {1, 1, '', ack()}
    end
    local st = 'failed'
    if outcome == 'ok' then
      st = 'succeeded'
      redis.call('HSET', steps, 's' .. slot, st, 'o' .. slot, payload, 'g' .. slot, logs, 'f' .. slot, now)
      compensation_event(run, steps, i, st, attempt, now, nil)
    else
      redis.call('HSET', steps, 's' .. slot, st, 'e' .. slot, payload, 'g' .. slot, logs, 'f' .. slot, now)
      compensation_event(run, steps, i, st, attempt, now, payload)
    end
    local next = next_compensation(run_key, steps)
    if next then
      start_compensation(steps, ready, run, next, now)
    else
      local final = 'cancelled'
      if redis.call('HEXISTS', run_key, 'error') == 1 then final = 'failed' end
      finish_run(run_key, steps, items, active, ready, run, final, now)
      ended = final
    end
    return done()
  end

  if target == 'e' then
    redis.call('HINCRBY', steps, 'nr' .. i, -1)
    if outcome ~= 'ok' and outcome ~= 'retry' then
      redis.call('HINCRBY', steps, 'nf' .. i, 1)
      -- The first failed items, for the run's record (`MAX_FAILED_SHOWN`).
      local listed = redis.call('HGET', steps, 'fi' .. i)
      if not listed then
        redis.call('HSET', steps, 'fi' .. i, k)
      elseif select(2, string.gsub(listed, ',', '')) < 99 then
        redis.call('HSET', steps, 'fi' .. i, listed .. ',' .. k)
      end
    end
    if outcome == 'retry' then
      redis.call('HSET', items, 's' .. slot, 'queued', 'e' .. slot, payload, 'g' .. slot, logs)
      redis.call('ZADD', delayed, due, run .. '|' .. i .. '|' .. (attempt + 1) .. '|' .. k)
      return {1, 1, '', ack()}
    end
    if outcome == 'ok' then
      redis.call('HSET', items, 's' .. slot, 'succeeded', 'o' .. slot, payload, 'g' .. slot, logs, 'f' .. slot, now)
      redis.call('HINCRBY', steps, 'ns' .. i, 1)
    else
      redis.call('HSET', items, 's' .. slot, 'failed', 'e' .. slot, payload, 'g' .. slot, logs, 'f' .. slot, now)
      if outcome ~= 'cont' then
        -- The step fails with its item's failure; the other items stop.
        redis.call('HSET', steps, 's' .. i, 'failed', 'e' .. i, second, 'f' .. i, now)
        step_event(run, steps, i, 'failed', 1, now, second)
        local stopped = fail_run(run_error)
        table.insert(stopped, tonumber(i))
        redis.call('PUBLISH', 'weft:cancel', run)
        return done(stopped)
      end
    end
    local z = redis.call('HINCRBY', steps, 'z' .. i, 1)
    local total = tonumber(redis.call('HGET', steps, 'n' .. i))
    if z == total then
      local parts = {}
      for j = 0, total - 1 do
        local o = redis.call('HGET', items, 'o' .. i .. '.' .. j)
        if not o or o == '' then o = 'null' end
        parts[j + 1] = o
      end
      redis.call('HSET', steps, 's' .. i, 'succeeded', 'o' .. i, '[' .. table.concat(parts, ',') .. ']', 'f' .. i, now)
      if tonumber(now) >= tonumber(redis.call('HGET', steps, 'ev' .. i) or '0') + 100 then
        items_event(run, steps, items, i, now)
      end
      step_event(run, steps, i, 'succeeded', 1, now, nil)
      step_ended(run_key, steps, ready, run, i, now, true, nil, numbered)
      return done()
    end
    local last = tonumber(redis.call('HGET', steps, 'ev' .. i) or '0')
    if tonumber(now) >= last + 100 then
      redis.call('HSET', steps, 'ev' .. i, now)
      items_event(run, steps, items, i, now)
    end
    start_items(steps, items, ready, run, i, now)
    return done()
  end

  if outcome == 'expand' then
    -- `rules::items_fit`: the step is one of its items.
    local n = #extras
    local extra = math.max(n - 1, 0)
    local fits = tonumber(redis.call('HGET', run_key, 'n')) + tonumber(redis.call('HGET', run_key, 'items') or '0') + extra
      <= tonumber(redis.call('HGET', run_key, 'spr') or '10000')
    if not fits then
      outcome, payload = 'fail', second
    elseif n == 0 then
      outcome, payload = 'ok', '[]'
    else
      redis.call('HINCRBY', run_key, 'items', extra)
      put('n' .. i, n, 'p' .. i, 0, 'z' .. i, 0)
      for j = 1, n do
        redis.call('HSET', items, 'x' .. i .. '.' .. (j - 1), extras[j])
      end
      start_items(steps, items, ready, run, i, now)
      return done()
    end
  end
  if outcome == 'wait' and payload ~= '' then
    -- A signal step: it takes the oldest signal sent before it was reached,
    -- or is listed among the steps waiting for its name.
    local kept = take_signal(steps, payload)
    if kept then
      outcome, payload = 'ok', kept
    else
      local waiters = redis.call('HGET', steps, 'qw:' .. payload)
      if waiters then waiters = waiters .. ',' .. i else waiters = i end
      redis.call('HSET', steps, 'qw:' .. payload, waiters)
    end
  end
  if outcome == 'ok' then
    step_succeeded(run_key, steps, ready, run, i, payload, logs, attempt, now, used, dependents, numbered)
    return done()
  elseif outcome == 'skip' then
    put('s' .. i, 'skipped', 'a' .. i, 0, 'rs' .. i, payload, 'f' .. i, now)
    redis.call('HDEL', steps, 't' .. i)
    if second ~= '' then redis.call('HSET', steps, 'e' .. i, second) end
    step_event(run, steps, i, 'skipped', 0, now, nil)
    step_ended(run_key, steps, ready, run, i, now, false, dependents, numbered)
    return done()
  elseif outcome == 'retry' then
    put('s' .. i, 'queued', 'e' .. i, payload, 'g' .. i, logs)
    redis.call('ZADD', delayed, due, run .. '|' .. i .. '|' .. (attempt + 1))
    step_event(run, steps, i, 'queued', attempt, now, payload)
    return {1, 1, '', ack()}
  elseif outcome == 'wait' then
    -- It holds no worker: its wake-up is a delayed task of the same attempt
    -- (none for a signal step without a timeout).
    put('s' .. i, 'waiting')
    if tonumber(due) > 0 then
      redis.call('ZADD', delayed, due, run .. '|' .. i .. '|' .. attempt)
    end
    step_event(run, steps, i, 'waiting', attempt, now, nil)
    return done()
  end
  put('s' .. i, 'failed', 'e' .. i, payload, 'g' .. i, logs, 'f' .. i, now)
  step_event(run, steps, i, 'failed', attempt, now, payload)
  if outcome == 'cont' then
    step_ended(run_key, steps, ready, run, i, now, false, dependents, numbered)
    return done()
  end
  return done(fail_run(run_error))
end

local count, pos = tonumber(ARGV[2]), 3
local results = {}
for c = 1, count do
  local kk = 4 * c - 1
  local nextras = tonumber(ARGV[pos + 14])
  local extras = {}
  for e = 1, nextras do extras[e] = ARGV[pos + 14 + e] end
  results[c] = commit_one(KEYS[kk], KEYS[kk + 1], KEYS[kk + 2], KEYS[kk + 3], ARGV[pos], ARGV[pos + 1],
    ARGV[pos + 2], ARGV[pos + 3], ARGV[pos + 4], ARGV[pos + 5], ARGV[pos + 6], ARGV[pos + 7],
    ARGV[pos + 8], ARGV[pos + 9], ARGV[pos + 10], ARGV[pos + 11], ARGV[pos + 12], ARGV[pos + 13], extras)
  pos = pos + 15 + nextras
end
released()
return results
"#;
