--[[
  Worker registry heartbeat: record (or remove) one worker, and drop workers whose last
  beat is older than the prune age (a bounded number per call).

  KEYS[1] workers        hash (worker id -> JSON description)
  KEYS[2] worker_beats   zset (worker id -> last beat, server ms)
  ARGV[1] worker_id
  ARGV[2] info           JSON description ('' with ARGV[4] = 'leave')
  ARGV[3] prune_ms       workers silent for longer than this are removed
  ARGV[4] mode           'beat', 'leave' or 'join' (a starting worker: refuse a live holder)
  ARGV[5] dead_after     join: a holder silent for this many of its beat intervals is dead
  ARGV[6] takeover_pid   join: the pid of a holder the caller found gone ('' = none)

  Returns {now_ms} ('beat', 'leave'), or {now_ms, holder} ('join'): holder is '' when the
  entry is now the caller's, else the live holder's JSON and nothing was written. Check and
  write are one script, so two workers starting under one id at the same instant cannot
  both join.
  Errors: {-10, key, type}.
]]
--@include common

local bad = check_types({KEYS[1], 'hash', KEYS[2], 'zset'})
if bad then return bad end
local now = now_ms()
local function live_holder()
  local held = redis.call('HGET', KEYS[1], ARGV[1])
  local beat = redis.call('ZSCORE', KEYS[2], ARGV[1])
  if not held or not beat then return nil end
  local ok, other = pcall(cjson.decode, held)
  local mine = cjson.decode(ARGV[2])
  if not ok or type(other) ~= 'table' then return nil end -- unreadable: take it over
  if other.host == mine.host and tostring(other.pid) == tostring(mine.pid) then return nil end
  if other.host == mine.host and tostring(other.pid) == ARGV[6] then return nil end
  local window = tonumber(ARGV[5]) * (tonumber(other.beat_interval) or 0) * 1000
  if now - tonumber(beat) > window then return nil end
  return held
end

if ARGV[4] == 'join' then
  local holder = live_holder()
  if holder then return {now, holder} end
end
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
if ARGV[4] == 'join' then return {now, ''} end
return {now}
