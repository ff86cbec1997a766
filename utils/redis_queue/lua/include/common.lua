--[[
  Shared helpers, spliced into each script by scripts.py where it says "include common".

  Key layout (mirrors utils/redis_queue/keys.py; keep both in step). `base` is
  "<prefix>:{<queue>}:" and every key of a queue starts with it, so all of them hash
  to one Redis Cluster slot.
    base .. 'task:' .. id      hash: one task
    base .. 'pending:' .. type zset: ready ids of one task type
    base .. 'wake:' .. type    list: wake-up token for workers serving that type
    base .. 'wake'             list: wake-up token for workers serving every type
    base .. 'done:' .. id      list: pushed once when the task reaches a final state

  Error replies are tables whose first element is a negative code (see errors.py).
]]

local E_NOT_FOUND = -1
local E_NOT_PROCESSING = -2
local E_LEASE_LOST = -3
local E_BAD_STATE = -4
local E_WRONGTYPE = -10

-- Priority bands: score = (now_us - EPOCH_US) - priority * BAND_US, so every task of a
-- higher priority sorts first and FIFO holds inside a band for ~30 years of uptime.
local EPOCH_US = 1735689600000000 -- 2025-01-01T00:00:00Z
local BAND_US = 1000000000000000
local DONE_TTL_MS = 60000

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function task_key(base, id) return base .. 'task:' .. id end
local function pending_key(base, task_type) return base .. 'pending:' .. task_type end
local function done_key(base, id) return base .. 'done:' .. id end

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

-- Strictly increasing timeline shared by the whole queue, so tasks enqueued in the same
-- microsecond still keep their order.
local function next_tick(stats_key)
  local t = redis.call('TIME')
  local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2]) - EPOCH_US
  local last = tonumber(redis.call('HGET', stats_key, 'clock') or '0')
  if now_us <= last then now_us = last + 1 end
  redis.call('HSET', stats_key, 'clock', string.format('%.0f', now_us))
  return now_us
end

local function pending_score(tick, priority)
  return string.format('%.0f', tick - priority * BAND_US)
end

-- One token is enough: a woken worker that claims a task and sees more pushes the next one.
-- Wake keys hold no data, and waking runs after a script's writes: a wake key that
-- something else overwrote is replaced rather than failing the script halfway.
local function wake_one(k)
  local t = redis.call('TYPE', k).ok
  if t ~= 'none' and t ~= 'list' then
    redis.call('DEL', k)
    t = 'none'
  end
  if t == 'none' or redis.call('LLEN', k) == 0 then redis.call('LPUSH', k, '1') end
end

local function wake(base, task_type)
  wake_one(base .. 'wake:' .. task_type)
  wake_one(base .. 'wake')
end

local function notify_done(base, id)
  local k = done_key(base, id)
  redis.call('DEL', k)
  redis.call('RPUSH', k, '1')
  redis.call('PEXPIRE', k, DONE_TTL_MS)
end

-- Blobs (payload, result, error) live in the task hash as chunks of at most 64 bytes
-- (`name`, `name.1`, `name.2`, ...), which keeps the hash a compact listpack.
local function clear_blob(key, name)
  redis.call('HDEL', key, name)
  local i = 1
  while redis.call('HDEL', key, name .. '.' .. i) == 1 do i = i + 1 end
end

local function set_blob(key, name, chunks, first)
  clear_blob(key, name)
  local n = #chunks - first + 1
  if n <= 0 then return end
  redis.call('HSET', key, name, chunks[first])
  for i = 1, n - 1 do redis.call('HSET', key, name .. '.' .. i, chunks[first + i]) end
end

-- Final failure of a task with a readable hash: to the DLQ, or to `failed` when the DLQ is off.
local function finalize_failure(base, key, id, chunks, first, now, dlq_key, failed_key, stats_key, use_dlq)
  redis.call('HDEL', key, 'lease', 'cancel')
  redis.call('HSET', key, 'completed', now)
  set_blob(key, 'error', chunks, first)
  if use_dlq then
    redis.call('HSET', key, 'state', 'dead_letter')
    redis.call('SADD', dlq_key, id)
    redis.call('HINCRBY', stats_key, 'dead_lettered', 1)
  else
    redis.call('HSET', key, 'state', 'failed')
    redis.call('ZADD', failed_key, now, id)
  end
  redis.call('HINCRBY', stats_key, 'failed', 1)
  notify_done(base, id)
end

-- A task whose record cannot be trusted goes to the DLQ with the reason. A record that is
-- not a hash is replaced by a minimal one; an id without any record is dropped, since
-- nothing is left to keep.
local function quarantine(base, id, reason, now, dlq_key, failed_key, stats_key, use_dlq)
  local key = task_key(base, id)
  local t = redis.call('TYPE', key).ok
  if t == 'none' then
    redis.call('HINCRBY', stats_key, 'orphans_dropped', 1)
    return
  end
  if t ~= 'hash' then redis.call('DEL', key) end
  finalize_failure(base, key, id, {reason}, 1, now, dlq_key, failed_key, stats_key, use_dlq)
  redis.call('HINCRBY', stats_key, 'corrupt', 1)
end

local function mark_cancelled(base, key, id, now, cancelled_key, stats_key)
  redis.call('HDEL', key, 'lease', 'cancel')
  redis.call('HSET', key, 'state', 'cancelled', 'completed', now)
  redis.call('ZADD', cancelled_key, now, id)
  redis.call('HINCRBY', stats_key, 'cancelled', 1)
  notify_done(base, id)
end

-- A hash that the engine can move around: it exists, has a type and is in `state`.
local function is_sound(key, state)
  return redis.call('TYPE', key).ok == 'hash' and redis.call('HGET', key, 'state') == state
    and redis.call('HEXISTS', key, 'type') == 1
end

-- Puts a task back into its type's pending set at its priority.
local function make_pending(base, key, id, stats_key, tick_override)
  local f = redis.call('HMGET', key, 'type', 'prio')
  local tick = tick_override or next_tick(stats_key)
  redis.call('ZADD', pending_key(base, f[1]), pending_score(tick, tonumber(f[2]) or 1), id)
  redis.call('HSET', key, 'state', 'pending')
  wake(base, f[1])
end

-- Fencing check shared by complete, fail, extend and release. An empty token means the
-- caller holds no lease (an operator override): only the state is checked then.
local function check_lease(key, token)
  local t = redis.call('TYPE', key).ok
  if t == 'none' then return {E_NOT_FOUND} end
  if t ~= 'hash' then return {E_WRONGTYPE, key, t} end
  local f = redis.call('HMGET', key, 'state', 'lease')
  if token ~= '' then
    if f[1] ~= 'processing' or f[2] ~= token then
      return {E_LEASE_LOST, f[1] or '', f[2] or ''}
    end
  elseif f[1] ~= 'processing' then
    return {E_NOT_PROCESSING, f[1] or ''}
  end
  return nil
end
