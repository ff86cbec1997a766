--[[
  The two ways a leased task ends an attempt, shared by complete.lua, fail.lua and
  settle_many.lua (which runs many of them in one script call: a script call has a fixed
  cost of several times the work of one transition).

  Both take `k` = {processing, completed, cancelled, delayed, dlq, dlq_at, failed, stats}
  (keys; each script fills those its transitions use) and
  return the reply of their single-task script. Both give back what the attempt held of
  the queue's limits (include/limits.lua); `used` is the tokens the handler reported
  (nil: none reported, the reservation stands).
]]

local TRIM_EVERY = 10
local TRIM_BATCH = 100

-- Completions are counted once per script call (end_completions): one HINCRBY for a
-- batch, and the trim runs once for each multiple of TRIM_EVERY the count passes.
local completions = 0

-- The retry policy from its script arguments, or nil and an error table when a number
-- is malformed (checked before the first write).
local function read_policy(first_immediate, base_ms, factor, cap_ms, max_retries, use_dlq)
  local policy = {first_immediate = first_immediate == '1', default_max_retries = max_retries,
                  use_dlq = use_dlq == '1'}
  local bad
  policy.base_ms, bad = number_arg(base_ms, 'base_ms')
  if bad then return nil, bad end
  policy.factor, bad = number_arg(factor, 'factor')
  if bad then return nil, bad end
  policy.cap_ms, bad = number_arg(cap_ms, 'cap_ms')
  if bad then return nil, bad end
  if not tonumber(max_retries) then
    return nil, {E_BAD_ARGUMENT, 'max_retries', tostring(max_retries)}
  end
  return policy
end

