--[[
  Shared helpers, spliced into each script by scripts.py where it says "include common".

  Key layout (mirrors utils/redis_queue/keys.py; keep both in step). `base` is
  "<prefix>:{<queue>}:" and every key of a queue starts with it, so all of them hash
  to one Redis Cluster slot.
    base .. 'task:' .. id      hash: one task
    base .. 'pending:' .. type zset: ready ids of one task type
    base .. 'ready'            zset: the ready index, task types whose pending set may hold
                               tasks, each scored at or below its set's best score, plus
                               the member '' (scored with the time of the last rebuild) that
                               says it is whole (mark_ready, include/merge.lua)
    base .. 'wake:' .. type    list: wake-up token for workers serving that type
    base .. 'wake'             list: wake-up token for workers serving every type
    base .. 'done:' .. id      list: pushed once when the task reaches a final state
    base .. 'blob_gc'          list: blob keys of deleted tasks whose blobs are in a
                               user-supplied store, for the client to delete there
    base .. 'blob:' .. id .. ':payload' (or ':result')
                               string: a payload or result above the blob threshold,
                               referenced from the hash by 'payload.blob' / 'result.blob'
    base .. 'hist:' .. minute  hash with a TTL: one minute's counters (flush_history)
    base .. 'served:' .. digest set with a TTL: a long list of task types one claim serves,
                               sent once and named by its digest (claim.lua ARGV[13])
    base .. 'paused'           hash: "*" or a task type -> ms paused at (claim.lua skips them)
    base .. 'schedules'        hash: a periodic schedule's definition (JSON) by name
    base .. 'schedule_due'     zset: a schedule's next due time (ms) by name
    base .. 'schedule_last'    hash: a schedule's last tick "<due ms> <skipped in all>"
    base .. 'out:' .. id       stream with a TTL: a task's output (emit.lua), ended by notify_done,
                               deleted with the task (delete_task)
    base .. 'events'           stream, MAXLEN ~ the caller's `events` argument: the partition's
                               task lifecycle events (task_event; queue/events.py reads it)
    base .. 'unique:' .. type .. ':' .. digest
                               string with a TTL (the unique_for window): the id of the
                               first task with that type and unique key (enqueue.lua)
    base .. 'debounce:' .. type .. ':' .. digest
                               string with a TTL: the id of the delayed task that later
                               enqueues with that type and key replace (enqueue.lua)

  Error replies are tables whose first element is a negative code (see errors.py).
  Every redis.call costs about a microsecond inside a script, so the hot paths read what
  they need in one call and write each key once.
]]

local E_NOT_FOUND = -1
local E_NOT_PROCESSING = -2
local E_LEASE_LOST = -3
local E_BAD_STATE = -4
local E_WRONGTYPE = -10
local E_BAD_ARGUMENT = -11
local E_SERVED_UNKNOWN = -12

-- The most items one call of a batch script (claim, clear_finished, purge_dlq) handles:
-- bigger requests are capped here, so no count a caller passes makes a script long or
-- makes it fail halfway. The Python side asks again for the rest.
local MAX_BATCH = 1000

-- A numeric argument, or nil plus an error table naming it: scripts read every number
-- before their first write, so a malformed call is refused whole.
local function number_arg(value, name)
  local n = tonumber(value)
  if n == nil then return nil, {E_BAD_ARGUMENT, name, tostring(value)} end
  return n
end

-- Priority bands: score = (now_us - EPOCH_US) - priority * BAND_US, so every task of a
-- higher priority sorts first and FIFO holds inside a band for ~30 years of uptime.
local EPOCH_US = 1735689600000000 -- 2025-01-01T00:00:00Z
local BAND_US = 1000000000000000
local DONE_TTL_MS = '60000' -- how long a finished task's done list wakes result waiters
local CHUNK = 64 -- hash-max-listpack-value: longer values cost the hash its compact encoding

-- Numbers given to redis.call are formatted by Redis with printf("%.17g"), ~3,400
-- instructions each; string.format('%d') costs ~1,200 and '%.0f' ~4,300. So what a hot
-- path sends is text made with '%d' (exact for these integers, all below 2^53).

