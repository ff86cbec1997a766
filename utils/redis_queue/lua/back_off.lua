--[[
  A provider said "too many requests": pause limit keys for the whole fleet and hand the
  task back without counting the attempt (a RateLimited raised by its handler).

  KEYS[1] processing  zset
  KEYS[2] stats       hash
  ARGV[1] base        key prefix "<prefix>:{<queue>}:"
  ARGV[2] id
  ARGV[3] token       fencing token of the caller's lease
  ARGV[4] pause_ms    how long the keys admit nothing (a pause never shortens one)
  ARGV[5..] the limit keys to pause (none: every key the task is bound by)

  The task goes back to pending at the place its creation time gives it, not behind the
  tasks enqueued since, and its limits' slots and tokens are given back.
  Returns {5, paused until (ms)} (see back_off_one in include/settle.lua).
  Errors: {-1}; {-3, state, lease}; {-10, key, type}; {-11, name, value}.
]]
--@include common
--@include limits
--@include settle

local pause_ms, bad = number_arg(ARGV[4], 'pause_ms')
if bad then return bad end
bad = check_types({KEYS[1], 'zset', KEYS[2], 'hash', ARGV[1] .. 'limits', 'hash'})
if bad then return bad end
local names = {}
for i = 5, #ARGV do names[#names + 1] = ARGV[i] end
local reply = back_off_one(ARGV[1], {processing = KEYS[1], stats = KEYS[2]}, ARGV[2],
                           ARGV[3], pause_ms, names)
lim_flush(ARGV[1], ARGV[1])
return reply
