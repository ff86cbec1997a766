--[[
  Settle many leased tasks in one call: each item is one complete or fail transition,
  applied in order, each with its own fencing check and reply (see include/settle.lua).

  KEYS[1] processing  zset
  KEYS[2] completed   zset
  KEYS[3] cancelled   zset
  KEYS[4] delayed     zset
  KEYS[5] dlq         set
  KEYS[6] failed      zset
  KEYS[7] stats       hash
  ARGV[1] base        key prefix "<prefix>:{<queue>}:"
  ARGV[2] keep_ms     as in complete.lua
  ARGV[3] use_dlq     '1' or '0'
  ARGV[4] first_immediate, ARGV[5] base_ms, ARGV[6] factor, ARGV[7] cap_ms,
  ARGV[8] max_retries (the queue's default): the retry policy, as in fail.lua
  then per item:
    complete: 'c', id, token, result
    fail:     'f', id, token, "<retry 0|1> <corrupt 0|1> <jitter> <delay_ms or ->", error

  Returns one reply per item, as complete.lua or fail.lua would (errors included).
  Errors: {-10, key, type} a queue key holds the wrong Redis type (nothing is written).
]]
--@include common
--@include settle

local bad = check_types({KEYS[1], 'zset', KEYS[2], 'zset', KEYS[3], 'zset', KEYS[4], 'zset',
                         KEYS[5], 'set', KEYS[6], 'zset', KEYS[7], 'hash'})
if bad then return bad end
local base = ARGV[1]
local k = {processing = KEYS[1], completed = KEYS[2], cancelled = KEYS[3], delayed = KEYS[4],
           dlq = KEYS[5], failed = KEYS[6], stats = KEYS[7]}
local policy = {first_immediate = ARGV[4] == '1', base_ms = tonumber(ARGV[5]),
                factor = tonumber(ARGV[6]), cap_ms = tonumber(ARGV[7]),
                default_max_retries = ARGV[8], use_dlq = ARGV[3] == '1'}
local out = {}
local i = 9
while i <= #ARGV do
  if ARGV[i] == 'c' then
    out[#out + 1] = complete_one(base, k, ARGV[i + 1], ARGV[i + 2], ARGV[2], ARGV[i + 3])
    i = i + 4
  else
    local retry, corrupt, jitter, delay = string.match(ARGV[i + 3], '^(%d) (%d) (%S+) (%S+)$')
    if delay == '-' then delay = '' end
    out[#out + 1] = fail_one(base, k, ARGV[i + 1], ARGV[i + 2], retry, delay, jitter, corrupt,
                             ARGV[i + 4], policy)
    i = i + 5
  end
end
return out
