--[[
  Delete up to `limit` completed and cancelled tasks that finished before a cutoff.
  Called in a loop by the client, so no single call blocks Redis for long.

  KEYS[1] completed   zset
  KEYS[2] cancelled   zset
  ARGV[1] base        key prefix "<prefix>:{<queue>}:"
  ARGV[2] age_ms      tasks finished more than this long ago (server time) go
  ARGV[3] limit       capped at MAX_BATCH

  Returns {removed}.
  Errors: {-10, key, type}; {-11, name, value} a numeric argument is not a number.
]]
--@include common

local base = ARGV[1]
local age_ms, left, bad
age_ms, bad = number_arg(ARGV[2], 'age_ms')
if bad then return bad end
left, bad = number_arg(ARGV[3], 'limit')
if bad then return bad end
left = math.min(left, MAX_BATCH)
bad = check_types({KEYS[1], 'zset', KEYS[2], 'zset'})
if bad then return bad end
local cutoff = now_ms() - age_ms
local removed = 0
for _, zkey in ipairs({KEYS[1], KEYS[2]}) do
  if left <= 0 then break end
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', zkey, '-inf', cutoff, 'LIMIT', 0, left)) do
    delete_task(base, id)
    redis.call('ZREM', zkey, id)
    removed = removed + 1
    left = left - 1
  end
end
return {removed}
