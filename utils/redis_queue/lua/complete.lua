--[[
  Complete a leased task with its result; also trims finished tasks past their TTL.

  KEYS[1] processing  zset
  KEYS[2] completed   zset (score = completion time, ms)
  KEYS[3] cancelled   zset
  KEYS[4] stats       hash
  ARGV[1] base        key prefix "<prefix>:{<queue>}:"
  ARGV[2] id
  ARGV[3] token       fencing token of the caller's lease ('' = no lease held)
  ARGV[4] keep_ms     finished tasks older than this are deleted, a few per call
  ARGV[5..] result chunks (JSON, split into <= 64-byte pieces)

  Returns {0, now_ms}.
  Errors: {-1} no such task; {-2, state} not processing (no token given);
          {-3, state, lease} the caller's lease was lost; {-10, key, type} wrong Redis type.
]]
--@include common

local TRIM_BATCH = 20
local base, id, token = ARGV[1], ARGV[2], ARGV[3]
local bad = check_types({KEYS[1], 'zset', KEYS[2], 'zset', KEYS[3], 'zset', KEYS[4], 'hash'})
if bad then return bad end
local key = task_key(base, id)
bad = check_lease(key, token)
if bad then return bad end

local now = now_ms()
redis.call('HDEL', key, 'lease', 'cancel')
redis.call('HSET', key, 'state', 'completed', 'completed', now)
set_blob(key, 'result', ARGV, 5)
clear_blob(key, 'error')
redis.call('ZREM', KEYS[1], id)
redis.call('ZADD', KEYS[2], now, id)
redis.call('HINCRBY', KEYS[4], 'completed', 1)
notify_done(base, id)

local cutoff = now - tonumber(ARGV[4])
for _, zkey in ipairs({KEYS[2], KEYS[3]}) do
  for _, old in ipairs(redis.call('ZRANGEBYSCORE', zkey, '-inf', cutoff, 'LIMIT', 0, TRIM_BATCH)) do
    redis.call('DEL', task_key(base, old), done_key(base, old))
    redis.call('ZREM', zkey, old)
  end
end
return {0, now}
