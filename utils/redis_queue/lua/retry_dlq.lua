--[[
  Re-enqueue a dead-lettered (or failed) task with a fresh retry budget.

  KEYS[1] dlq         set
  KEYS[2] failed      zset
  KEYS[3] stats       hash
  KEYS[4] dlq_order   zset (the DLQ's ids by dead-letter time, ms)
  ARGV[1] base        key prefix "<prefix>:{<queue>}:"
  ARGV[2] id
  ARGV[3] events      max length of the events stream (include/common.lua task_event); '0' = off

  Returns {0}.
  Errors: {-1} no such task; {-4, state} not dead-lettered or failed; {-10, key, type}.
]]
--@include common

local base, id = ARGV[1], ARGV[2]
local bad = check_types({KEYS[1], 'set', KEYS[2], 'zset', KEYS[3], 'hash', KEYS[4], 'zset'})
if bad then return bad end
local key = task_key(base, id)
local t = redis.call('TYPE', key).ok
if t == 'none' then return {E_NOT_FOUND} end
if t ~= 'hash' then return {E_WRONGTYPE, key, t} end
local state = redis.call('HGET', key, 'state')
local task_type = redis.call('HGET', key, 'type')
if (state ~= 'dead_letter' and state ~= 'failed') or not task_type then
  return {E_BAD_STATE, state or ''}
end
bad = check_pending_key(base, task_type)
if bad then return bad end
redis.call('SREM', KEYS[1], id)
redis.call('ZREM', KEYS[4], id)
redis.call('ZREM', KEYS[2], id)
redis.call('HSET', key, 'retries', 0, 'lease_losses', 0)
local stale = {'completed', 'worker', 'started'}
add_blob_names(stale, 'error', redis.call('HGET', key, 'error.count'))
call_sliced('HDEL', key, stale)
redis.call('DEL', done_key(base, id))
redis.call('HINCRBY', KEYS[3], 'dlq_retried', 1)
make_pending(base, key, id, KEYS[3])
events_from(ARGV[3])
task_event(base, 'retried', id, task_type, redis.call('HGET', key, 'attempts'))
return {0}