local last_ms = nil -- the server time this script call last read (flush_history's minute)

-- Server time as {ms, microseconds since EPOCH_US}.
local function server_now()
  local t = redis.call('TIME')
  local us = tonumber(t[1]) * 1000000 + tonumber(t[2])
  last_ms = math.floor(us / 1000)
  return last_ms, us - EPOCH_US
end

-- The call's time in ms: read once (TIME costs a command), then the same for the rest of
-- the call, as Redis itself treats a script as running at one instant (key expiry).
local function now_ms()
  if last_ms then return last_ms end
  return (server_now())
end

-- Per-minute history (keys.py QueueKeys.history, HISTORY_TTL_SECONDS): every lifetime
-- counter a script bumps through tally() is also added up here, and written to the
-- minute's hash once, at the end of the script call (flush_history): a settle of 200
-- tasks costs one HINCRBY per outcome, not one per task.
local HISTORY_TTL_S = 90000 -- 25 hours: a whole day of charts at any hour
local history = {}

-- Adds n to a lifetime counter and to this minute's history; returns the lifetime value.
local function tally(stats_key, field, n)
  history[field] = (history[field] or 0) + n
  return redis.call('HINCRBY', stats_key, field, n == 1 and '1' or string.format('%d', n))
end

-- Writes what tally() added up. The TTL is set when a field is new to the minute (the
-- hash may be new): once per field and minute, not once per call.
local function flush_history(base)
  local key, fresh = nil, false
  for field, n in pairs(history) do
    if not key then
      key = base .. 'hist:' .. string.format('%d', math.floor((last_ms or now_ms()) / 60000))
    end
    if redis.call('HINCRBY', key, field, n) == n then fresh = true end
  end
  if fresh then redis.call('EXPIRE', key, HISTORY_TTL_S, 'NX') end
  history = {}
end

local function task_key(base, id) return base .. 'task:' .. id end
local function pending_key(base, task_type) return base .. 'pending:' .. task_type end
local function done_key(base, id) return base .. 'done:' .. id end
local function output_key(base, id) return base .. 'out:' .. id end
local function blob_key(base, id, name) return base .. 'blob:' .. id .. ':' .. name end
local function unique_key(base, task_type, digest)
  return base .. 'unique:' .. task_type .. ':' .. digest
end
local function debounce_key(base, task_type, digest)
  return base .. 'debounce:' .. task_type .. ':' .. digest
end

-- Task lifecycle events: one XADD per task event to the partition's stream, bounded by
-- MAXLEN ~ events_max (set once per call from the script's `events` argument by
-- events_from; 0 = off, nothing is written). XADD goes through pcall: a clobbered events
-- key must never fail a transition halfway. Fields: event, id, type, attempt (runs
-- started), and error (its first line, at most EVENT_ERROR_MAX bytes) on failure events.
local events_max, events_max_text = 0, '0'
local EVENT_ERROR_MAX = 200
local FINAL_EVENTS = {completed = 'completed', failed = 'failed', dead_letter = 'dead_lettered',
                      cancelled = 'cancelled'}

local function events_from(arg)
  events_max = math.floor(tonumber(arg) or 0)
  events_max_text = string.format('%d', events_max)
end

-- `event` nil: the task's final state names it (notify_done). `task_type` nil: type and
-- attempt are read from the hash (one HMGET), as is the error of a final failure.
local events_base, events_key = nil, nil -- base .. 'events', made once per base and call
local function task_event(base, event, id, task_type, attempt, err)
  if events_max <= 0 then return end
  if task_type == nil or event == nil then
    local f = redis.pcall('HMGET', base .. 'task:' .. id, 'type', 'attempts', 'state', 'error')
    if type(f) ~= 'table' or f.err then f = {} end
    task_type, attempt = f[1], f[2]
    if event == nil then
      event = FINAL_EVENTS[f[3]]
      if event == nil then return end
      if event == 'failed' or event == 'dead_lettered' then err = f[4] end
    end
  end
  if base ~= events_base then events_base, events_key = base, base .. 'events' end
  if type(attempt) == 'number' then attempt = string.format('%d', attempt) end
  if err then
    redis.pcall('XADD', events_key, 'MAXLEN', '~', events_max_text, '*', 'event', event,
                'id', id, 'type', task_type or '', 'attempt', attempt or '0', 'error',
                string.sub(string.match(err, '^[^\n]*') or '', 1, EVENT_ERROR_MAX))
  else
    redis.pcall('XADD', events_key, 'MAXLEN', '~', events_max_text, '*', 'event', event,
                'id', id, 'type', task_type or '', 'attempt', attempt or '0')
  end
end

-- Drops a task's dedup window and debounce hold (its fields uniq and dbnc) when they still
-- name it: a task deleted on purpose no longer blocks an equal one.
local function free_windows(base, id, task_type, uniq, dbnc)
  if not task_type then return end
  if uniq and redis.call('GET', unique_key(base, task_type, uniq)) == id then
    redis.call('DEL', unique_key(base, task_type, uniq))
  end
  if dbnc and redis.call('GET', debounce_key(base, task_type, dbnc)) == id then
    redis.call('DEL', debounce_key(base, task_type, dbnc))
  end
end

-- Deletes a task and everything kept for it (its done list, its payload and result blob
-- keys, its output stream): every script that deletes a task goes through here, so no
-- blob outlives it.
local function delete_task(base, id)
  -- Blobs in a user-supplied store (field <name>.ext = their key there) cannot be
  -- deleted from here: their keys are queued for the client (queue.collect_blobs) in
  -- the same atomic step.
  local ext = redis.pcall('HMGET', task_key(base, id), 'payload.ext', 'result.ext')
  if type(ext) == 'table' and not ext.err then
    for i = 1, 2 do
      if ext[i] then redis.pcall('RPUSH', base .. 'blob_gc', ext[i]) end
    end
  end
  redis.call('DEL', task_key(base, id), done_key(base, id), blob_key(base, id, 'payload'),
             blob_key(base, id, 'result'), output_key(base, id))
end

-- Claim-check in a user-supplied store: the text is there already (the client put it).
-- `ref` is "<size>:<its key in the store>" (checked with ext_ref_error before the first
-- write); the hash records both ('<name>.blob' and '<name>.ext').
local function ext_ref_error(ref)
  if string.match(ref, '^%d+:.+$') then return nil end
  return {E_BAD_ARGUMENT, 'blob reference', ref}
end

local function put_ext_ref(fields, name, ref)
  local size, where = string.match(ref, '^(%d+):(.+)$')
  fields[#fields + 1] = name .. '.blob'
  fields[#fields + 1] = size
  fields[#fields + 1] = name .. '.ext'
  fields[#fields + 1] = where
end

-- Claim-check: stores `text` in the task's blob key `name` and adds its reference
-- ('<name>.blob' = its size in bytes) to `fields` (for HSET). SET takes any key, so a
-- blob left by a deleted-by-hand task is replaced, never a reason to fail halfway.
local function put_blob(fields, base, id, name, text)
  redis.call('SET', blob_key(base, id, name), text)
  fields[#fields + 1] = name .. '.blob'
  fields[#fields + 1] = #text
end

-- A task's hash as HGETALL gives it, with a payload or result kept in its blob key put
-- back as the 'payload' / 'result' field (what a claim hands the worker, in the same
-- atomic step). A missing or unreadable blob leaves the field out, and the reader
-- (codec.decode_task) takes the record as corrupt.
local function with_blobs(base, id, f)
  local n = #f
  for i = 1, n, 2 do
    local name = f[i] == 'payload.blob' and 'payload' or f[i] == 'result.blob' and 'result'
    if name then
      local v = redis.pcall('GET', blob_key(base, id, name))
      if type(v) == 'string' then
        f[#f + 1] = name
        f[#f + 1] = v
      end
    end
  end
  return f
end

local function task_fields(base, id, key)
  return with_blobs(base, id, redis.call('HGETALL', key))
end

-- Returns an error table when a structure key holds the wrong Redis type, so a script
-- can refuse before its first write instead of failing halfway.
local function check_types(pairs_list)
  for i = 1, #pairs_list, 2 do
    local t = redis.call('TYPE', pairs_list[i]).ok
    if t ~= 'none' and t ~= pairs_list[i + 1] then
      return {E_WRONGTYPE, pairs_list[i], t}
    end
  end
  return nil
end

-- The last tick handed out, read with a check that the stats key is a hash.
local function last_tick(stats_key)
  local v = redis.pcall('HGET', stats_key, 'clock')
  if type(v) == 'table' and v.err then return nil, {E_WRONGTYPE, stats_key, 'not a hash'} end
  return tonumber(v or '0')
end

-- A strictly increasing timeline shared by the whole queue, so tasks enqueued in the same
-- microsecond still keep their order.
local function next_tick(stats_key)
  local _, now_us = server_now()
  local last = tonumber(redis.call('HGET', stats_key, 'clock') or '0')
  if now_us <= last then now_us = last + 1 end
  redis.call('HSET', stats_key, 'clock', string.format('%d', now_us))
  return now_us
end

local function pending_score(tick, priority)
  return string.format('%d', tick - priority * BAND_US)
end

-- One token is enough: a woken worker that claims a task and sees more pushes the next one.
-- Wake keys hold no data, and waking runs after a script's writes: a wake key that
-- something else overwrote is replaced rather than failing the script halfway.
local function wake_key(k)
  local n = redis.pcall('LLEN', k)
  if type(n) == 'table' then
    redis.call('DEL', k)
    n = 0
  end
  if n == 0 then redis.call('LPUSH', k, '1') end
end

local function wake(base, task_type)
  wake_key(base .. 'wake:' .. task_type)
end

-- Adds a task to the delayed set; when it becomes the earliest due, blocked workers are
-- woken so they claim again and learn the new (shorter) time to wait.
local function schedule(base, delayed_key, due, id, task_type)
  local head = redis.call('ZRANGE', delayed_key, 0, 0, 'WITHSCORES')
  redis.call('ZADD', delayed_key, due, id)
  if not head[2] or due < tonumber(head[2]) then wake(base, task_type) end
end

-- nil when the pending set of `task_type` can take writes, else an error table.
local function check_pending_key(base, task_type)
  local k = pending_key(base, task_type)
  local t = redis.call('TYPE', k).ok
  if t ~= 'none' and t ~= 'zset' then return {E_WRONGTYPE, k, t} end
  return nil
end

-- `event`, `task_type`, `attempt`: the final event when the caller read them already (one
-- HMGET fewer); nil: task_event reads them.
local function notify_done(base, id, event, task_type, attempt)
  local k = done_key(base, id)
  redis.call('RPUSH', k, '1')
  redis.call('PEXPIRE', k, DONE_TTL_MS)
  -- A task that wrote output ends its stream with its final state, which wakes readers
  -- (queue.stream_output) at once; the stream keeps the TTL its last write gave it.
  task_event(base, event, id, task_type, attempt)
  local out = output_key(base, id)
  if redis.call('EXISTS', out) == 1 then
    local f = redis.call('HMGET', task_key(base, id), 'attempts', 'state')
    redis.pcall('XADD', out, '*', 'a', f[1] or '0', 'k', 'end', 't', f[2] or '')
  end
end

-- Blobs (payload, result, error) are stored as chunks of at most CHUNK bytes: `name`,
-- `name.1`, `name.2`, ...; result and error also record `name.count` when there is more
-- than one chunk, so they can be replaced without scanning.
-- Any variadic command (HSET, HDEL, ZADD, ZREM, SADD) with an argument list of any length.
-- Lua's unpack() fails with "too many results to unpack" past a few thousand values (a
-- 256 KB payload is 8,000 chunks; a claim of 5,000 tasks is 10,000 ZADD arguments), and a
-- failure there would come after earlier writes, so every unpack() goes through here, in
-- slices of UNPACK_MAX (even, so field/value and score/member pairs stay whole).
-- Returns the sum of the replies (what SADD or ZADD count).
local UNPACK_MAX = 1000
local function call_sliced(command, key, list)
  local total = 0
  for i = 1, #list, UNPACK_MAX do
    local n = redis.call(command, key, unpack(list, i, math.min(i + UNPACK_MAX - 1, #list)))
    if type(n) == 'number' then total = total + n end
  end
  return total
end

-- Up to INLINE_CHUNKS chunks (8 KiB) the hash stays a listpack (hash-max-listpack-entries
-- is 512 fields by default); a longer text makes it a hashtable whatever is done, and in
-- 64-byte chunks it would then cost 2.25 times its size (each chunk a field of its own),
-- so it is stored as one field: about 1.25 times (README, Large payloads).
local INLINE_CHUNKS = 128
local function add_blob(out, name, text, counted)
  local n = math.ceil(#text / CHUNK)
  if n <= 1 or n > INLINE_CHUNKS then
    out[#out + 1] = name
    out[#out + 1] = text
    return
  end
  for c = 0, n - 1 do
    out[#out + 1] = c == 0 and name or (name .. '.' .. c)
    out[#out + 1] = string.sub(text, c * CHUNK + 1, (c + 1) * CHUNK)
  end
  if counted then
    out[#out + 1] = name .. '.count'
    out[#out + 1] = n
  end
end

-- Field names of a counted blob (`count` as read from `name.count`), for HDEL.
local function add_blob_names(out, name, count)
  out[#out + 1] = name
  for c = 1, (tonumber(count) or 1) - 1 do out[#out + 1] = name .. '.' .. c end
  out[#out + 1] = name .. '.count'
end

-- Each task keeps the errors of its last ATTEMPTS_KEPT attempts that ended in one (a
-- failure, a timeout, a lost lease; models.AttemptRecord): `att.n` numbers them, and record
-- s is `att.<s>` = "<attempt> <server ms> <worker id>[ t=<tokens spent>]" with its error
-- in the counted blob `err.<s>`. Appends record seq + 1 to `fields` (for HSET) and the
-- names of the record it pushes out to `stale` (for HDEL); `seq` is the task's att.n as
-- read (or nil).
local ATTEMPTS_KEPT = 10
local function add_attempt(stale, fields, key, seq, attempt, now, worker, err, used)
  local s = (tonumber(seq) or 0) + 1
  fields[#fields + 1] = 'att.n'
  fields[#fields + 1] = s
  fields[#fields + 1] = 'att.' .. s
  local header = (tonumber(attempt) or 0) .. ' ' .. string.format('%d', now) .. ' '
    .. (worker or '')
  -- The tokens the failed attempt reported spending, so a run's totals can count them.
  if tonumber(used) and tonumber(used) > 0 then
    header = header .. ' t=' .. string.format('%d', tonumber(used))
  end
  fields[#fields + 1] = header
  add_blob(fields, 'err.' .. s, err, true)
  if s > ATTEMPTS_KEPT then
    local old = s - ATTEMPTS_KEPT
    stale[#stale + 1] = 'att.' .. old
    add_blob_names(stale, 'err.' .. old, redis.call('HGET', key, 'err.' .. old .. '.count'))
  end
end

-- Final failure of a task with a readable hash: to the DLQ (the `dlq` set, and `dlq_at`
-- by time), or to `failed` when the DLQ is off. `error_count` is the task's current
-- error.count field (or nil); `k` = {dlq, dlq_at, failed, stats} (keys); `stale` and
-- `fields`, when given, are more field names to delete and pairs to set (add_attempt).
local function finalize_failure(base, key, id, err, error_count, now, k, use_dlq, stale, fields)
  stale = stale or {}
  stale[#stale + 1] = 'lease'
  stale[#stale + 1] = 'cancel'
  add_blob_names(stale, 'error', error_count)
  call_sliced('HDEL', key, stale)
  fields = fields or {}
  fields[#fields + 1] = 'completed'
  fields[#fields + 1] = now
  fields[#fields + 1] = 'state'
  fields[#fields + 1] = use_dlq and 'dead_letter' or 'failed'
  add_blob(fields, 'error', err, true)
  call_sliced('HSET', key, fields)
  if use_dlq then
    redis.call('SADD', k.dlq, id)
    redis.call('ZADD', k.dlq_at, now, id)
    tally(k.stats, 'dead_lettered', 1)
  else
    redis.call('ZADD', k.failed, now, id)
  end
  tally(k.stats, 'failed', 1)
  notify_done(base, id)
end

-- A task whose record cannot be trusted goes to the DLQ with the reason. A record that is
-- not a hash is replaced by a minimal one; an id without any record is dropped, since
-- nothing is left to keep. `k` as in finalize_failure.
local function quarantine(base, id, reason, now, k, use_dlq)
  local key = task_key(base, id)
  local t = redis.call('TYPE', key).ok
  if t == 'none' then
    redis.call('HINCRBY', k.stats, 'orphans_dropped', 1)
    return
  end
  local error_count = nil
  if t ~= 'hash' then
    redis.call('DEL', key)
  else
    error_count = redis.call('HGET', key, 'error.count')
  end
  finalize_failure(base, key, id, reason, error_count, now, k, use_dlq)
  redis.call('HINCRBY', k.stats, 'corrupt', 1)
end

local function mark_cancelled(base, key, id, now, cancelled_key, stats_key)
  redis.call('HDEL', key, 'lease', 'cancel')
  redis.call('HSET', key, 'state', 'cancelled', 'completed', now)
  redis.call('ZADD', cancelled_key, now, id)
  tally(stats_key, 'cancelled', 1)
  notify_done(base, id)
end

-- A hash that the engine can move around: it exists, has a type and is in `state`.
local function is_sound(key, state)
  local f = redis.pcall('HMGET', key, 'state', 'type')
  return type(f) == 'table' and not f.err and f[1] == state and f[2] ~= false
end

local STATES = {pending = true, delayed = true, processing = true, completed = true,
                failed = true, dead_letter = true, cancelled = true}

-- An id found in a state structure whose record is sound but in another state: the entry
-- is stale (a hand edit, a replayed write), the record is not corrupt. The caller has
-- removed the entry; the record is left as it is (quarantining it again would move a
-- finished task and count it twice).
local function is_stale_entry(key, state)
  local f = redis.pcall('HMGET', key, 'state', 'type')
  return type(f) == 'table' and not f.err and f[2] ~= false and f[1] ~= state
    and STATES[f[1]] == true
end

-- The ready index lets a claim visit task types in the order of their best task instead
-- of reading every type's pending set (claim.lua, include/ready.lua). Every add to a
-- pending set lowers its type's entry to the added score (ZADD LT), so an entry is never
-- above its set's best score; removals leave it low, and the claim that finds a set's
-- real head raises or drops the entry. A clobbered index is deleted: without its ''
-- member the next claim rebuilds it from the pending sets.
local function mark_ready(base, task_type, score)
  local done = redis.pcall('ZADD', base .. 'ready', 'LT', score, task_type)
  if type(done) == 'table' and done.err then redis.call('DEL', base .. 'ready') end
end

-- Puts a task back into its type's pending set at its priority.
local function make_pending(base, key, id, stats_key)
  local f = redis.call('HMGET', key, 'type', 'prio')
  local tick = next_tick(stats_key)
  local score = pending_score(tick, tonumber(f[2]) or 1)
  redis.call('ZADD', pending_key(base, f[1]), score, id)
  mark_ready(base, f[1], score)
  redis.call('HSET', key, 'state', 'pending')
  wake(base, f[1])
end

-- Fencing check shared by complete, fail, extend and release. An empty token means the
-- caller holds no lease (an operator override): only the state is checked then.
-- Returns (error table or nil, the values of `extra` fields read in the same call).
local function check_lease(key, token, ...)
  local f = redis.pcall('HMGET', key, 'state', 'lease', ...)
  if type(f) == 'table' and f.err then
    return {E_WRONGTYPE, key, redis.call('TYPE', key).ok}
  end
  if not f[1] then
    if redis.call('EXISTS', key) == 0 then return {E_NOT_FOUND} end
  end
  if token ~= '' then
    if f[1] ~= 'processing' or f[2] ~= token then
      return {E_LEASE_LOST, f[1] or '', f[2] or ''}
    end
  elseif f[1] ~= 'processing' then
    return {E_NOT_PROCESSING, f[1] or ''}
  end
  return nil, f
end

-- The fencing check of the calls that end an attempt (complete, fail, release). They
-- record the token whose attempt they ended (`settled`), so the same call sent again -
-- redis-py re-sends a command when the connection drops before its reply - is told it
-- already happened instead of being refused as a lost lease. Returns (error table or nil,
-- fields as check_lease, the task's state when this token already settled it).
local function check_settle(key, token, ...)
  local bad, f = check_lease(key, token, ...)
  if bad and bad[1] == E_LEASE_LOST and redis.call('HGET', key, 'settled') == token then
    return nil, nil, bad[2]
  end
  return bad, f
end
