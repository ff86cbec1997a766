--[[
  Read (no writes) the schedules due now by server time, earliest first, with their
  definitions; and when the next one is due, so a scheduler knows how long to sleep.

  KEYS[1] schedules     hash (name -> definition JSON)
  KEYS[2] schedule_due  zset (name -> next due time, ms)
  ARGV[1] limit         most schedules returned (capped at MAX_BATCH)

  Returns {now_ms, next_due_ms (-1 = no schedule), name, due_ms, definition, ...}; a name
  whose definition is gone is left out.
  Errors: {-10, key, type}; {-11, name, value} a numeric argument is not a number.
]]
--@include common

local limit, bad = number_arg(ARGV[1], 'limit')
if bad then return bad end
bad = check_types({KEYS[1], 'hash', KEYS[2], 'zset'})
if bad then return bad end
local now = now_ms()
local out = {now, -1}
local head = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if head[2] then out[2] = tonumber(head[2]) end
local due = redis.call('ZRANGE', KEYS[2], '-inf', now, 'BYSCORE', 'LIMIT', 0,
                       math.max(1, math.min(limit, MAX_BATCH)), 'WITHSCORES')
for i = 1, #due, 2 do
  local definition = redis.call('HGET', KEYS[1], due[i])
  if definition then
    out[#out + 1] = due[i]
    out[#out + 1] = tonumber(due[i + 1])
    out[#out + 1] = definition
  end
end
return out
