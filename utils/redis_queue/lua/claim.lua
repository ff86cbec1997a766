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
  ARGV[13..] task types served (none = every known type), or '@<digest>' naming the set
              `served:<digest>` of them (a long list, sent once: without the types after
              it the set must exist, else {-12, key}; with them it is written first)

  Finding ready work costs about k log k reads for a claim of k, however many types there
  are: the partition's ready index (include/common.lua mark_ready, include/merge.lua)
  orders the types by a lower bound of their best score, and the claim opens a type's
  pending set only when its bound beats the best task found so far. A few named types
  (PER_TYPE_MAX or fewer) are read directly instead, and so is every type when priority
  aging is on (an aged task can rank above its type's bound).

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

  Returns {now_ms, next_event_ms, {known types: only when no type is named and nothing
  was claimed, else {}}, head, {limit, held back, ...},
  {id, token, fields, attempt}, ...}: fields is the task's HGETALL as read *before* the
  claim wrote it (+ 'payload', its blob key's value, for a claim-checked payload); the
  caller applies what the claim set (state processing, worker, started = now_ms, lease =
  token, attempts = attempt; `held` is not reported), so the reply carries no field twice.
  A replayed claim (ARGV[10]) answers {id, token, HGETALL as it is now} instead.
  next_event_ms is the earliest delayed due time, lease
  deadline or time a limit that held a task back admits again (-1 when there is none), so
  an idle worker knows how long it may block; head is the best pending score left after
  the claim ('' when none, or when not asked for).
  Errors: {-10, key, type} a queue structure key holds the wrong Redis type;
          {-11, name, value} a numeric argument is not a number.
]]
--@include common
--@include limits
--@include merge

local MAINT_BATCH = 100
local PER_TYPE_MAX = 8 -- up to this many named types are read directly, not through the index
local SERVED_TTL_MS = 86400000 -- a served set lives a day past its last claim
local WAKE_AHEAD = 16 -- index entries past the claim's own that a full claim wakes
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

bad = check_types({KEYS[1], 'zset', KEYS[2], 'zset', KEYS[3], 'hash', KEYS[4], 'set',
                   KEYS[5], 'set', KEYS[6], 'zset', KEYS[7], 'zset', KEYS[8], 'zset',
                   KEYS[9], 'hash'})
if bad then return bad end

-- Priority aging (off unless the queue sets aging_ms): a task that waited a whole window
-- ranks one priority higher, two after two windows, up to CRITICAL; within a rank the
-- older task goes first. Each priority band of a type's set is then a cursor of its own,
-- ranked by its head's aged key, which rises along the band (older heads rank higher).
-- One read of the counters this claim needs: the aging window, the fencing counter and
-- how far the queue has served (fairness).
local counters = redis.call('HMGET', KEYS[3], 'aging_ms', 'fence', 'served')
local aging_us = nil
local aging_ms = tonumber(counters[1] or '')
if aging_ms and aging_ms > 0 then
  aging_us = aging_ms * 1000
  max_score = nil -- a band bound from other partitions does not rank aged tasks: each
                  -- partition serves its own aged order, and partitions take turns
end

local named = {}
local served_key = nil -- a long list of named types, kept in Redis (see ARGV[13])
if #ARGV >= 13 and string.sub(ARGV[13], 1, 1) == '@' then
  served_key = base .. 'served:' .. string.sub(ARGV[13], 2)
  bad = check_types({served_key, 'set'})
  if bad then return bad end
  if #ARGV > 13 then
    local given = {}
    for i = 14, #ARGV do given[#given + 1] = ARGV[i] end
    redis.call('DEL', served_key)
    call_sliced('SADD', served_key, given)
  elseif redis.call('EXISTS', served_key) == 0 then
    return {E_SERVED_UNKNOWN, served_key}
  end
  redis.call('PEXPIRE', served_key, SERVED_TTL_MS)
  if aging_us then named = redis.call('SMEMBERS', served_key) end
else
  for i = 13, #ARGV do named[#named + 1] = ARGV[i] end
