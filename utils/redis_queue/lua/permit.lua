--[[
  A partitioned queue's limits, in their own slot: admit and charge the tasks a partition's
  claim just leased (the claim cannot read this slot on a cluster). Each task is admitted
  when every limit it is bound by admits it, all or nothing, as claim.lua does for a queue
  of one partition; the caller hands the others back (back_off with no pause).

  KEYS[1] limits      hash: the queue's limits (its queue-wide keys, include/limits.lua)
  ARGV[1] base        the queue-wide key prefix "<prefix>:{<queue>}:"
  ARGV[2] lease_ms    a concurrency slot's deadline from now (renewed with the lease)
  ARGV[3..] tasks, four arguments each: id, type, listed limit keys (space-separated, or
            ''), tokens to reserve ('' = 0)

  Returns {{limit, held back, ...}, retry_in_ms (-1: none known), r1, r2, ...}: ri is the
  limit keys task i now holds (space-separated, '' for none) when admitted, or 0.
  Errors: {-11, name, value} a numeric argument is not a number.
]]
--@include common
--@include limits

local base = ARGV[1]
local lease_ms, bad = number_arg(ARGV[2], 'lease_ms')
if bad then return bad end
local now = now_ms()
local L = lim_open(base, now)
local out = {{}, -1}
for i = 3, #ARGV, 4 do
  local id, task_type, listed, cost = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if not L then
    out[#out + 1] = ''
  else
    local admitted, held = lim_admit(L, lim_keys(task_type, listed), tonumber(cost) or 0, id,
                                     now + lease_ms, task_type)
    out[#out + 1] = admitted and table.concat(held, ' ') or 0
  end
end
if L then
  lim_close(L)
  if L.retry_at then out[2] = math.max(0, math.ceil(L.retry_at - now)) end
  for name, n in pairs(L.deferred) do
    out[1][#out[1] + 1] = name
    out[1][#out[1] + 1] = n
  end
end
return out
