--[[
  Worker registry heartbeat: record (or remove) one worker, and drop workers whose last
  beat is older than the prune age (a bounded number per call).

  KEYS[1] workers        hash (worker id -> JSON description)
  KEYS[2] worker_beats   zset (worker id -> last beat, server ms)
  ARGV[1] worker_id
  ARGV[2] info           JSON description ('' with ARGV[4] = 'leave')
  ARGV[3] prune_ms       workers silent for longer than this are removed
  ARGV[4] mode           'beat' or 'leave'

  Returns {now_ms}.
  Errors: {-10, key, type}.
]]
--@include common

local bad = check_types({KEYS[1], 'hash', KEYS[2], 'zset'})
if bad then return bad end
local now = now_ms()
if ARGV[4] == 'leave' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('ZADD', KEYS[2], now, ARGV[1])
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[3]),
                               'LIMIT', 0, 100)) do
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
end
return {now}