end
local indexed = not aging_us and (served_key ~= nil or #named == 0 or #named > PER_TYPE_MAX)
local types = named -- the types read directly (per-type mode)
if indexed then
  bad = ready_rebuild(base, KEYS[4], now_ms())
  if bad then return bad end
else
  if #named == 0 then types = redis.call('SMEMBERS', KEYS[4]) end
  local checks = {}
  for _, t in ipairs(types) do
    checks[#checks + 1] = pending_key(base, t)
    checks[#checks + 1] = 'zset'
  end
  bad = check_types(checks)
  if bad then return bad end
end
-- What the reply reports as known types: a caller serving every type blocks on their
-- wake keys once a claim found nothing; a caller naming its types knows them.
local function known_types()
  if served_key or #named > 0 then return {} end
  if #types > 0 then return types end
  return redis.call('SMEMBERS', KEYS[4])
end

local now = now_ms()
local ends = {dlq = KEYS[5], dlq_at = KEYS[8], failed = KEYS[6], stats = KEYS[3]}

local request = ARGV[10]
local replay_key = base .. 'claimed:' .. ARGV[2]
if request ~= '' then
  local seen = redis.pcall('GET', replay_key)
  if type(seen) == 'string' and string.sub(seen, 1, #request + 1) == request .. '\n' then
    -- This call, sent again: the tasks it claimed, those still leased to it.
    local again = {now, -1, known_types(), '', {}}
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

-- Which types this claim may take from. Pause: what is paused is left out before anything
-- is picked. Limits: a served type whose own limit admits nothing now is left out too. A
-- partitioned queue's limits live in another slot: its caller passes the keys it knows
-- are blocked, and they hold tasks back here as a limit would (permit.lua decides).
local L = lim_open(base, now)
if not L and ARGV[11] ~= '' then L = lim_blocked(base, now, ARGV[11]) end
local is_open, closed = type_filter(base, KEYS[9], L, indexed and named or {}, served_key)
local open_types = {} -- per-type mode: the named (or known) types open now
if not indexed then
  for _, t in ipairs(types) do
    if is_open(t) then open_types[#open_types + 1] = t end
  end
end

local now_tick = now * 1000 - EPOCH_US
local function aged_key(score, band)
  local tick = score + band * BAND_US
  local rank = math.min(3, band + math.max(0, math.floor((now_tick - tick) / aging_us)))
  return tick - rank * BAND_US
end

-- Types whose pending set this claim read, their index entries fixed at the end: true
-- (read the set's head then) or what a cursor left them at (note_heads).
local touched = {}
local broken = nil -- a pending set of the wrong type met by the indexed scan

-- After a merge, each cursor's set holds its current row first (what came before it was
-- taken), or nothing once it ran out: the new head, known without another read.
local function note_heads(cursors)
  for _, c in ipairs(cursors) do
    if not c.broken then
      touched[c.type] = {head = c.live and c.rows[c.pos + 1] or false, bound = c.bound}
    end
  end
end

-- Per-type mode: the best `k` across open_types, every type's set opened.
local function pick_per_type(k)
  local picked = {}
  if #open_types == 0 then return picked end
  for _, t in ipairs(open_types) do touched[t] = true end
  if #open_types == 1 and not max_score and not aging_us then
    local popped = redis.call('ZPOPMIN', pending_key(base, open_types[1]), k)
    for i = 1, #popped, 2 do
      picked[#picked + 1] = {popped[i], open_types[1], popped[i + 1]}
    end
    return picked
  end
  if #open_types == 1 and not aging_us then
    local key = pending_key(base, open_types[1])
    local rows = redis.call('ZRANGE', key, '-inf', '(' .. string.format('%d', max_score),
                            'BYSCORE', 'LIMIT', 0, k, 'WITHSCORES')
    local ids = {}
    for i = 1, #rows, 2 do
      picked[#picked + 1] = {rows[i], open_types[1], rows[i + 1]}
      ids[#ids + 1] = rows[i]
    end
    call_sliced('ZREM', key, ids)
    return picked
  end
  local page = math.max(1, math.min(16, math.floor(k / #open_types) + 1))
  local heap, taken, cursors = {}, {}, {}
  for _, t in ipairs(open_types) do
    for _, band in ipairs(aging_us and {3, 2, 1, 0} or {false}) do
      local c = new_cursor(pending_key(base, t), t, page, band, aged_key)
      cursors[#cursors + 1] = c
      if advance(c) then heap_push(heap, c) end
    end
  end
  while #picked < k and #heap > 0 and not (max_score and heap[1].head >= max_score) do
    take(heap, picked, taken)
  end
  remove_taken(taken)
  if not aging_us then note_heads(cursors) end -- a band's cursor knows its band only
  return picked
end

-- Indexed mode: walks the ready index in order and opens a type's set only while its
-- bound is below the best head found so far; a type whose bound is not can hold nothing
-- better (its bound is at or below its best score).
local function pick_indexed(k)
  local picked, heap, taken, cursors = {}, {}, {}, {}
  local page = math.max(1, math.min(8, k))
  local ix = index_cursor(base)
  local t, bound = index_next(ix)
  while #picked < k do
    while t and (#heap == 0 or bound < heap[1].head) do
      if max_score and bound >= max_score then
        t = nil
        break
      end
      if is_open(t) then
        local c = new_cursor(pending_key(base, t), t, page, false, nil)
        c.bound = bound
        cursors[#cursors + 1] = c
        if advance(c) then
          heap_push(heap, c)
        elseif c.broken then
          broken = broken or c.broken
        end
      end
      t, bound = index_next(ix)
    end
    if #heap == 0 or (max_score and heap[1].head >= max_score) then break end
    take(heap, picked, taken)
  end
  remove_taken(taken)
  note_heads(cursors)
  return picked
end

-- The best `k` ready ids across the served types (lowest score first), removed from
-- their pending sets, as {id, type, score as text}.
local function pick(k)
  if indexed then return pick_indexed(k) end
  return pick_per_type(k)
end

local out = {now, -1, {}, '', {}}
-- Fencing tokens: one more than the stored counter, but never below the server clock (ms
-- since EPOCH_US, times 1,000), so a token is not handed out twice even when Redis lost the
-- counter (a restart without persistence, a host crash with appendfsync everysec) while a
-- worker still holds a lease: claims never run a thousand a millisecond for long.
local fence = math.max(tonumber(counters[2] or '') or 0,
                       now * 1000 - EPOCH_US)
local deadlines = {}
local now_text = string.format('%d', now)
local deadline_text = string.format('%d', now + lease_ms) -- every lease taken here ends then

-- What a claim decides on, by number (as HMGET of these names would give it), from the
-- task's HGETALL reply.
local CLAIM_READ = {state = 1, type = 2, attempts = 3, lease_losses = 4, limits = 5, cost = 6,
                    held = 7}
local function claim_view(all)
  local f = {}
  for i = 1, #all, 2 do
    local slot = CLAIM_READ[all[i]]
    if slot then f[slot] = all[i + 1] end
  end
  return f
end

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
    -- One read of the whole hash: the fields the claim decides on, and what it hands the
    -- worker (who applies the claim's writes, see the reply above).
    local all = redis.pcall('HGETALL', key)
    local f = all -- an error reply, or the fields below by number
    if type(all) == 'table' and not all.err then f = claim_view(all) end
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
        closed[task_type] = true
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
      local attempt = string.format('%d', (tonumber(f[3]) or 0) + 1)
      if held and #held > 0 then
        redis.call('HSET', key, 'state', 'processing', 'worker', ARGV[2], 'started', now_text,
                   'lease', string.format('%d', fence), 'attempts', attempt,
                   'held', table.concat(held, ' '))
      else
        redis.call('HSET', key, 'state', 'processing', 'worker', ARGV[2], 'started', now_text,
                   'lease', string.format('%d', fence), 'attempts', attempt)
        if f[7] then redis.call('HDEL', key, 'held') end
      end
      deadlines[#deadlines + 1] = deadline_text
      deadlines[#deadlines + 1] = id
      claimed_places[#claimed_places + 1] = tonumber(p[3]) % BAND_US
      out[#out + 1] = {id, fence, with_blobs(base, id, all), attempt}
      task_event(base, 'started', id, task_type, attempt)
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
  redis.call('HSET', KEYS[3], 'fence', string.format('%d', fence), 'served',
             string.format('%d', served))
  if redis.call('EXISTS', base .. 'groups') == 1 then
    redis.pcall('ZREMRANGEBYSCORE', base .. 'groups', '-inf', '(' .. string.format('%d', served))
  end
  call_sliced('ZADD', KEYS[1], deadlines)
  if request ~= '' then
    local granted = {request}
    for i = 6, #out do
      granted[#granted + 1] = out[i][1] .. ' ' .. string.format('%d', out[i][2])
    end
    redis.call('SET', replay_key, table.concat(granted, '\n'), 'PX', lease_ms)
  end
end
for _, p in ipairs(put_back) do
  redis.call('ZADD', pending_key(base, p[2]), p[3], p[1])
  touched[p[2]] = true -- its head may be this one again: read it
end

-- The index entries of the types this claim read now say their sets' real heads.
local heads = {}
for t, how in pairs(touched) do
  if how == true then
    heads[t] = ready_fix(base, t) or false
  else
    heads[t] = how.head and tonumber(how.head)
    if heads[t] ~= how.bound then ready_set(base, t, how.head) end
  end
end

-- Chain the wake-up: while ready work of a served type remains, the next idle worker gets
-- a token for it (for every type the claim read: it may have taken another type's task
-- with the token that announced this one). Through the index, a full claim may have left
-- work of types it never read: the next WAKE_AHEAD types of the index get a token too
-- (a worker serving a type further down wakes at its next claim or block slice).
if claimed > 0 then
  for t, head in pairs(heads) do
    if head and is_open(t) then wake(base, t) end
  end
  if indexed and claimed >= count then
    for _, t in ipairs(redis.call('ZRANGE', base .. 'ready', 0, WAKE_AHEAD)) do
      if t ~= '' and t ~= '#' and heads[t] == nil and is_open(t) then wake(base, t) end
    end
  end
end

-- Before the limits close: the head's search may meet types a limit holds back.
if want_head then -- among what a claim could take now (not types a limit holds back)
  local best = nil
  local function consider(t)
    local h = heads[t]
    if h == nil then h = pending_head(base, t) end
    if h and (best == nil or h < best) then best = h end
  end
  if indexed then -- in index order, while a bound may still beat the best head found
    local ix = index_cursor(base)
    local t, bound = index_next(ix)
    while t and (best == nil or bound < best) do
      if is_open(t) then consider(t) end
      t, bound = index_next(ix)
    end
  else
    for _, t in ipairs(open_types) do consider(t) end
  end
  if best then out[4] = string.format('%d', best) end
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
flush_history(base)
if broken and claimed == 0 then return broken end
if claimed == 0 then out[3] = known_types() end
return out
