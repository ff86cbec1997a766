--[[
  A partitioned queue's limits, in their own slot: give back what settled attempts held
  (their concurrency slots; their tokens reconciled with what the handlers reported), and
  optionally pause limit keys first (a RateLimited handler).

  KEYS[1] limits      hash: the queue's limits
  ARGV[1] base        the queue-wide key prefix "<prefix>:{<queue>}:"
  ARGV[2] pause_ms    0, or how long `ARGV[3]` admit nothing (a pause never shortens one)
  ARGV[3] pause_keys  space-separated ('' for none)
  ARGV[4..] items, four arguments each: id, held keys (space-separated), reserved tokens,
            tokens used ('' = not reported: the reservation stands)

  Returns {task types to wake, ...}: the types whose tasks these limits held back (the
  caller wakes them in every partition).
  Errors: {-11, name, value} a numeric argument is not a number.
]]
--@include common
--@include limits

local base = ARGV[1]
local pause_ms, bad = number_arg(ARGV[2], 'pause_ms')
if bad then return bad end
if pause_ms > 0 and ARGV[3] ~= '' then
  local names = {}
  for name in string.gmatch(ARGV[3], '%S+') do names[#names + 1] = name end
  lim_pause(base, names, now_ms() + pause_ms)
end
for i = 4, #ARGV, 4 do
  lim_release(base, base, ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3])
end
local woken = {}
lim_flush(base, base, woken)
local types = {}
for t, _ in pairs(woken) do types[#types + 1] = t end
return types
