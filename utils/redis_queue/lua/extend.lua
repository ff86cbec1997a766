--[[
  Heartbeat: push a lease's deadline out, if the caller still holds it.

  KEYS[1] processing  zset
  ARGV[1] base        key prefix "<prefix>:{<queue>}:"
  ARGV[2] id
  ARGV[3] token       fencing token of the caller's lease
  ARGV[4] lease_ms    new lease length from now

  Returns {0, deadline_ms, cancel_requested (0/1)}.
  Errors: {-1}; {-3, state, lease} the lease was lost; {-10, key, type};
          {-11, name, value} a numeric argument is not a number.
]]
--@include common
--@include limits

local base, id, token = ARGV[1], ARGV[2], ARGV[3]
local lease_ms, bad = number_arg(ARGV[4], 'lease_ms')
if bad then return bad end
bad = check_types({KEYS[1], 'zset'})
if bad then return bad end
local key = task_key(base, id)
local f
bad, f = check_lease(key, token, 'cancel', 'held')
if bad then return bad end
local deadline = now_ms() + lease_ms
redis.call('ZADD', KEYS[1], 'XX', deadline, id)
lim_extend(base, id, f[4], deadline)
local cancel = 0
if f[3] == '1' then cancel = 1 end
return {0, deadline, cancel}
