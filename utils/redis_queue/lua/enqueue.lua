--[[
  Enqueue one or more tasks (idempotent by task id).

  KEYS[1] delayed    zset
  KEYS[2] stats      hash
  KEYS[3] types      set
  ARGV[1] base       key prefix "<prefix>:{<queue>}:"
  ARGV[2] n          number of tasks that follow
  then, per task:
    id, type, priority (0-3), max_retries ('' = the queue's), delay_ms (0 = ready now),
    meta ('' = none), timeout_ms (0 = the worker's default), nchunks,
    payload chunk 1 .. payload chunk nchunks

  Only fields that differ from their defaults are stored (counters start absent = 0):
  every byte of a pending task's hash counts, a million times over.

  Returns {now_ms, r1, r2, ...}: ri = 1 when task i was created, or the existing task's
  HGETALL (a table) when the id already exists (nothing is changed then).
  Errors: {-10, key, type} a queue structure or task key holds the wrong Redis type.
]]
--@include common

local base = ARGV[1]
local n = tonumber(ARGV[2])

-- Validation pass: no write happens unless every key has the expected type.
local checks = {KEYS[1], 'zset', KEYS[2], 'hash', KEYS[3], 'set'}
local seen_types = {}
local pos = 3
local tasks = {}
for i = 1, n do
  local nchunks = tonumber(ARGV[pos + 7])
  local task = {id = ARGV[pos], type = ARGV[pos + 1], priority = tonumber(ARGV[pos + 2]),
                max_retries = ARGV[pos + 3], delay = tonumber(ARGV[pos + 4]),
                meta = ARGV[pos + 5], timeout = tonumber(ARGV[pos + 6]),
                first = pos + 8, nchunks = nchunks}
  tasks[i] = task
  pos = pos + 8 + nchunks
  if not seen_types[task.type] then
    seen_types[task.type] = true
    checks[#checks + 1] = pending_key(base, task.type)
    checks[#checks + 1] = 'zset'
  end
  checks[#checks + 1] = task_key(base, task.id)
  checks[#checks + 1] = 'hash'
end
local bad = check_types(checks)
if bad then return bad end

local now = now_ms()
local out = {now}
local woken = {}
local tick = nil
local created = 0
for i = 1, n do
  local t = tasks[i]
  local key = task_key(base, t.id)
  if redis.call('EXISTS', key) == 1 then
    out[#out + 1] = redis.call('HGETALL', key)
  else
    local state = 'pending'
    if t.delay > 0 then state = 'delayed' end
    local fields = {'state', state, 'type', t.type, 'prio', t.priority, 'created', now}
    if t.max_retries ~= '' then
      fields[#fields + 1] = 'max_retries'
      fields[#fields + 1] = t.max_retries
    end
    if t.meta ~= '' then
      fields[#fields + 1] = 'meta'
      fields[#fields + 1] = t.meta
    end
    if t.timeout > 0 then
      fields[#fields + 1] = 'timeout'
      fields[#fields + 1] = t.timeout
    end
    for c = 0, t.nchunks - 1 do
      fields[#fields + 1] = c == 0 and 'payload' or ('payload.' .. c)
      fields[#fields + 1] = ARGV[t.first + c]
    end
    redis.call('HSET', key, unpack(fields))
    redis.call('DEL', done_key(base, t.id))
    if t.delay > 0 then
      redis.call('ZADD', KEYS[1], now + t.delay, t.id)
    else
      tick = tick and tick + 1 or next_tick(KEYS[2])
      redis.call('ZADD', pending_key(base, t.type), pending_score(tick, t.priority), t.id)
      woken[t.type] = true
    end
    created = created + 1
    out[#out + 1] = 1
  end
end
if created > 0 then
  redis.call('HINCRBY', KEYS[2], 'enqueued', created)
  for task_type, _ in pairs(seen_types) do redis.call('SADD', KEYS[3], task_type) end
end
if tick then redis.call('HSET', KEYS[2], 'clock', string.format('%.0f', tick)) end
for task_type, _ in pairs(woken) do wake(base, task_type) end
return out
