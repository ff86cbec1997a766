--[[
  Delete up to `limit` dead-lettered tasks. Called in a loop by the client.

  KEYS[1] dlq         set
  KEYS[2] dlq_order   zset (the DLQ's ids by dead-letter time, ms)
  ARGV[1] base        key prefix "<prefix>:{<queue>}:"
  ARGV[2] limit       capped at MAX_BATCH
  ARGV[3] events      max length of the events stream (include/common.lua task_event); '0' = off

  Returns {removed}.
  Errors: {-10, key, type}; {-11, name, value} a numeric argument is not a number.
]]
--@include common

local base = ARGV[1]
local limit, bad = number_arg(ARGV[2], 'limit')
if bad then return bad end
bad = check_types({KEYS[1], 'set', KEYS[2], 'zset'})
if bad then return bad end
local ids = redis.call('SPOP', KEYS[1], math.max(0, math.min(limit, MAX_BATCH)))
events_from(ARGV[3])
for _, id in ipairs(ids) do
  task_event(base, 'deleted', id)
  delete_task(base, id)
end
call_sliced('ZREM', KEYS[2], ids)
return {#ids}
