--[[
  Append a running attempt's output (and its progress) to the task's output stream, if the
  caller still holds the lease: a worker whose lease was lost cannot write into the stream
  of the attempt that replaced it.

  KEYS[1] processing  zset (not read: it names the slot of the task's partition)
  ARGV[1] base        key prefix "<prefix>:{<queue>}:"
  ARGV[2] id
  ARGV[3] token       fencing token of the caller's lease
  ARGV[4] max_len     the stream is trimmed to about this many entries (XADD MAXLEN ~)
  ARGV[5] ttl_ms      the stream expires this long after its last write
  ARGV[6..] entries, three values each: kind, fraction ('' = not a progress entry), text.
          A progress entry also sets the task's progress fields (progress, progress.msg,
          progress.att; the last one of the call wins).

  Each entry is written as fields a (the attempt, read from the task), k (kind), t (text)
  and, for progress, p (fraction). The settle scripts add a last entry k = 'end' with the
  final state (include/common.lua notify_done) when the stream exists.

  Returns {0, last entry id, attempt}.
  Errors: {-1} no such task; {-3, state, lease} the lease was lost (or the task is not
          processing); {-10, key, type} wrong Redis type; {-11, name, value} a bad argument.
]]
--@include common

local base, id, token = ARGV[1], ARGV[2], ARGV[3]
local max_len, bad = number_arg(ARGV[4], 'max_len')
if bad then return bad end
local ttl_ms
ttl_ms, bad = number_arg(ARGV[5], 'ttl_ms')
if bad then return bad end
if (#ARGV - 5) % 3 ~= 0 or #ARGV == 5 then
  return {E_BAD_ARGUMENT, 'entries', tostring(#ARGV - 5)}
end
for i = 6, #ARGV, 3 do
  if ARGV[i + 1] ~= '' and not tonumber(ARGV[i + 1]) then
    return {E_BAD_ARGUMENT, 'fraction', ARGV[i + 1]}
  end
end
if token == '' then return {E_BAD_ARGUMENT, 'token', ''} end
local key = task_key(base, id)
local f
bad, f = check_lease(key, token, 'attempts')
if bad then return bad end
local out = output_key(base, id)
bad = check_types({out, 'stream'})
if bad then return bad end
local attempt = f[3] or '0'
local last, progress = nil, nil
for i = 6, #ARGV, 3 do
  local kind, fraction, text = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if fraction ~= '' then
    last = redis.call('XADD', out, 'MAXLEN', '~', max_len, '*',
                      'a', attempt, 'k', kind, 't', text, 'p', fraction)
    progress = i
  else
    last = redis.call('XADD', out, 'MAXLEN', '~', max_len, '*', 'a', attempt, 'k', kind, 't', text)
  end
end
if progress then
  redis.call('HSET', key, 'progress', ARGV[progress + 1], 'progress.msg', ARGV[progress + 2],
             'progress.att', attempt)
end
redis.call('PEXPIRE', out, ttl_ms)
return {0, last, tonumber(attempt)}
