--[[
  Fleet-wide limits, checked and charged inside the claim and given back inside settle.
  `lbase` is the key prefix of the queue's limits (its queue-wide keys; the same as a
  single-partition queue's `base`). Mirrors utils/redis_queue/keys.py:
    lbase .. 'limits'          hash: the configuration, one field per kind of each limit
                               r:<key> "<rate> <per_ms> <burst>"   c:<key> "<slots>"
                               t:<key> "<tokens> <per_ms>"         p:<key> "1" (a pause)
    lbase .. 'limit:' .. key   hash: its state: tat (rate), ttat (tokens), pause (until,
                               ms), waiting / waiting_at (tasks held back at the last claim)
    lbase .. 'held:' .. key    zset: the tasks holding a concurrency slot, by lease deadline
    lbase .. 'lwait:' .. key   set: the task types with tasks held back by it (woken when a
                               slot or tokens come back)
    lbase .. 'lwaiting'        set: the keys that have an lwait set (one read tells a
                               settle whether anyone waits on what it frees)

  Rate and tokens are GCRA buckets (one "theoretical arrival time" each): a rate of r per
  p ms with burst b admits at most b + r * w / p tasks in any w ms; a token limit of t per
  p ms holds t tokens, refilled continuously, and a task whose reservation is larger than
  t is admitted when the bucket is full (so it is not starved), leaving it in debt.
  A concurrency slot is tied to the lease: it expires with the lease deadline, so a
  crashed worker's slot comes back without anyone releasing it.
]]

local function lim_kinds(raw, spec)
  for i = 1, #raw, 2 do
    local kind, name = string.match(raw[i], '^(%a):(.+)$')
    local value = raw[i + 1]
    if kind then
      local s = spec[name] or {}
      if kind == 'r' then
        local r, p, b = string.match(value, '^(%S+) (%S+) (%S+)$')
        r, p, b = tonumber(r), tonumber(p), tonumber(b)
        if r and p and b and r > 0 and p > 0 and b >= 1 then
          s.interval, s.burst = p / r, b
        end
      elseif kind == 'c' then
        s.slots = tonumber(value)
      elseif kind == 't' then
        local t, p = string.match(value, '^(%S+) (%S+)$')
        t, p = tonumber(t), tonumber(p)
        if t and p and t > 0 and p > 0 then s.per_token, s.window = p / t, p end
      elseif kind == 'p' then
        s.pause_marker = true
      end
      spec[name] = s
    end
  end
end

-- The limits of a queue for one script call, or nil when it has none (the common case:
-- one EXISTS of an absent key).
local function lim_open(lbase, now)
  if redis.call('EXISTS', lbase .. 'limits') == 0 then return nil end
  local raw = redis.pcall('HGETALL', lbase .. 'limits')
  if type(raw) ~= 'table' or raw.err or #raw == 0 then return nil end
  local L = {base = lbase, now = now, spec = {}, st = {}, retry_at = nil, deferred = {},
             waits = {}, admitted = {}, dirty = {}, adds = {}}
  lim_kinds(raw, L.spec)
  return L
end

-- Limits that admit nothing (keys a caller knows are blocked), for a partition whose real
-- limits are in another slot: tasks bound by them are held back as by a limit.
local function lim_blocked(base, now, names)
  local L = {base = base, now = now, spec = {}, st = {}, retry_at = nil, deferred = {},
             waits = {}, admitted = {}, dirty = {}, adds = {}, hint = true}
  for name in string.gmatch(names, '%S+') do
    L.spec[name] = {}
  end
  return L
end

-- A key that holds no task data but the wrong Redis type is replaced, not fatal.
local function lim_sane(key, want)
  local t = redis.call('TYPE', key).ok
  if t ~= 'none' and t ~= want then redis.call('DEL', key) end
end

-- A limit's state for this call, read once: a key of the wrong type (a hand edit; limit
-- keys hold no task data) is replaced rather than failing the script.
local function lim_state(L, name)
  local st = L.st[name]
  if st then return st end
  local s = L.spec[name]
  local sk = L.base .. 'limit:' .. name
  local f = redis.pcall('HMGET', sk, 'tat', 'ttat', 'pause', 'waiting')
  if type(f) ~= 'table' or f.err then
    redis.call('DEL', sk)
    f = {}
  end
  st = {tat = tonumber(f[1]) or 0, ttat = tonumber(f[2]) or 0, pause = tonumber(f[3]) or 0,
        waiting = tonumber(f[4]) or 0}
  if s.slots then
    local hk = L.base .. 'held:' .. name
    local held = redis.pcall('ZCARD', hk)
    if type(held) ~= 'number' then
      redis.call('DEL', hk)
      held = 0
    elseif held >= s.slots then -- full: slots whose lease expired are free again
      redis.call('ZREMRANGEBYSCORE', hk, '-inf', L.now)
      held = redis.call('ZCARD', hk)
    end
    st.held = held
  end
  L.st[name] = st
  return st
