--[[
  Advance a schedule past the ticks a scheduler just enqueued: compare-and-set on its
  due time, so of two schedulers that read the same due time only one moves it (the
  other's enqueue of the same tick ids was an idempotent duplicate). The enqueue comes
  first and this second, so a scheduler that dies in between leaves the schedule due:
  the next one enqueues the same ids again (duplicates) and advances it.

  KEYS[1] schedule_due   zset (name -> next due time, ms)
  KEYS[2] schedule_last  hash (name -> "<last due ms> <skipped in all>")
  ARGV[1] name
  ARGV[2] expected       the due time (ms) the caller read
  ARGV[3] next_due       ms
  ARGV[4] last_due       ms of the latest tick enqueued
  ARGV[5] skipped        ticks skipped by the missed-tick policy in this step

  Returns {advanced (1) or 0 (another scheduler advanced it, or it was removed)}.
  Errors: {-10, key, type}; {-11, name, value} a numeric argument is not a number.
]]
--@include common

local expected, next_due, last_due, skipped, bad
expected, bad = number_arg(ARGV[2], 'expected')
if bad then return bad end
next_due, bad = number_arg(ARGV[3], 'next_due')
if bad then return bad end
last_due, bad = number_arg(ARGV[4], 'last_due')
if bad then return bad end
skipped, bad = number_arg(ARGV[5], 'skipped')
if bad then return bad end
bad = check_types({KEYS[1], 'zset', KEYS[2], 'hash'})
if bad then return bad end
local current = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not current or tonumber(current) ~= expected then return {0} end
redis.call('ZADD', KEYS[1], string.format('%.0f', next_due), ARGV[1])
local before = redis.call('HGET', KEYS[2], ARGV[1])
local total = skipped
if before then total = total + (tonumber(string.match(before, ' (%d+)$')) or 0) end
redis.call('HSET', KEYS[2], ARGV[1], string.format('%.0f %d', last_due, total))
return {1}
