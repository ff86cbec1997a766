--[[
  Cancel up to `limit` queued tasks of one type, each as cancel.lua cancels a queued one
  (state cancelled, in the cancelled set, counted, its done list pushed). Called in a loop
  by the client: first the type's pending set (`after` = ''), then the delayed set, which
  holds every type, walked from `after`, the id of the last delayed task of another type
  the previous call passed ('^' = from the start; an id no longer delayed starts over).
  Running tasks are not touched.

  KEYS[1] delayed     zset
  KEYS[2] cancelled   zset
  KEYS[3] stats       hash (and this minute's history, see include/common.lua)
  ARGV[1] base        key prefix "<prefix>:{<queue>}:"
  ARGV[2] type        the task type
  ARGV[3] where       'pending' or 'delayed'
  ARGV[4] after       delayed only: '^' or the id to resume after
  ARGV[5] limit       entries examined per call, capped at MAX_BATCH
  ARGV[6] events      max length of the events stream (include/common.lua task_event); '0' = off

  Returns {cancelled, examined, next}: next = the id to resume after ('' = the delayed
  set is walked to its end; pending: always '').
  Errors: {-10, key, type}; {-11, name, value} a bad `where` or a limit that is not a number.
]]
--@include common

local base, task_type, where, after = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local limit, bad = number_arg(ARGV[5], 'limit')
events_from(ARGV[6])
if bad then return bad end
limit = math.max(1, math.min(limit, MAX_BATCH))
if where ~= 'pending' and where ~= 'delayed' then return {E_BAD_ARGUMENT, 'where', where} end
bad = check_types({KEYS[1], 'zset', KEYS[2], 'zset', KEYS[3], 'hash'})
  or check_pending_key(base, task_type)
if bad then return bad end

local now = now_ms()
local cancelled = 0
local function cancel_one(id, from)
  redis.call('ZREM', from, id)
  mark_cancelled(base, task_key(base, id), id, now, KEYS[2], KEYS[3])
  cancelled = cancelled + 1
end

if where == 'pending' then
  local k = pending_key(base, task_type)
  local ids = redis.call('ZRANGE', k, 0, limit - 1)
  for _, id in ipairs(ids) do
    if is_sound(task_key(base, id), 'pending') then
      cancel_one(id, k)
    else
      redis.call('ZREM', k, id) -- a stale entry: the record is elsewhere or gone
    end
  end
  flush_history(base)
  return {cancelled, #ids, ''}
end

local start = 0
if after ~= '^' then
  local rank = redis.call('ZRANK', KEYS[1], after)
  if rank then start = rank + 1 end
end
local ids = redis.call('ZRANGE', KEYS[1], start, start + limit - 1)
local next_id = ''
for _, id in ipairs(ids) do
  local f = redis.pcall('HMGET', task_key(base, id), 'state', 'type')
  if type(f) == 'table' and not f.err and f[1] == 'delayed' and f[2] == task_type then
    cancel_one(id, KEYS[1])
  else
    next_id = id -- stays: the next call resumes after it
  end
end
if #ids < limit then next_id = '' elseif next_id == '' then next_id = '^' end
flush_history(base)
return {cancelled, #ids, next_id}