end

-- nil when `name` admits one more task reserving `cost` tokens; otherwise the time (ms)
-- it may admit one again (-1: when a holder settles).
local function lim_block(L, name, cost)
  local s = L.spec[name]
  if not s then return nil end
  if L.hint then return -1 end -- blocked, until when its caller knows
  local st = lim_state(L, name)
  local now = L.now
  if st.pause > now then return st.pause end
  if s.interval then
    local tat = math.max(st.tat, now) + s.interval
    if tat - now > s.burst * s.interval + 0.0001 then return tat - s.burst * s.interval end
  end
  if s.slots and st.held >= s.slots then
    local first = redis.call('ZRANGE', L.base .. 'held:' .. name, 0, 0, 'WITHSCORES')
    return tonumber(first[2]) or -1
  end
  if s.per_token and cost > 0 then
    local ttat = math.max(st.ttat, now)
    local need = cost * s.per_token
    if ttat > now and ttat + need - now > s.window then
      return ttat + math.min(0, need - s.window)
    end
  end
  return nil
end

-- Charges one task; true when it now holds something to give back at settle.
local function lim_take(L, name, cost, id, deadline)
  local s = L.spec[name]
  if not s then return false end
  local st = L.st[name]
  local holds = false
  if s.interval then
    st.tat = math.max(st.tat, L.now) + s.interval
    L.dirty[name] = true
  end
  if s.slots then
    local adds = L.adds[name]
    if not adds then
      adds = {}
      L.adds[name] = adds
    end
    adds[#adds + 1] = deadline
    adds[#adds + 1] = id
    st.held = st.held + 1
    holds = true
  end
  if s.per_token and cost > 0 then
    st.ttat = math.max(st.ttat, L.now) + cost * s.per_token
    L.dirty[name] = true
    holds = true
  end
  L.admitted[name] = true
  return holds
end

local function lim_note_block(L, name, at, task_type, count)
  L.deferred[name] = (L.deferred[name] or 0) + (count or 1)
  local w = L.waits[name]
  if not w then
    w = {}
    L.waits[name] = w
  end
  w[task_type] = true
  if at > 0 and (not L.retry_at or at < L.retry_at) then L.retry_at = at end
end

-- The limit keys a task is bound by: its type's, then those it listed at enqueue.
local function lim_keys(task_type, listed)
  local keys = {task_type}
  if listed then
    for name in string.gmatch(listed, '%S+') do
      if name ~= task_type then keys[#keys + 1] = name end
    end
  end
  return keys
end

-- Admits a task when every one of its limits does (all or nothing): returns true and
-- the keys it holds, or false and the key that refused (the task stays pending).
local function lim_admit(L, keys, cost, id, deadline, task_type)
  for _, name in ipairs(keys) do
    local at = lim_block(L, name, cost)
    if at then
      lim_note_block(L, name, at, task_type)
      return false, name
    end
  end
  local held = {}
  for _, name in ipairs(keys) do
    if lim_take(L, name, cost, id, deadline) then held[#held + 1] = name end
  end
  return true, held
end

-- Writes what the call changed, one HSET per limit: bucket times, how many tasks it held
-- back (and the types to wake for them), expired pauses.
local function lim_close(L)
  if L.hint then return end -- nothing here is state: the caller records what it held back
  for name, st in pairs(L.st) do
    local fields = {}
    if L.dirty[name] then
      fields = {'tat', string.format('%.3f', st.tat), 'ttat', string.format('%.3f', st.ttat)}
    end
    local n = L.deferred[name]
    if n then
      fields[#fields + 1] = 'waiting'
      fields[#fields + 1] = n
      fields[#fields + 1] = 'waiting_at'
      fields[#fields + 1] = L.now
      local types = {}
      for t, _ in pairs(L.waits[name]) do types[#types + 1] = t end
      local wk = L.base .. 'lwait:' .. name
      lim_sane(wk, 'set')
      call_sliced('SADD', wk, types)
      lim_sane(L.base .. 'lwaiting', 'set')
      redis.call('SADD', L.base .. 'lwaiting', name)
    elseif L.admitted[name] and st.waiting > 0 then
      fields[#fields + 1] = 'waiting'
      fields[#fields + 1] = 0
    end
    if #fields > 0 then call_sliced('HSET', L.base .. 'limit:' .. name, fields) end
    if L.adds[name] then call_sliced('ZADD', L.base .. 'held:' .. name, L.adds[name]) end
    if L.spec[name].pause_marker and st.pause <= L.now then
      redis.call('HDEL', L.base .. 'limits', 'p:' .. name)
    end
  end
end

-- Wakes the workers of every task type held back by `name`.
local function lim_wake(base, lbase, name, woken)
  local wk = lbase .. 'lwait:' .. name
  local types = redis.pcall('SMEMBERS', wk)
  if type(types) == 'table' and not types.err then
    for _, t in ipairs(types) do
      if woken then woken[t] = true else wake(base, t) end
    end
  end
  redis.call('DEL', wk)
  redis.pcall('SREM', lbase .. 'lwaiting', name)
end

-- A task that ends its attempt gives back what it holds (`held`: the keys recorded at
-- claim): its concurrency slots, and - when the handler reported `used` tokens - the
-- difference from the `cost` it reserved. Slots are freed, and whoever waits on those
-- keys woken, once per key when the script calls lim_flush (a settle of many tasks
-- touches each limit once, not once per task).
local lim_released = {} -- limit key -> ids that give a slot back in this script call

local function lim_reconcile(lbase, name, cost, used)
  local t = redis.pcall('HGET', lbase .. 'limits', 't:' .. name)
  if type(t) ~= 'string' then return end
  local spec = {}
  lim_kinds({'t:' .. name, t}, spec)
  local s = spec[name]
  local delta = (tonumber(used) or 0) - (tonumber(cost) or 0)
  if not (s and s.per_token and delta ~= 0) then return end
  local sk = lbase .. 'limit:' .. name
  lim_sane(sk, 'hash')
  local now = now_ms()
  local ttat = tonumber(redis.call('HGET', sk, 'ttat')) or 0
  if delta > 0 then
    ttat = math.max(ttat, now) + delta * s.per_token
  elseif ttat > now then
    ttat = math.max(now, ttat + delta * s.per_token)
  end
  redis.call('HSET', sk, 'ttat', string.format('%.3f', ttat))
end

local function lim_release(base, lbase, id, held, cost, used)
  if not held or held == '' then return end
  local reconcile = used ~= nil and used ~= ''
  for name in string.gmatch(held, '%S+') do
    local ids = lim_released[name]
    if not ids then
      ids = {}
      lim_released[name] = ids
    end
    ids[#ids + 1] = id
    if reconcile then lim_reconcile(lbase, name, cost, used) end
  end
end

-- With `woken` (a table), the types to wake are collected there instead of woken here
-- (a partitioned queue's wake-up keys are in its partitions' slots).
local function lim_flush(base, lbase, woken)
  local names = {}
  for name, ids in pairs(lim_released) do
    names[#names + 1] = name
    lim_sane(lbase .. 'held:' .. name, 'zset')
    call_sliced('ZREM', lbase .. 'held:' .. name, ids)
  end
  lim_released = {}
  if #names == 0 then return end
  local waited = redis.pcall('SMISMEMBER', lbase .. 'lwaiting', unpack(names)) -- <= 17 a task
  if type(waited) ~= 'table' or waited.err then return end
  for i, flag in ipairs(waited) do
    if flag == 1 then lim_wake(base, lbase, names[i], woken) end
  end
end

-- Pauses limit keys until `until_ms` (a pause never shortens one).
local function lim_pause(lbase, names, until_ms)
  for _, name in ipairs(names) do
    local sk = lbase .. 'limit:' .. name
    lim_sane(sk, 'hash')
    local current = tonumber(redis.call('HGET', sk, 'pause')) or 0
    if until_ms > current then redis.call('HSET', sk, 'pause', until_ms) end
    redis.call('HSET', lbase .. 'limits', 'p:' .. name, '1')
  end
end

-- Refreshes the deadline of a task's concurrency slots along with its lease.
local function lim_extend(lbase, id, held, deadline)
  if not held or held == '' then return end
  for name in string.gmatch(held, '%S+') do
    redis.pcall('ZADD', lbase .. 'held:' .. name, 'XX', deadline, id)
  end
end
