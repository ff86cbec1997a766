--[[
  A partitioned queue's limits, in their own slot: push the deadline of running tasks'
  concurrency slots out with their leases (the lease keeper sends it after renewing them).

  KEYS[1] limits      hash: the queue's limits
  ARGV[1] base        the queue-wide key prefix "<prefix>:{<queue>}:"
  ARGV[2] lease_ms    the new deadline from now
  ARGV[3..] items, two arguments each: id, held keys (space-separated)

  Returns {0}.
  Errors: {-11, name, value} a numeric argument is not a number.
]]
--@include common
--@include limits

local lease_ms, bad = number_arg(ARGV[2], 'lease_ms')
if bad then return bad end
local deadline = now_ms() + lease_ms
for i = 3, #ARGV, 2 do lim_extend(ARGV[1], ARGV[i], ARGV[i + 1], deadline) end
return {0}