-- Complete: state completed with its result (counted, and old finished tasks trimmed, by
-- end_completions, which the script calls after its last one). `blob`: nil (the result in
-- the hash), 'key' (in its own key) or 'ext' (in a user-supplied store: `result` is
-- "<size>:<its key>", checked with ext_ref_error by the caller).
local function complete_one(base, k, id, token, keep_ms, result, used, blob)
  local key = task_key(base, id)
  local bad, f, settled = check_settle(key, token, 'error.count', 'held', 'cost', 'type',
                                       'attempts')
  if bad then return bad end
  if settled then return {0, tonumber(redis.call('HGET', key, 'completed')) or 0} end
  lim_release(base, base, id, f[4], f[5], used)
  local now = now_ms()
  local now_text = string.format('%d', now)
  local stale = {'lease', 'cancel', 'held'}
  add_blob_names(stale, 'error', f[3])
  call_sliced('HDEL', key, stale)
  local fields = {'state', 'completed', 'completed', now_text}
  if token ~= '' then
    fields[#fields + 1] = 'settled'
    fields[#fields + 1] = token
  end
  if blob == 'key' then
    put_blob(fields, base, id, 'result', result)
  elseif blob == 'ext' then
    put_ext_ref(fields, 'result', result)
  else
    add_blob(fields, 'result', result, true)
  end
  call_sliced('HSET', key, fields)
  redis.call('ZREM', k.processing, id)
  redis.call('ZADD', k.completed, now_text, id)
  completions = completions + 1
  notify_done(base, id, 'completed', f[6], f[7])
  return {0, now}
end

-- After the call's completions: counts them, and every TRIM_EVERY completions deletes a
-- batch of finished tasks older than keep_ms.
local function end_completions(base, k, keep_ms)
  if completions == 0 then return end
  local n = completions
  completions = 0
  local done = tally(k.stats, 'completed', n)
  if math.floor(done / TRIM_EVERY) == math.floor((done - n) / TRIM_EVERY) then return end
  local cutoff = string.format('%d', now_ms() - tonumber(keep_ms))
  for _, zkey in ipairs({k.completed, k.cancelled}) do
    local old = redis.call('ZRANGEBYSCORE', zkey, '-inf', cutoff, 'LIMIT', 0, TRIM_BATCH)
    for _, old_id in ipairs(old) do
      delete_task(base, old_id)
    end
    call_sliced('ZREM', zkey, old)
  end
end

-- What fail_one answered when it ended this attempt (the state says which way it went).
local function settled_fail_reply(key, state)
  if state == 'dead_letter' then return {2} end
  if state == 'failed' then return {3} end
  if state == 'cancelled' then return {4} end
  return {1, 0, tonumber(redis.call('HGET', key, 'retries')) or 0}
end

-- Fail: retry at once or after a backoff while retries remain (and `retry` is '1');
-- otherwise dead-letter (or `failed` when use_dlq is false). `policy` is
-- {first_immediate, base_ms, factor, cap_ms, default_max_retries, use_dlq}; `delay_ms`
-- '' means use the policy; `jitter` is a multiplier in (0, 1].
local function fail_one(base, k, id, token, retry, delay_ms, jitter, corrupt, err, policy,
                        used)
  local key = task_key(base, id)
  local bad, f, settled = check_settle(key, token, 'cancel', 'retries', 'max_retries', 'type',
                                       'error.count', 'held', 'cost', 'attempts', 'worker',
                                       'att.n')
  if bad then return bad end
  if settled then return settled_fail_reply(key, settled) end
  if f[8] then
    lim_release(base, base, id, f[8], f[9], used)
    redis.call('HDEL', key, 'held')
  end
  local cancel, retries, max_retries, task_type, error_count = f[3], f[4], f[5], f[6], f[7]
  if task_type then
    bad = check_pending_key(base, task_type)
    if bad then return bad end
  end
  if token ~= '' then redis.call('HSET', key, 'settled', token) end
  local now = now_ms()
  redis.call('ZREM', k.processing, id)
  -- This attempt's record, written with the error below (no extra call).
  local stale, fields = {}, {}
  add_attempt(stale, fields, key, f[12], f[10], now, f[11], err, used)
  if cancel == '1' then
    add_blob_names(stale, 'error', error_count)
    call_sliced('HDEL', key, stale)
    add_blob(fields, 'error', err, true)
    call_sliced('HSET', key, fields)
    mark_cancelled(base, key, id, now, k.cancelled, k.stats)
    return {4}
  end
  retries = tonumber(retries or '0') or 0
  max_retries = tonumber(max_retries or policy.default_max_retries) or 0
  if retry == '1' and retries < max_retries and task_type then
    retries = retries + 1
    local delay
    if delay_ms ~= '' then
      delay = tonumber(delay_ms)
    elseif policy.first_immediate and retries == 1 then
      delay = 0
    else
      local exponent = retries - 1
      if policy.first_immediate then exponent = retries - 2 end
      delay = math.min(policy.base_ms * policy.factor ^ exponent, policy.cap_ms)
      delay = math.floor(delay * tonumber(jitter))
    end
    stale[#stale + 1] = 'lease'
    add_blob_names(stale, 'error', error_count)
    call_sliced('HDEL', key, stale)
    fields[#fields + 1] = 'retries'
    fields[#fields + 1] = retries
    add_blob(fields, 'error', err, true)
    call_sliced('HSET', key, fields)
    tally(k.stats, 'retried', 1)
    task_event(base, 'retried', id, task_type, f[10], err)
    if delay <= 0 then
      make_pending(base, key, id, k.stats)
    else
      redis.call('HSET', key, 'state', 'delayed')
      schedule(base, k.delayed, now + delay, id, task_type)
    end
    return {1, delay, retries}
  end
  finalize_failure(base, key, id, err, error_count, now, k, policy.use_dlq, stale, fields)
  if corrupt == '1' then redis.call('HINCRBY', k.stats, 'corrupt', 1) end
  if policy.use_dlq then return {2} end
  return {3}
end

-- Back off: the handler was told "too many requests". Pauses `names` (none: every limit
-- key the task is bound by) for pause_ms for the whole fleet and hands the task back
-- without counting the attempt, at the place its creation time gives it (not behind the
-- tasks enqueued since); its slots and its whole token reservation are given back.
-- Returns {5, until_ms}.
local function back_off_one(base, k, id, token, pause_ms, names)
  local key = task_key(base, id)
  local bad, f, settled = check_settle(key, token, 'type', 'held', 'cost', 'limits', 'created',
                                       'prio')
  if bad then return bad end
  local now = now_ms()
  local until_ms = now + math.max(0, pause_ms)
  if settled then return {5, until_ms} end -- this call, sent again
  local task_type = f[3] or ''
  bad = check_pending_key(base, task_type)
  if bad then return bad end
  if pause_ms > 0 then -- 0: only hand it back (a partitioned queue pauses in another slot)
    if #names == 0 then names = lim_keys(task_type, f[6]) end
    lim_pause(base, names, until_ms)
    redis.call('HINCRBY', k.stats, 'rate_limited', 1)
  end
  redis.call('ZREM', k.processing, id)
  lim_release(base, base, id, f[4], f[5], '0') -- refused: its reserved tokens were not spent
  redis.call('HDEL', key, 'lease', 'held')
  if token ~= '' then redis.call('HSET', key, 'settled', token) end
  redis.call('HINCRBY', key, 'attempts', -1)
  local created = tonumber(f[7]) or now
  local score = pending_score(created * 1000 - EPOCH_US, tonumber(f[8]) or 1)
  redis.call('ZADD', pending_key(base, task_type), score, id)
  mark_ready(base, task_type, score)
  redis.call('HSET', key, 'state', 'pending')
  task_event(base, 'released', id)
  return {5, until_ms}
end
