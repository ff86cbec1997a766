--[[
  Delete up to `limit` dead-lettered tasks. Called in a loop by the client.

  KEYS[1] dlq         set
  ARGV[1] base        key prefix "<prefix>:{<queue>}:"
  ARGV[2] limit

  Returns {removed}.
  Errors: {-10, key, type}.
]]
--@include common

local base = ARGV[1]
local bad = check_types({KEYS[1], 'set'})
if bad then return bad end
local ids = redis.call('SPOP', KEYS[1], tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  redis.call('DEL', task_key(base, id), done_key(base, id))
end
return {#ids}
