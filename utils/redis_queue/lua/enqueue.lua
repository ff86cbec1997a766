--[[
  Enqueue one or more tasks (idempotent by task id). All-or-nothing: every key is checked
  before the first write.

  KEYS[1] delayed    zset
  KEYS[2] stats      hash (and this minute's history of created tasks, include/common.lua)
  KEYS[3] types      set
  ARGV[1] base       key prefix "<prefix>:{<queue>}:"
  ARGV[2] events     max length of the events stream (include/common.lua task_event); '0' = off
  ARGV[3..] tasks, three arguments each:
    header   "<id> <type> <priority 0-3> <max_retries or -> <delay_ms> <timeout_ms>"
             then optionally " l=<limit>,<limit>..." (the limit keys it listed) and
             " c=<tokens>" (the tokens it expects to use) and " g=<group>" (its fairness
             group) and " b=1" (claim-check: the payload goes into its own string key,
             base .. 'blob:' .. id .. ':payload', referenced by the field payload.blob)
             or " e=<size>:<key>" (claim-check in a user-supplied store, where the client
             put it under <key>; the payload argument is then '')
             (ids, types and limit keys cannot contain spaces or commas; '-' = the queue's
             max_retries, delay 0 = ready now, timeout 0 = the worker's default)
    meta     JSON object, or '' for none
    payload  JSON object, stored in the hash (include/common.lua add_blob) or, with b=1,
             in its blob key, written in this same atomic step

  Only fields that differ from their defaults are stored (counters start absent = 0):
  every byte of a pending task's hash counts, a million times over.

  Two more header options group equal tasks by "<digest>" (the hash of their unique key,
  hex), per type:
    " u=<window_ms>:<digest>"  unique_for: while base .. 'unique:<type>:<digest>' (a string
             with a PX of the window) names a task, an equal task is not created; the first
             one sets it, SET NX-like, in this same step (the window outlives the task's run)
    " d=<digest>"  debounce (delay_ms is the debounce window): while
             base .. 'debounce:<type>:<digest>' names a delayed task that never ran, this
             task replaces it - same id, this call's fields and payload, due delay_ms from
             now (trailing edge); otherwise it is created and the key set to it

  Returns {now_ms, r1, r2, ...}: ri = 1 when task i was created, the existing task's
  HGETALL (a table) when the id already exists (nothing is changed then), or {id, HGETALL}
  when a window decided: the unique window's task (HGETALL empty when its record is gone;
  nothing changed) or the debounced task this call replaced.
  Errors: {-10, key, type} a queue structure or task key holds the wrong Redis type;
          {-11, 'blob reference', value} a malformed e= option.
]]
--@include common

local PRIORITY = {['0'] = 0, ['1'] = 1, ['2'] = 2, ['3'] = 3}
local base = ARGV[1]
events_from(ARGV[2])
local tasks = {}
local kinds = {}
local type_names, named = {}, {}
local seen_ids = {}
local any_delayed, any_group = false, false
local checks = {}
for i = 3, #ARGV, 3 do
  local id, task_type, prio, max_retries, delay, timeout, extra =
    string.match(ARGV[i], '^(%S+) (%S+) (%d) (%S+) (%d+) (%d+)(.*)$')
  -- Numbers for arithmetic, their text for what is stored: Redis formats a Lua number
  -- argument with printf, ~4,000 instructions each, more than the rest of a field. The
  -- common values skip tonumber (a strtod each, ~1,000 instructions).
  local t = {id = id, type = task_type, prio = PRIORITY[prio] or tonumber(prio),
             prio_text = prio, max_retries = max_retries,
             delay = delay == '0' and 0 or tonumber(delay),
             timeout = timeout == '0' and 0 or tonumber(timeout),
             timeout_text = timeout, meta = ARGV[i + 1], payload = ARGV[i + 2],
             key = task_key(base, id)}
  if extra ~= '' then
    for name, value in string.gmatch(extra, ' (%a)=(%S+)') do
      if name == 'l' then t.limits = string.gsub(value, ',', ' ') end
      if name == 'c' then t.cost = value end
      if name == 'g' then t.group = value end
      if name == 'b' then t.blob = true end
      if name == 'e' then
        if ext_ref_error(value) then return ext_ref_error(value) end
        t.ext = value
      end
      if name == 'u' then
        local ms, digest = string.match(value, '^(%d+):(%x+)$')
        t.unique_ms, t.unique = tonumber(ms), digest
      end
      if name == 'd' then t.debounce = value end
    end
  end
  tasks[#tasks + 1] = t
  if t.group then any_group = true end
  if not named[task_type] then
    named[task_type] = true
    type_names[#type_names + 1] = task_type
  end
  if seen_ids[id] then
    t.existing = 'hash' -- the same id earlier in this batch: it wins, as an earlier call would
  else
    seen_ids[id] = true
    -- EXISTS replies a number where TYPE builds a table: a new id (the common case) is
    -- settled by it; only an id that exists pays for TYPE.
    t.existing = 'none'
    if redis.call('EXISTS', t.key) == 1 then
      t.existing = redis.call('TYPE', t.key).ok
      if t.existing ~= 'hash' then return {E_WRONGTYPE, t.key, t.existing} end
    end
  end
  if t.unique then
    checks[#checks + 1] = unique_key(base, task_type, t.unique)
    checks[#checks + 1] = 'string'
  end
  if t.debounce then
    checks[#checks + 1] = debounce_key(base, task_type, t.debounce)
    checks[#checks + 1] = 'string'
  end
  if t.delay > 0 then
    any_delayed = true
  elseif not kinds[task_type] then
    kinds[task_type] = true
    checks[#checks + 1] = pending_key(base, task_type)
    checks[#checks + 1] = 'zset'
  end
end
if any_delayed then
  checks[#checks + 1] = KEYS[1]
  checks[#checks + 1] = 'zset'
end
if any_group then
  checks[#checks + 1] = base .. 'groups'
  checks[#checks + 1] = 'zset'
end
local bad = check_types(checks)
if bad then return bad end
-- The queue's clock and lifetime count in one read (written back in one HSET at the end),
-- with the check that the stats key is a hash.
local stats = redis.pcall('HMGET', KEYS[2], 'clock', 'enqueued')
if stats.err then return {E_WRONGTYPE, KEYS[2], 'not a hash'} end
local tick = tonumber(stats[1] or '0')
-- The first write, which also checks the types set's type (no TYPE call): a failed SADD
-- writes nothing. Recording a type is harmless even if every task exists already.
local added = 0
for i = 1, #type_names, UNPACK_MAX do
  local last = math.min(i + UNPACK_MAX - 1, #type_names)
  local n = redis.pcall('SADD', KEYS[3], unpack(type_names, i, last))
  if type(n) ~= 'number' then return {E_WRONGTYPE, KEYS[3], redis.call('TYPE', KEYS[3]).ok} end
  added = added + n
end

local now, now_us = server_now()
local now_text = string.format('%d', now) -- once per call, not once per task

-- Fairness: a grouped task is placed after its group's last task or at the point the
-- queue has served up to (the greatest place claimed, `served`), whichever is later, so
-- groups take turns: a group's 10,000th task does not come before another's first.
local groups_key = base .. 'groups'
local served = nil
local function group_place(group)
  if not served then
    served = tonumber(redis.call('HGET', KEYS[2], 'served') or '')
    if not served then -- nothing claimed yet: groups start level, at this point
      served = now_us - 1
      redis.call('HSET', KEYS[2], 'served', string.format('%.0f', served))
    end
  end
  local last = tonumber(redis.call('ZSCORE', groups_key, group) or '') or 0
  local place = math.max(served, last) + 1
  redis.call('ZADD', groups_key, place, group)
  return place
end
if now_us > tick then tick = now_us - 1 end
local out = {now}
-- Per type: the pending entries this call adds, as ZADD's arguments, sent in one ZADD
-- after the loop (one call a task cost ~6% of a bulk enqueue), and the best (lowest)
-- score among them, as a number.
local pending_adds, best_score = {}, {}
local created, replaced = 0, 0
-- The windows' verdict on task t: the id of the task it is equal to (unique), or of the
-- held task it replaces (debounce); t.id and t.key become the held task's then.
local function window(t)
  if t.unique then
    local first = redis.call('GET', unique_key(base, t.type, t.unique))
    if first then return first end
  end
  if t.debounce then
    local held = redis.call('GET', debounce_key(base, t.type, t.debounce))
    if held then
      local f = redis.call('HMGET', task_key(base, held), 'state', 'type', 'attempts')
      if f[1] == 'delayed' and f[2] == t.type and not f[3] then
        t.replaces, t.id, t.key = true, held, task_key(base, held)
        delete_task(base, held) -- its fields and blob; this call's go under its id
      end
    end
  end
  return nil
end
for _, t in ipairs(tasks) do
  local first = (t.unique or t.debounce) and window(t)
  if first then
    out[#out + 1] = {first, task_fields(base, first, task_key(base, first))}
  elseif t.existing == 'hash' and not t.replaces then
    out[#out + 1] = task_fields(base, t.id, t.key)
  else
    local fields = {'state', t.delay > 0 and 'delayed' or 'pending', 'type', t.type,
                    'prio', t.prio_text, 'created', now_text}
    if t.max_retries ~= '-' then
      fields[#fields + 1] = 'max_retries'
      fields[#fields + 1] = t.max_retries
    end
    if t.meta ~= '' then add_blob(fields, 'meta', t.meta, false) end
    if t.timeout > 0 then
      fields[#fields + 1] = 'timeout'
      fields[#fields + 1] = t.timeout_text
    end
    if t.limits then
      fields[#fields + 1] = 'limits'
      fields[#fields + 1] = t.limits
    end
    if t.cost then
      fields[#fields + 1] = 'cost'
      fields[#fields + 1] = t.cost
    end
    if t.group then
      fields[#fields + 1] = 'group'
      fields[#fields + 1] = t.group
    end
    if t.blob then
      put_blob(fields, base, t.id, 'payload', t.payload)
    elseif t.ext then
      put_ext_ref(fields, 'payload', t.ext)
    else
      add_blob(fields, 'payload', t.payload, false)
    end
    call_sliced('HSET', t.key, fields)
    if t.delay > 0 then
      schedule(base, KEYS[1], now + t.delay, t.id, t.type)
    else
      tick = tick + 1
      local place = tick
      if t.group then place = group_place(t.group) end
      local adds = pending_adds[t.type]
      if not adds then
        adds = {}
        pending_adds[t.type] = adds
      end
      adds[#adds + 1] = pending_score(place, t.prio)
      adds[#adds + 1] = t.id
      local score = place - t.prio * BAND_US -- the number pending_score formats
      if not best_score[t.type] or score < best_score[t.type] then best_score[t.type] = score end
    end
    if t.unique then
      redis.call('HSET', t.key, 'uniq', t.unique)
      redis.call('SET', unique_key(base, t.type, t.unique), t.id, 'PX', t.unique_ms)
    end
    if t.debounce then
      redis.call('HSET', t.key, 'dbnc', t.debounce)
      -- Cleanup only: a hold is live while its task is delayed and never ran.
      redis.call('SET', debounce_key(base, t.type, t.debounce), t.id, 'PX', t.delay + 60000)
    end
    task_event(base, 'enqueued', t.id, t.type, '0')
    if t.replaces then
      replaced = replaced + 1
      out[#out + 1] = {t.id, task_fields(base, t.id, t.key)}
    else
      created = created + 1
      out[#out + 1] = 1
    end
  end
end
if replaced > 0 then redis.call('HINCRBY', KEYS[2], 'debounced', replaced) end
if created > 0 then
  -- tally() without its HINCRBY: the lifetime count read above goes back with the clock
  -- in one HSET, and this minute's history as tally() would add it (flush_history).
  history.enqueued = (history.enqueued or 0) + created
  redis.call('HSET', KEYS[2], 'clock', string.format('%d', tick), 'enqueued',
             string.format('%d', (tonumber(stats[2]) or 0) + created))
  flush_history(base)
end
for task_type, adds in pairs(pending_adds) do
  call_sliced('ZADD', pending_key(base, task_type), adds)
  mark_ready(base, task_type, string.format('%d', best_score[task_type]))
  wake(base, task_type)
end
-- Workers that serve every type block on the wake keys of the types they know, plus this
-- one, which tells them a new type appeared.
if added > 0 then wake_key(base .. 'wake') end
return out
