--[[
  One consistent snapshot of the queue's sizes and lifetime counters.

  KEYS[1] processing  zset
  KEYS[2] delayed     zset
  KEYS[3] completed   zset
  KEYS[4] failed      zset
  KEYS[5] cancelled   zset
  KEYS[6] dlq         set
  KEYS[7] stats       hash
  KEYS[8] types       set
  ARGV[1] base        key prefix "<prefix>:{<queue>}:"

  Returns {processing, delayed, completed, failed, cancelled, dlq,
           {type, pending, low, normal, high, critical, ...}, stats HGETALL}.
  Errors: {-10, key, type}.
]]
--@include common

local base = ARGV[1]
local bad = check_types({KEYS[1], 'zset', KEYS[2], 'zset', KEYS[3], 'zset', KEYS[4], 'zset',
                         KEYS[5], 'zset', KEYS[6], 'set', KEYS[7], 'hash', KEYS[8], 'set'})
if bad then return bad end
local per_type = {}
for _, t in ipairs(redis.call('SMEMBERS', KEYS[8])) do
  local k = pending_key(base, t)
  local kind = redis.call('TYPE', k).ok
  if kind == 'zset' or kind == 'none' then
    per_type[#per_type + 1] = t
    per_type[#per_type + 1] = redis.call('ZCARD', k)
    for p = 0, 3 do
      local low = -p * BAND_US
      per_type[#per_type + 1] = redis.call('ZCOUNT', k, string.format('%.0f', low),
                                           '(' .. string.format('%.0f', low + BAND_US))
    end
  end
end
return {redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2]), redis.call('ZCARD', KEYS[3]),
        redis.call('ZCARD', KEYS[4]), redis.call('ZCARD', KEYS[5]), redis.call('SCARD', KEYS[6]),
        per_type, redis.call('HGETALL', KEYS[7])}
