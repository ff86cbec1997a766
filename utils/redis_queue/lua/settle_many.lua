--[[
  Settle many leased tasks in one call: each item is one complete or fail transition,
  applied in order, each with its own fencing check and reply (see include/settle.lua).

  KEYS[1] processing  zset
  KEYS[2] completed   zset
  KEYS[3] cancelled   zset
  KEYS[4] delayed     zset
  KEYS[5] dlq         set
  KEYS[6] failed      zset
  KEYS[7] stats       hash (and this minute's history, written once per call)
  KEYS[8] dlq_order   zset (the DLQ's ids by dead-letter time, ms)
  ARGV[1] base        key prefix "<prefix>:{<queue>}:"
  ARGV[2] keep_ms     as in complete.lua
  ARGV[3] use_dlq     '1' or '0'
  ARGV[4] first_immediate, ARGV[5] base_ms, ARGV[6] factor, ARGV[7] cap_ms,
  ARGV[8] max_retries (the queue's default): the retry policy, as in fail.lua
  ARGV[9] events      max length of the events stream (include/common.lua task_event); '0' = off
  ARGV[10..] items, each:
    complete: 'c', id, token, result
              'u', id, token, tokens used, result (the handler reported its token use)
              'C' and 'U': the same, with the result stored in its blob key (claim-check)
              'E' and 'V': the same, the result being in a user-supplied store (result =
              "<size>:<its key there>")
    fail:     'f', id, token, "<retry 0|1> <corrupt 0|1> <jitter> <delay_ms or -> [used]",
              error
    back off: 'b', id, token, "<pause_ms> [limit,limit...]" (a RateLimited handler)

  Returns one reply per item, as complete.lua or fail.lua would (errors included).
  Errors: {-10, key, type} a queue key holds the wrong Redis type; {-11, what, value} a
          malformed item (nothing is written in either case).
]]
--@include common
--@include limits
--@include settle

-- Every item is parsed before the first one is applied: a malformed item further down
-- must not fail the script after earlier items were written.
local items = {}
local any_fail = false
local BLOB_OPS = {C = 'key', U = 'key', E = 'ext', V = 'ext'} -- where the item's result is
local i = 10
while i <= #ARGV do
  local op = ARGV[i]
  local blob = BLOB_OPS[op]
  if blob == 'ext' and ext_ref_error(ARGV[i + (op == 'E' and 3 or 4)] or '') then
    return ext_ref_error(ARGV[i + (op == 'E' and 3 or 4)] or '')
  end
  if (op == 'c' or op == 'C' or op == 'E') and i + 3 <= #ARGV then
    items[#items + 1] = {op = 'c', id = ARGV[i + 1], token = ARGV[i + 2], text = ARGV[i + 3],
                         blob = blob}
    i = i + 4
  elseif (op == 'u' or op == 'U' or op == 'V') and i + 4 <= #ARGV then
    if not tonumber(ARGV[i + 3]) then return {E_BAD_ARGUMENT, 'tokens used', ARGV[i + 3]} end
    items[#items + 1] = {op = 'c', id = ARGV[i + 1], token = ARGV[i + 2], used = ARGV[i + 3],
                         text = ARGV[i + 4], blob = blob}
    i = i + 5
  elseif op == 'f' and i + 4 <= #ARGV then
    local retry, corrupt, jitter, delay, used =
      string.match(ARGV[i + 3], '^([01]) ([01]) (%S+) (%S+) ?(%S*)$')
    if not retry or not tonumber(jitter) or (delay ~= '-' and not tonumber(delay))
        or (used ~= '' and not tonumber(used)) then
      return {E_BAD_ARGUMENT, 'fail options', ARGV[i + 3]}
    end
    if delay == '-' then delay = '' end
    if used == '' then used = nil end
    any_fail = true
    items[#items + 1] = {op = op, id = ARGV[i + 1], token = ARGV[i + 2], retry = retry,
                         corrupt = corrupt, jitter = jitter, delay = delay, used = used,
                         text = ARGV[i + 4]}
    i = i + 5
  elseif op == 'b' and i + 3 <= #ARGV then
    local pause_ms, listed = string.match(ARGV[i + 3], '^(%d+) ?(%S*)$')
    if not pause_ms then return {E_BAD_ARGUMENT, 'back off', ARGV[i + 3]} end
    local names = {}
    for name in string.gmatch(listed, '[^,]+') do names[#names + 1] = name end
    items[#items + 1] = {op = op, id = ARGV[i + 1], token = ARGV[i + 2],
                         pause = tonumber(pause_ms), names = names}
    i = i + 4
  else
    return {E_BAD_ARGUMENT, 'item', tostring(op)}
  end
end
local checks = {KEYS[1], 'zset', KEYS[2], 'zset', KEYS[3], 'zset', KEYS[7], 'hash',
                ARGV[1] .. 'limits', 'hash'}
if any_fail then -- only a failure can delay or dead-letter: a batch of completions skips these
  for _, v in ipairs({KEYS[4], 'zset', KEYS[5], 'set', KEYS[6], 'zset', KEYS[8], 'zset'}) do
    checks[#checks + 1] = v
  end
end
local bad = check_types(checks)
if bad then return bad end
local base = ARGV[1]
events_from(ARGV[9])
local k = {processing = KEYS[1], completed = KEYS[2], cancelled = KEYS[3], delayed = KEYS[4],
           dlq = KEYS[5], failed = KEYS[6], stats = KEYS[7], dlq_at = KEYS[8]}
local policy
policy, bad = read_policy(ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[3])
if bad then return bad end
if not tonumber(ARGV[2]) then return {E_BAD_ARGUMENT, 'keep_ms', tostring(ARGV[2])} end
local out = {}
for _, it in ipairs(items) do
  if it.op == 'c' then
    out[#out + 1] = complete_one(base, k, it.id, it.token, ARGV[2], it.text, it.used, it.blob)
  elseif it.op == 'b' then
    out[#out + 1] = back_off_one(base, k, it.id, it.token, it.pause, it.names)
  else
    out[#out + 1] = fail_one(base, k, it.id, it.token, it.retry, it.delay, it.jitter,
                             it.corrupt, it.text, policy, it.used)
  end
end
end_completions(base, k, ARGV[2])
lim_flush(base, base)
flush_history(base)
return out
