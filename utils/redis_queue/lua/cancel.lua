--[[
  Cancel a task. A queued (pending or delayed) task is cancelled at once; a running task
  gets a cancel flag and a message on the queue's cancel channel, and its worker ends it.

  KEYS[1] delayed     zset
  KEYS[2] cancelled   zset
  KEYS[3] stats       hash (and this minute's history, see include/common.lua)
  ARGV[1] base        key prefix "<prefix>:{<queue>}:"
  ARGV[2] id
  ARGV[3] request     an id unique to this call, kept with a task it cancels: the same call
                      sent again (a re-send after a dropped connection) answers {1} again
                      instead of "already finished"
  ARGV[4] events      max length of the events stream (include/common.lua task_event); '0' = off

  Returns {1} cancelled; {2} cancel requested from the running worker.
  Errors: {-1} no such task; {-4, state} already finished; {-10, key, type}.
]]
--@include common

local base, id = ARGV[1], ARGV[2]
events_from(ARGV[4])
local bad = check_types({KEYS[1], 'zset', KEYS[2], 'zset', KEYS[3], 'hash'})
if bad then return bad end
local key = task_key(base, id)
local t = redis.call('TYPE', key).ok
if t == 'none' then return {E_NOT_FOUND} end
if t ~= 'hash' then return {E_WRONGTYPE, key, t} end
local f = redis.call('HMGET', key, 'state', 'type', 'cancel_req')
local state = f[1]
if state == 'cancelled' and ARGV[3] ~= '' and f[3] == ARGV[3] then return {1} end
if state == 'pending' and f[2] then
  redis.call('ZREM', pending_key(base, f[2]), id)
elseif state == 'delayed' then
  redis.call('ZREM', KEYS[1], id)
elseif state == 'processing' then
  redis.call('HSET', key, 'cancel', '1')
  redis.call('PUBLISH', base .. 'cancel', id)
  return {2}
else
  return {E_BAD_STATE, state or ''}
end
mark_cancelled(base, key, id, now_ms(), KEYS[2], KEYS[3])
if ARGV[3] ~= '' then redis.call('HSET', key, 'cancel_req', ARGV[3]) end
flush_history(base)
return {1}
