--[[
  Delete one task and every key kept for it: its record, its entry in whichever state
  structure holds it, its done list, its blob and output keys, and its unique_for window
  and debounce hold when they name it. A running task is refused unless forced; forced,
  its worker is told on the cancel channel (its settle then finds no task) and the limit
  slots it holds are given back (on a partitioned queue, whose limits live in a slot of
  their own, they free at their deadline, as a crashed worker's do).

  KEYS[1] processing  zset
  KEYS[2] delayed     zset
  KEYS[3] completed   zset
  KEYS[4] failed      zset
  KEYS[5] cancelled   zset
  KEYS[6] dlq         set
  KEYS[7] dlq_order   zset
  KEYS[8] stats       hash
  ARGV[1] base        key prefix "<prefix>:{<queue>}:"
  ARGV[2] id
  ARGV[3] force       '1': delete a processing task too
  ARGV[4] events      max length of the events stream (include/common.lua task_event); '0' = off

  Returns {1, state}: deleted, the state it was in.
  Errors: {-1} no such task; {-4, 'processing'} running and not forced; {-10, key, type}.
]]
--@include common
--@include limits

local base, id, force = ARGV[1], ARGV[2], ARGV[3] == '1'
local bad = check_types({KEYS[1], 'zset', KEYS[2], 'zset', KEYS[3], 'zset', KEYS[4], 'zset',
                         KEYS[5], 'zset', KEYS[6], 'set', KEYS[7], 'zset', KEYS[8], 'hash'})
if bad then return bad end
local key = task_key(base, id)
local t = redis.call('TYPE', key).ok
if t == 'none' then return {E_NOT_FOUND} end
if t ~= 'hash' then return {E_WRONGTYPE, key, t} end
local f = redis.call('HMGET', key, 'state', 'type', 'uniq', 'dbnc', 'held', 'cost')
local state = f[1] or ''
if state == 'processing' and not force then return {E_BAD_STATE, state} end
if f[2] then
  bad = check_pending_key(base, f[2])
  if bad then return bad end
  redis.call('ZREM', pending_key(base, f[2]), id)
end
-- Every structure, not only the state's: a stale entry elsewhere goes too.
for i = 1, 5 do redis.call('ZREM', KEYS[i], id) end
redis.call('SREM', KEYS[6], id)
redis.call('ZREM', KEYS[7], id)
free_windows(base, id, f[2], f[3], f[4])
events_from(ARGV[4])
task_event(base, 'deleted', id)
delete_task(base, id)
if state == 'processing' then
  lim_release(base, base, id, f[5], f[6], nil)
  lim_flush(base, base)
  redis.call('PUBLISH', base .. 'cancel', id)
end
redis.call('HINCRBY', KEYS[8], 'deleted', 1)
return {1, state}
