--[[
  Fail a leased task: retry it (at once or after a backoff) or, when retries are spent or
  not wanted, move it to the DLQ (or to `failed` when the DLQ is off). The attempt's error
  is kept in the task's attempt records too (the last 10, include/common.lua add_attempt).

  KEYS[1] processing  zset
  KEYS[2] delayed     zset
  KEYS[3] dlq         set
  KEYS[4] failed      zset
  KEYS[5] cancelled   zset
  KEYS[6] stats       hash (and this minute's history, see include/common.lua)
  KEYS[7] dlq_order   zset (the DLQ's ids by dead-letter time, ms)
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
  ARGV[15] events     max length of the events stream (include/common.lua task_event); '0' = off

  Returns {1, delay_ms, retries} retried; {2} dead-lettered; {3} failed (DLQ off);
          {4} cancelled (a cancel was requested while it ran).
  Errors: {-1}; {-2, state}; {-3, state, lease}; {-10, key, type} as in complete.lua;
          {-11, name, value} a numeric argument is not a number.
]]
--@include common
--@include limits
--@include settle

local bad = check_types({KEYS[1], 'zset', KEYS[2], 'zset', KEYS[3], 'set', KEYS[4], 'zset',
                         KEYS[5], 'zset', KEYS[6], 'hash', KEYS[7], 'zset'})
if bad then return bad end
local k = {processing = KEYS[1], delayed = KEYS[2], dlq = KEYS[3], failed = KEYS[4],
           cancelled = KEYS[5], stats = KEYS[6], dlq_at = KEYS[7]}
local policy
policy, bad = read_policy(ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[12], ARGV[5])
if bad then return bad end
if not tonumber(ARGV[10]) or (ARGV[11] ~= '' and not tonumber(ARGV[11])) then
  return {E_BAD_ARGUMENT, 'jitter or delay_ms', ARGV[10] .. ' ' .. ARGV[11]}
end
events_from(ARGV[15])
local reply = fail_one(ARGV[1], k, ARGV[2], ARGV[3], ARGV[4], ARGV[11], ARGV[10], ARGV[13],
                       ARGV[14], policy)
lim_flush(ARGV[1], ARGV[1])
flush_history(ARGV[1])
return reply
