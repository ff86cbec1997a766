--[[
  Complete a leased task with its result; every TRIM_EVERY completions it also deletes a
  batch of finished tasks past their TTL.

  KEYS[1] processing  zset
  KEYS[2] completed   zset (score = completion time, ms)
  KEYS[3] cancelled   zset
  KEYS[4] stats       hash
  ARGV[1] base        key prefix "<prefix>:{<queue>}:"
  ARGV[2] id
  ARGV[3] token       fencing token of the caller's lease ('' = no lease held)
  ARGV[4] keep_ms     finished tasks older than this are deleted
  ARGV[5] result      JSON (stored in chunks of at most 64 bytes)

  Returns {0, now_ms}.
  Errors: {-1} no such task; {-2, state} not processing (no token given);
          {-3, state, lease} the caller's lease was lost; {-10, key, type} wrong Redis type.
]]
--@include common

local TRIM_EVERY = 10
local TRIM_BATCH = 100
local base, id, token = ARGV[1], ARGV[2], ARGV[3]
local bad = check_types({KEYS[1], 'zset', KEYS[2], 'zset', KEYS[3], 'zset', KEYS[4], 'hash'})
if bad then return bad end
local key = task_key(base, id)
local f
bad, f = check_lease(key, token, 'error.count')
if bad then return bad end

local now = now_ms()
local stale = {'lease', 'cancel'}
add_blob_names(stale, 'error', f[3])
redis.call('HDEL', key, unpack(stale))
local fields = {'state', 'completed', 'completed', now}
add_blob(fields, 'result', ARGV[5], true)
redis.call('HSET', key, unpack(fields))
redis.call('ZREM', KEYS[1], id)
redis.call('ZADD', KEYS[2], now, id)
local done = redis.call('HINCRBY', KEYS[4], 'completed', 1)
notify_done(base, id)

if done % TRIM_EVERY == 0 then
  local cutoff = now - tonumber(ARGV[4])
  for _, zkey in ipairs({KEYS[2], KEYS[3]}) do
    local old = redis.call('ZRANGEBYSCORE', zkey, '-inf', cutoff, 'LIMIT', 0, TRIM_BATCH)
    for _, old_id in ipairs(old) do
      redis.call('DEL', task_key(base, old_id), done_key(base, old_id))
    end
    if #old > 0 then redis.call('ZREM', zkey, unpack(old)) end
  end
end
return {0, now}
