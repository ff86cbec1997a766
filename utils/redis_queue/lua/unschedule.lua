--[[
  Remove a periodic schedule: its definition, its due time and its last tick. Ticks
  already enqueued stay (they are ordinary tasks).

  KEYS[1] schedules      hash (name -> definition JSON)
  KEYS[2] schedule_due   zset (name -> next due time, ms)
  KEYS[3] schedule_last  hash (name -> "<last due ms> <skipped in all>")
  ARGV[1] name

  Returns {removed (1 or 0)}.
  Errors: {-10, key, type}.
]]
--@include common

local bad = check_types({KEYS[1], 'hash', KEYS[2], 'zset', KEYS[3], 'hash'})
if bad then return bad end
local removed = redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return {removed}
