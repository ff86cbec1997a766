--[[
  Hand a leased task back to pending without counting the attempt (graceful shutdown).

  KEYS[1] processing  zset
  KEYS[2] stats       hash
  ARGV[1] base        key prefix "<prefix>:{<queue>}:"
  ARGV[2] id
  ARGV[3] token       fencing token of the caller's lease
  ARGV[4] events      max length of the events stream (include/common.lua task_event); '0' = off

  Returns {0}.
  Errors: {-1}; {-3, state, lease}; {-10, key, type}.
]]
--@include common
--@include limits

local base, id, token = ARGV[1], ARGV[2], ARGV[3]
local bad = check_types({KEYS[1], 'zset', KEYS[2], 'hash'})
if bad then return bad end
local key = task_key(base, id)
local f, settled
bad, f, settled = check_settle(key, token, 'type', 'held', 'cost')
if bad then return bad end
if settled then return {0} end -- this call, sent again
bad = check_pending_key(base, f[3] or '')
if bad then return bad end
redis.call('ZREM', KEYS[1], id)
lim_release(base, base, id, f[4], f[5], nil)
lim_flush(base, base)
redis.call('HDEL', key, 'lease', 'held')
if token ~= '' then redis.call('HSET', key, 'settled', token) end
redis.call('HINCRBY', key, 'attempts', -1)
make_pending(base, key, id, KEYS[2])
events_from(ARGV[4])
task_event(base, 'released', id)
return {0}
