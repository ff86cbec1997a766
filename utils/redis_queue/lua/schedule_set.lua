--[[
  Add or replace a periodic schedule: its definition and its first due time. Replacing
  one starts it afresh from `first_due` (its last tick is kept, for listing).

  KEYS[1] schedules     hash (name -> definition JSON)
  KEYS[2] schedule_due  zset (name -> next due time, server ms)
  ARGV[1] name
  ARGV[2] definition    JSON, written by utils/redis_queue/schedules.py
  ARGV[3] first_due     ms

  Returns {created (1 = new, 0 = replaced)}.
  Errors: {-10, key, type}; {-11, name, value} a numeric argument is not a number.
]]
--@include common

local due, bad = number_arg(ARGV[3], 'first_due')
if bad then return bad end
bad = check_types({KEYS[1], 'hash', KEYS[2], 'zset'})
if bad then return bad end
local created = redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], string.format('%.0f', due), ARGV[1])
return {created}
