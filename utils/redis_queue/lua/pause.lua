--[[
  Pause claiming from one partition: the whole queue ('*') or one task type. claim.lua
  reads the `paused` hash in the same atomic step as it picks tasks, so no claim that
  runs after this script hands out a paused task. Enqueue, promotion of due delayed
  tasks, lease reaping and settling go on; tasks already claimed run to the end.
  The pause is data in Redis: it outlives every worker, until resume.lua removes it.

  KEYS[1] paused      hash ("*" or a task type -> server ms when paused)
  ARGV[1] target      "*" (every type) or a task type

  Returns {paused_now (1 = new, 0 = it was paused already), now_ms}.
  Errors: {-10, key, type} the paused key holds the wrong Redis type.
]]
--@include common

local bad = check_types({KEYS[1], 'hash'})
if bad then return bad end
local now = now_ms()
local added = redis.call('HSETNX', KEYS[1], ARGV[1], now)
return {added, now}
