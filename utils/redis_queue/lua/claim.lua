--[[
  Claim up to `count` ready tasks for a worker, granting each a lease with a fencing token.
  Before claiming it does a bounded amount of housekeeping with server time: promotes due
  delayed tasks and reclaims expired leases (at most MAINT_BATCH of each per call).

  KEYS[1] processing  zset (score = lease deadline, ms)
  KEYS[2] delayed     zset (score = due time, ms)
  KEYS[3] stats       hash
  KEYS[4] types       set
  KEYS[5] dlq         set
  KEYS[6] failed      zset
  KEYS[7] cancelled   zset
  KEYS[8] dlq_order   zset (the DLQ's ids by dead-letter time, ms)
  KEYS[9] paused      hash ("*" or a task type -> ms paused at; pause.lua, resume.lua)
  ARGV[1] base        key prefix "<prefix>:{<queue>}:"
  ARGV[2] worker_id
  ARGV[3] lease_ms
  ARGV[4] count       max tasks to claim (0 = housekeeping only); capped at MAX_BATCH
  ARGV[5] max_lease_losses  a task reclaimed more often than this is dead-lettered
  ARGV[6] use_dlq     '1' or '0'
  ARGV[7] suspects    '1': the caller may take a task that lost a lease before (a suspect),
                      which then comes alone; '0': it already runs one, skip them
  ARGV[8] max_score   '' or a score: only tasks that sort before it are claimed (a caller
                      claiming across partitions passes the best priority band another
                      partition holds, so no lower band is taken here while it waits)
  ARGV[9] want_head   '1': report the best score left among the served types a limit
                      does not hold back
  ARGV[10] request    '' or an id unique to this call: the tasks it claims are remembered
                      (for one lease time, per worker), so the same call sent again - redis-py
                      re-sends a command whose connection dropped before the reply - gets
                      the same tasks back instead of leasing more that nobody will run
  ARGV[11] blocked     limit keys a partitioned queue's caller knows admit nothing now
                      (space-separated; its limits are checked by permit.lua in another
                      slot): tasks bound by them are left where they are, as a limit would
  ARGV[12] events     max length of the events stream (include/common.lua task_event); '0' = off
  ARGV[13..] task types served (none = every known type)

  Suspects run alone: a task that lost its lease twice (once when max_lease_losses is 1)
  may be what killed its worker (a poison task), and the tasks that ran beside it were
  reclaimed with it, next to it in the queue. Handing each worker at most one suspect,
  never in a batch with other tasks, keeps them apart, so a poison task takes a good task
  down with it at most twice and only the poison reaches max_lease_losses. One lost lease
  is not enough: a killed worker or an outage longer than the lease costs every task in
  flight one, and isolating all of those would run them one per worker.

  A reclaimed lease ends its attempt with an error: the task's attempt records keep it
  (include/common.lua add_attempt), and what the reaper and quarantine count goes into
  this minute's history too, once per call.

  An id whose record is corrupt (not a hash, no type, no state) is quarantined: dead-lettered
  with the reason. An id whose record is sound but in another state (a stale entry, say a
  finished task's id added back by hand) is only dropped from the structure and counted as
  `stale_dropped`: its record is left alone.

  Pause: a paused type (every type when "*" is paused) is not claimed from; it is read
  here, in the claim's own atomic step, so no claim slips past a pause. Promotion and
  reaping go on, and the served types are still reported (the caller keeps blocking on
  their wake keys, which resume.lua pushes).

  Limits (include/limits.lua): a task is handed out only when every limit it is bound by
  (its type's and those it listed) admits it; the claim charges them all at once. A type
  whose own limit is exhausted is not read at all; a task held back by a listed limit is
  put back where it was, untouched (no attempt, no retry), up to MAINT_BATCH per call, and
  the next ready task is tried instead.

  Returns {now_ms, next_event_ms, {types served}, head, {limit, held back, ...},
  {id, token, HGETALL... (+ 'payload', its blob key's value, for a claim-checked payload)},
  ...}; next_event_ms is the earliest delayed due time, lease
  deadline or time a limit that held a task back admits again (-1 when there is none), so
  an idle worker knows how long it may block; head is the best pending score left after
  the claim ('' when none, or when not asked for).
  Errors: {-10, key, type} a queue structure key holds the wrong Redis type;
          {-11, name, value} a numeric argument is not a number.
]]
--@include common
--@include limits

local MAINT_BATCH = 100
local base = ARGV[1]
events_from(ARGV[12])
local lease_ms, count, max_losses, bad
lease_ms, bad = number_arg(ARGV[3], 'lease_ms')
if bad then return bad end
count, bad = number_arg(ARGV[4], 'count')
if bad then return bad end
max_losses, bad = number_arg(ARGV[5], 'max_lease_losses')
if bad then return bad end
count = math.max(0, math.min(count, MAX_BATCH))
local suspect_after = math.max(1, math.min(2, max_losses)) -- lost leases that make a suspect
local use_dlq = ARGV[6] == '1'
local take_suspects = ARGV[7] == '1'
local max_score = nil
if ARGV[8] ~= '' then
  max_score, bad = number_arg(ARGV[8], 'max_score')
  if bad then return bad end
end
local want_head = ARGV[9] == '1'

bad = check_types({KEYS[4], 'set'})
if bad then return bad end
local types = {}
if #ARGV >= 13 then
  for i = 13, #ARGV do types[#types + 1] = ARGV[i] end
else
  types = redis.call('SMEMBERS', KEYS[4])
end
local checks = {KEYS[1], 'zset', KEYS[2], 'zset', KEYS[3], 'hash', KEYS[5], 'set',
                KEYS[6], 'zset', KEYS[7], 'zset', KEYS[8], 'zset', KEYS[9], 'hash'}
for _, t in ipairs(types) do
  checks[#checks + 1] = pending_key(base, t)
  checks[#checks + 1] = 'zset'
end
bad = check_types(checks)
if bad then return bad end

local now = now_ms()
local ends = {dlq = KEYS[5], dlq_at = KEYS[8], failed = KEYS[6], stats = KEYS[3]}

local request = ARGV[10]
local replay_key = base .. 'claimed:' .. ARGV[2]
if request ~= '' then
  local seen = redis.pcall('GET', replay_key)
  if type(seen) == 'string' and string.sub(seen, 1, #request + 1) == request .. '\n' then
    -- This call, sent again: the tasks it claimed, those still leased to it.
    local again = {now, -1, types, '', {}}
    for id, token in string.gmatch(string.sub(seen, #request + 2), '(%S+) (%S+)') do
      local key = task_key(base, id)
      local f = redis.pcall('HMGET', key, 'state', 'lease')
      if type(f) == 'table' and not f.err and f[1] == 'processing' and f[2] == token then
        again[#again + 1] = {id, tonumber(token), task_fields(base, id, key)}
      end
    end
    return again
  end
end

-- Promote due delayed tasks.
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, MAINT_BATCH)) do
  redis.call('ZREM', KEYS[2], id)
  local key = task_key(base, id)
  local broken_pending = is_sound(key, 'delayed')
    and check_pending_key(base, redis.call('HGET', key, 'type'))
  if broken_pending then
    quarantine(base, id, 'pending set ' .. broken_pending[2] .. ' is a ' .. broken_pending[3],
               now, ends, use_dlq)
  elseif is_sound(key, 'delayed') then
    make_pending(base, key, id, KEYS[3])
    task_event(base, 'promoted', id)
  elseif is_stale_entry(key, 'delayed') then
    redis.call('HINCRBY', KEYS[3], 'stale_dropped', 1)
  else
    quarantine(base, id, 'corrupt task record found in the delayed set', now, ends, use_dlq)
  end
end

-- Reclaim expired leases: back to pending, or to the DLQ when the lease was lost too often.
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, MAINT_BATCH)) do
  redis.call('ZREM', KEYS[1], id)
  local key = task_key(base, id)
  local broken_pending = is_sound(key, 'processing')
    and check_pending_key(base, redis.call('HGET', key, 'type'))
  if broken_pending then
    quarantine(base, id, 'pending set ' .. broken_pending[2] .. ' is a ' .. broken_pending[3],
               now, ends, use_dlq)
  elseif is_sound(key, 'processing') then
    local losses = redis.call('HINCRBY', key, 'lease_losses', 1)
    redis.call('HINCRBY', KEYS[3], 'reclaimed', 1)
    local f = redis.call('HMGET', key, 'cancel', 'error.count', 'attempts', 'worker', 'att.n')
    local stale, fields = {}, {}
    local lost = 'lease lost ' .. losses .. ' times (worker died or stalled)'
    add_attempt(stale, fields, key, f[5], f[3], now, f[4], lost)
    if f[1] == '1' then
      call_sliced('HDEL', key, stale)
      call_sliced('HSET', key, fields)
      mark_cancelled(base, key, id, now, KEYS[7], KEYS[3])
    elseif losses > max_losses then
      finalize_failure(base, key, id, lost, f[2], now, ends, use_dlq, stale, fields)
    else
      stale[#stale + 1] = 'lease'
      call_sliced('HDEL', key, stale)
      call_sliced('HSET', key, fields)
      make_pending(base, key, id, KEYS[3])
      task_event(base, 'retried', id, nil, nil, lost)
    end
  elseif is_stale_entry(key, 'processing') then
    redis.call('HINCRBY', KEYS[3], 'stale_dropped', 1)
  else
    quarantine(base, id, 'corrupt task record found in the processing set', now, ends,
               use_dlq)
  end
end

-- Limits: a served type whose own limit admits nothing now is left out of this claim.
-- A partitioned queue's limits live in another slot: its caller passes the keys it knows
-- are blocked, and they hold tasks back here as a limit would (permit.lua decides).
-- Pause: what is paused is left out before anything is picked.
local claimable = types
if redis.call('HLEN', KEYS[9]) > 0 then
  claimable = {}
  if redis.call('HEXISTS', KEYS[9], '*') == 0 then
    for _, t in ipairs(types) do
      if redis.call('HEXISTS', KEYS[9], t) == 0 then claimable[#claimable + 1] = t end
    end
  end
end

local L = lim_open(base, now)
if not L and ARGV[11] ~= '' then L = lim_blocked(base, now, ARGV[11]) end
local open_types = claimable
if L then
  open_types = {}
  for _, t in ipairs(claimable) do
    local at = lim_block(L, t, 0)
    if not at then
      open_types[#open_types + 1] = t
    else
      local waiting = redis.call('ZCARD', pending_key(base, t))
      if waiting > 0 then lim_note_block(L, t, at, t, waiting) end
    end
  end
end

-- A binary min-heap of cursors over the served types' pending sets, ordered by the score
-- of each cursor's current head.
local function heap_push(heap, c)
  heap[#heap + 1] = c
  local i = #heap
  while i > 1 do
    local parent = math.floor(i / 2)
    if heap[parent].head <= heap[i].head then break end
    heap[parent], heap[i] = heap[i], heap[parent]
    i = parent
  end
end

local function heap_pop(heap)
  local top, n = heap[1], #heap
  heap[1] = heap[n]
  heap[n] = nil
  n = n - 1
  local i = 1
  while true do
    local l, r, m = 2 * i, 2 * i + 1, i
    if l <= n and heap[l].head < heap[m].head then m = l end
    if r <= n and heap[r].head < heap[m].head then m = r end
    if m == i then break end
    heap[i], heap[m] = heap[m], heap[i]
    i = m
  end
  return top
end

-- Priority aging (off unless the queue sets aging_ms): a task that waited a whole window
-- ranks one priority higher, two after two windows, up to CRITICAL; within a rank the
-- older task goes first. Each priority band of a type's set is then a cursor of its own,
-- ranked by its head's aged key, which rises along the band (older heads rank higher).
local aging_us = nil
-- One read of the counters this claim needs: the aging window, the fencing counter and
-- how far the queue has served (fairness).
local counters = redis.call('HMGET', KEYS[3], 'aging_ms', 'fence', 'served')
local aging_ms = tonumber(counters[1] or '')
if aging_ms and aging_ms > 0 then
  aging_us = aging_ms * 1000
  max_score = nil -- a band bound from other partitions does not rank aged tasks: each
                  -- partition serves its own aged order, and partitions take turns
end
local now_tick = now * 1000 - EPOCH_US

local function aged_key(score, band)
  local tick = score + band * BAND_US
  local rank = math.min(3, band + math.max(0, math.floor((now_tick - tick) / aging_us)))
  return tick - rank * BAND_US
end

-- Reads the next page of a cursor's pending set (or band); false once it has no more.
local function advance(c)
  c.pos = c.pos + 2
  if c.pos > #c.rows then
    if c.exhausted then return false end
    if c.band then
      c.rows = redis.call('ZRANGE', c.key, c.low, c.high, 'BYSCORE', 'LIMIT', c.offset, c.page,
                          'WITHSCORES')
    else
      c.rows = redis.call('ZRANGE', c.key, c.offset, c.offset + c.page - 1, 'WITHSCORES')
    end
    c.exhausted = #c.rows < 2 * c.page
    c.offset = c.offset + c.page
    c.page = c.page * 2
    c.pos = 1
    if #c.rows == 0 then return false end
  end
  c.head = tonumber(c.rows[c.pos + 1])
  if c.band then c.head = aged_key(c.head, c.band) end
  return true
end

-- The best `k` ready ids across the served types (lowest score first), removed from
-- their pending sets, as {id, type, score as text}. Many types are merged through the
-- heap, reading each set a page at a time (pages double), so the cost is about
-- types + k log(types) reads, not types * k.
local function pick(k)
  local picked = {}
  if #open_types == 0 then return picked end
  if #open_types == 1 and not max_score and not aging_us then
    local popped = redis.call('ZPOPMIN', pending_key(base, open_types[1]), k)
    for i = 1, #popped, 2 do
      picked[#picked + 1] = {popped[i], open_types[1], popped[i + 1]}
    end
    return picked
  end
  if #open_types == 1 and not aging_us then
    local key = pending_key(base, open_types[1])
    local rows = redis.call('ZRANGE', key, '-inf', '(' .. string.format('%.0f', max_score),
                            'BYSCORE', 'LIMIT', 0, k, 'WITHSCORES')
    local ids = {}
    for i = 1, #rows, 2 do
      picked[#picked + 1] = {rows[i], open_types[1], rows[i + 1]}
      ids[#ids + 1] = rows[i]
    end
    call_sliced('ZREM', key, ids)
    return picked
  end
  local first_page = math.max(1, math.min(16, math.floor(k / #open_types) + 1))
  local heap = {}
  for _, t in ipairs(open_types) do
    local bands = aging_us and {3, 2, 1, 0} or {false}
    for _, band in ipairs(bands) do
      local c = {key = pending_key(base, t), type = t, rows = {}, pos = -1, offset = 0,
                 page = first_page, exhausted = false, band = band}
      if band then
        local high = (1 - band) * BAND_US
        c.low = string.format('%.0f', -band * BAND_US)
        c.high = '(' .. string.format('%.0f', high)
      end
      if advance(c) then heap_push(heap, c) end
    end
  end
  local taken = {} -- pending key -> ids, removed once the merge is over (offsets stay valid)
  while #picked < k and #heap > 0 and not (max_score and heap[1].head >= max_score) do
    local c = heap_pop(heap)
    local id = c.rows[c.pos]
    picked[#picked + 1] = {id, c.type, c.rows[c.pos + 1]}
    local ids = taken[c.key]
    if not ids then
      ids = {}
      taken[c.key] = ids
    end
    ids[#ids + 1] = id
    if advance(c) then heap_push(heap, c) end
  end
  for key, ids in pairs(taken) do call_sliced('ZREM', key, ids) end
  return picked
end

local out = {now, -1, types, '', {}}
-- Fencing tokens: one more than the stored counter, but never below the server clock (ms
-- since EPOCH_US, times 1,000), so a token is not handed out twice even when Redis lost the
-- counter (a restart without persistence, a host crash with appendfsync everysec) while a
-- worker still holds a lease: claims never run a thousand a millisecond for long.
local fence = math.max(tonumber(counters[2] or '') or 0,
                       now * 1000 - EPOCH_US)
local deadlines = {}
local claimed_places = {} -- the place (score without its priority band) of each claimed task
local claimed, quarantined = 0, 0
local put_back, solo = {}, false
-- Corrupt records found on the way are quarantined and replaced by the next ids, and
-- suspects the caller cannot take are set aside, up to MAINT_BATCH of each per call.
while claimed < count and quarantined < MAINT_BATCH and #put_back < MAINT_BATCH and not solo do
  local picked = pick(count - claimed)
  if #picked == 0 then break end
  for _, p in ipairs(picked) do
    local id, task_type = p[1], p[2]
    local key = task_key(base, id)
    local f = redis.pcall('HMGET', key, 'state', 'type', 'attempts', 'lease_losses', 'limits',
                          'cost', 'held')
    local sound = type(f) == 'table' and not f.err and f[1] == 'pending' and f[2] == task_type
    local suspect = sound and (tonumber(f[4]) or 0) >= suspect_after
    local admitted, held = true, nil
    if sound and L and not (solo or (suspect and (not take_suspects or claimed > 0))) then
      admitted, held = lim_admit(L, lim_keys(task_type, f[5]), tonumber(f[6]) or 0, id,
                                 now + lease_ms, task_type)
    end
    if not admitted then
      put_back[#put_back + 1] = p -- held back by a limit: where it was, untouched
      if held == task_type then -- its type's own limit: no more of the type this call
        for i, t in ipairs(open_types) do
          if t == task_type then
            table.remove(open_types, i)
            break
          end
        end
      end
    elseif solo or (suspect and (not take_suspects or claimed > 0)) then
      -- back where it was: skipped, or a suspect left to head the caller's next claim
      put_back[#put_back + 1] = p
      if take_suspects and suspect then solo = true end
    elseif sound then
      if suspect then solo = true end
      fence = fence + 1
      if held and #held > 0 then
        redis.call('HSET', key, 'state', 'processing', 'worker', ARGV[2], 'started', now,
                   'lease', fence, 'attempts', (tonumber(f[3]) or 0) + 1,
                   'held', table.concat(held, ' '))
      else
        redis.call('HSET', key, 'state', 'processing', 'worker', ARGV[2], 'started', now,
                   'lease', fence, 'attempts', (tonumber(f[3]) or 0) + 1)
        if f[7] then redis.call('HDEL', key, 'held') end
      end
      deadlines[#deadlines + 1] = now + lease_ms
      deadlines[#deadlines + 1] = id
      claimed_places[#claimed_places + 1] = tonumber(p[3]) % BAND_US
      out[#out + 1] = {id, fence, task_fields(base, id, key)}
      task_event(base, 'started', id, task_type, (tonumber(f[3]) or 0) + 1)
      claimed = claimed + 1
    elseif type(f) == 'table' and not f.err and f[2] == task_type and f[1] ~= 'pending'
        and is_stale_entry(key, 'pending') then
      redis.call('HINCRBY', KEYS[3], 'stale_dropped', 1)
      quarantined = quarantined + 1 -- bounded like corrupt ones
    else
      quarantine(base, id, 'corrupt task record found in the pending set', now, ends, use_dlq)
      quarantined = quarantined + 1
    end
  end
end
if #deadlines > 0 then
  -- Fairness: remember how far the queue has served (the greatest place claimed); group
  -- places behind it are no longer needed to place the next grouped task.
  local served = tonumber(counters[3] or '') or 0
  for _, row in ipairs(claimed_places) do
    if row > served then served = row end
  end
  redis.call('HSET', KEYS[3], 'fence', fence, 'served', string.format('%.0f', served))
  if redis.call('EXISTS', base .. 'groups') == 1 then
    redis.pcall('ZREMRANGEBYSCORE', base .. 'groups', '-inf', '(' .. string.format('%.0f', served))
  end
  call_sliced('ZADD', KEYS[1], deadlines)
  if request ~= '' then
    local granted = {request}
    for i = 6, #out do
      granted[#granted + 1] = out[i][1] .. ' ' .. string.format('%.0f', out[i][2])
    end
    redis.call('SET', replay_key, table.concat(granted, '\n'), 'PX', lease_ms)
  end
end
for _, p in ipairs(put_back) do
  redis.call('ZADD', pending_key(base, p[2]), p[3], p[1])
end

-- Chain the wake-up: while ready work of a served type remains, the next idle worker gets
-- a token for it (for every served type: the claim may have taken another type's task
-- with the token that announced this one).
if claimed > 0 then
  for _, t in ipairs(open_types) do
    if redis.call('ZCARD', pending_key(base, t)) > 0 then wake(base, t) end
  end
end

local next_event = -1
local d = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if d[2] then next_event = tonumber(d[2]) end
local p = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if p[2] and (next_event < 0 or tonumber(p[2]) < next_event) then next_event = tonumber(p[2]) end
if L then
  lim_close(L)
  if L.retry_at and (next_event < 0 or L.retry_at < next_event) then
    next_event = math.ceil(L.retry_at)
  end
  for name, n in pairs(L.deferred) do
    out[5][#out[5] + 1] = name
    out[5][#out[5] + 1] = n
  end
end
out[2] = next_event
if want_head then -- among what a claim could take now (not types a limit holds back)
  local best = nil
  for _, t in ipairs(open_types) do
    local h = redis.call('ZRANGE', pending_key(base, t), 0, 0, 'WITHSCORES')
    if h[2] and (best == nil or tonumber(h[2]) < best) then best = tonumber(h[2]) end
  end
  if best then out[4] = string.format('%.0f', best) end
end
flush_history(base)
return out
