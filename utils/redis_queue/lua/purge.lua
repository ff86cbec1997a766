--[[
  Delete up to `limit` tasks in one state, each with every key kept for it (as delete.lua).
  Called in a loop by the client until it takes fewer than `limit`. An entry whose record
  is in another state (a stale entry) is dropped from the structure, its record kept.

  KEYS[1] delayed     zset
  KEYS[2] completed   zset
  KEYS[3] failed      zset
  KEYS[4] cancelled   zset
  KEYS[5] dlq         set
  KEYS[6] dlq_order   zset
  KEYS[7] types       set
  KEYS[8] stats       hash
  ARGV[1] base        key prefix "<prefix>:{<queue>}:"
  ARGV[2] state       pending, delayed, completed, failed, cancelled or dead_letter
  ARGV[3] limit       entries taken per call, capped at MAX_BATCH
  ARGV[4] events      max length of the events stream (include/common.lua task_event); '0' = off

  Returns {deleted, taken}: tasks deleted, entries taken from the structure.
  Errors: {-10, key, type}; {-11, name, value} a bad state or a limit that is not a number.
]]
--@include common

local base, state = ARGV[1], ARGV[2]
local limit, bad = number_arg(ARGV[3], 'limit')
events_from(ARGV[4])
if bad then return bad end
limit = math.max(0, math.min(limit, MAX_BATCH))
local zsets = {delayed = KEYS[1], completed = KEYS[2], failed = KEYS[3], cancelled = KEYS[4]}
if not zsets[state] and state ~= 'pending' and state ~= 'dead_letter' then
  return {E_BAD_ARGUMENT, 'state', state}
end
bad = check_types({KEYS[1], 'zset', KEYS[2], 'zset', KEYS[3], 'zset', KEYS[4], 'zset',
                   KEYS[5], 'set', KEYS[6], 'zset', KEYS[7], 'set', KEYS[8], 'hash'})
if bad then return bad end

-- {structure key, ids} batches to take, at most `limit` ids in all.
local batches = {}
if state == 'pending' then
  local left = limit
  for _, task_type in ipairs(redis.call('SMEMBERS', KEYS[7])) do
    if left <= 0 then break end
    local k = pending_key(base, task_type)
    bad = check_pending_key(base, task_type)
    if bad then return bad end
    local ids = redis.call('ZRANGE', k, 0, left - 1)
    if #ids > 0 then
      batches[#batches + 1] = {k, ids}
      left = left - #ids
    end
  end
elseif state == 'dead_letter' then
  if limit > 0 then batches[1] = {KEYS[5], redis.call('SRANDMEMBER', KEYS[5], limit)} end
else
  batches[1] = {zsets[state], redis.call('ZRANGE', zsets[state], 0, limit - 1)}
end

local deleted, taken = 0, 0
for _, batch in ipairs(batches) do
  local k, ids = batch[1], batch[2]
  for _, id in ipairs(ids) do
    local f = redis.pcall('HMGET', task_key(base, id), 'state', 'type', 'uniq', 'dbnc')
    if type(f) == 'table' and not f.err and f[1] == state then
      free_windows(base, id, f[2], f[3], f[4])
      task_event(base, 'deleted', id)
      delete_task(base, id)
      deleted = deleted + 1
    end
  end
  if state == 'dead_letter' then
    call_sliced('SREM', k, ids)
    call_sliced('ZREM', KEYS[6], ids)
  else
    call_sliced('ZREM', k, ids)
  end
  taken = taken + #ids
end
if deleted > 0 then redis.call('HINCRBY', KEYS[8], 'deleted', deleted) end
return {deleted, taken}
