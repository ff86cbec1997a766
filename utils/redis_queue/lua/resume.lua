--[[
  Resume claiming from one partition: removes the whole-queue pause ('*') or one task
  type's, then wakes the workers that block on the wake keys it concerns (the all-types
  key and each known type's for '*', the type's own otherwise), so resuming takes effect
  at once rather than when their blocking wait ends. A type paused on its own stays
  paused when the whole queue resumes (and the other way round).

  KEYS[1] paused      hash ("*" or a task type -> server ms when paused)
  KEYS[2] types       set (the queue's known task types)
  ARGV[1] base        key prefix "<prefix>:{<queue>}:"
  ARGV[2] target      "*" (every type) or a task type

  Returns {resumed (1 = it was paused, 0 = it was not)}.
  Errors: {-10, key, type} a key holds the wrong Redis type.
]]
--@include common

local base = ARGV[1]
local bad = check_types({KEYS[1], 'hash', KEYS[2], 'set'})
if bad then return bad end
local removed = redis.call('HDEL', KEYS[1], ARGV[2])
if removed == 1 then
  if ARGV[2] == '*' then
    wake_key(base .. 'wake')
    for _, t in ipairs(redis.call('SMEMBERS', KEYS[2])) do wake(base, t) end
  else
    wake(base, ARGV[2])
    wake_key(base .. 'wake')
  end
end
return {removed}
