--[[
  Fail a leased task: retry it (at once or after a backoff) or, when retries are spent or
  not wanted, move it to the DLQ (or to `failed` when the DLQ is off).

  KEYS[1] processing  zset
  KEYS[2] delayed     zset
  KEYS[3] dlq         set
  KEYS[4] failed      zset
  KEYS[5] cancelled   zset
  KEYS[6] stats       hash
  ARGV[1] base        key prefix "<prefix>:{<queue>}:"
  ARGV[2] id
  ARGV[3] token       fencing token of the caller's lease ('' = no lease held)
  ARGV[4] retry       '1' to retry while retries remain, '0' to fail for good
  ARGV[5] use_dlq     '1' or '0'
  ARGV[6] first_immediate  '1': the first retry runs at once
  ARGV[7] base_ms     backoff of the first delayed retry
  ARGV[8] factor      backoff growth per further retry
  ARGV[9] cap_ms      backoff ceiling
  ARGV[10] jitter     multiplier in (0, 1] drawn by the caller
  ARGV[11] delay_ms   explicit delay for this retry ('' = use the policy)
  ARGV[12] max_retries  the queue's default, for tasks enqueued without their own
  ARGV[13] corrupt    '1' when the caller could not decode the task (counted as corrupt)
  ARGV[14] error      text (stored in chunks of at most 64 bytes)

  Returns {1, delay_ms, retries} retried; {2} dead-lettered; {3} failed (DLQ off);
          {4} cancelled (a cancel was requested while it ran).
  Errors: {-1}; {-2, state}; {-3, state, lease}; {-10, key, type} as in complete.lua.
]]
--@include common

local base, id, token = ARGV[1], ARGV[2], ARGV[3]
local bad = check_types({KEYS[1], 'zset', KEYS[2], 'zset', KEYS[3], 'set', KEYS[4], 'zset',
                         KEYS[5], 'zset', KEYS[6], 'hash'})
if bad then return bad end
local key = task_key(base, id)
local f
bad, f = check_lease(key, token, 'cancel', 'retries', 'max_retries', 'type', 'error.count')
if bad then return bad end
local cancel, retries, max_retries, task_type, error_count = f[3], f[4], f[5], f[6], f[7]

local now = now_ms()
redis.call('ZREM', KEYS[1], id)
local err = ARGV[14]
if cancel == '1' then
  local stale = {}
  add_blob_names(stale, 'error', error_count)
  redis.call('HDEL', key, unpack(stale))
  local fields = {}
  add_blob(fields, 'error', err, true)
  redis.call('HSET', key, unpack(fields))
  mark_cancelled(base, key, id, now, KEYS[5], KEYS[6])
  return {4}
end

retries = tonumber(retries or '0') or 0
max_retries = tonumber(max_retries or ARGV[12]) or 0
if ARGV[4] == '1' and retries < max_retries and task_type then
  retries = retries + 1
  local delay
  if ARGV[11] ~= '' then
    delay = tonumber(ARGV[11])
  elseif ARGV[6] == '1' and retries == 1 then
    delay = 0
  else
    local exponent = retries - 1
    if ARGV[6] == '1' then exponent = retries - 2 end
    delay = math.min(tonumber(ARGV[7]) * tonumber(ARGV[8]) ^ exponent, tonumber(ARGV[9]))
    delay = math.floor(delay * tonumber(ARGV[10]))
  end
  local stale = {'lease'}
  add_blob_names(stale, 'error', error_count)
  redis.call('HDEL', key, unpack(stale))
  local fields = {'retries', retries}
  add_blob(fields, 'error', err, true)
  redis.call('HSET', key, unpack(fields))
  redis.call('HINCRBY', KEYS[6], 'retried', 1)
  if delay <= 0 then
    make_pending(base, key, id, KEYS[6])
  else
    redis.call('HSET', key, 'state', 'delayed')
    redis.call('ZADD', KEYS[2], now + delay, id)
  end
  return {1, delay, retries}
end

finalize_failure(base, key, id, err, error_count, now, KEYS[3], KEYS[4], KEYS[6], ARGV[5] == '1')
if ARGV[13] == '1' then redis.call('HINCRBY', KEYS[6], 'corrupt', 1) end
if ARGV[5] == '1' then return {2} end
return {3}
