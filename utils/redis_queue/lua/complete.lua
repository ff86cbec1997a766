--[[
  Complete a leased task with its result; every 10th completion also deletes a batch of
  finished tasks past their TTL (see include/settle.lua).

  KEYS[1] processing  zset
  KEYS[2] completed   zset (score = completion time, ms)
  KEYS[3] cancelled   zset
  KEYS[4] stats       hash (and this minute's history, see include/common.lua)
  ARGV[1] base        key prefix "<prefix>:{<queue>}:"
  ARGV[2] id
  ARGV[3] token       fencing token of the caller's lease ('' = no lease held)
  ARGV[4] keep_ms     finished tasks older than this are deleted
  ARGV[5] result      JSON (stored in the hash, include/common.lua add_blob)
  ARGV[6] blob        '1': store the result in its blob key (claim-check), field result.blob;
                      'e': it is in a user-supplied store, `result` is "<size>:<its key>"
  ARGV[7] events      max length of the events stream (include/common.lua task_event); '0' = off

  Returns {0, now_ms}.
  Errors: {-1} no such task; {-2, state} not processing (no token given);
          {-3, state, lease} the caller's lease was lost; {-10, key, type} wrong Redis type;
          {-11, name, value} a numeric argument is not a number.
]]
--@include common
--@include limits
--@include settle

local bad = check_types({KEYS[1], 'zset', KEYS[2], 'zset', KEYS[3], 'zset', KEYS[4], 'hash'})
if bad then return bad end
if not tonumber(ARGV[4]) then return {E_BAD_ARGUMENT, 'keep_ms', tostring(ARGV[4])} end
local k = {processing = KEYS[1], completed = KEYS[2], cancelled = KEYS[3], stats = KEYS[4]}
local blob = ({['1'] = 'key', e = 'ext'})[ARGV[6]]
if blob == 'ext' and ext_ref_error(ARGV[5]) then return ext_ref_error(ARGV[5]) end
events_from(ARGV[7])
local reply = complete_one(ARGV[1], k, ARGV[2], ARGV[3], ARGV[4], ARGV[5], nil, blob)
end_completions(ARGV[1], k, ARGV[4])
lim_flush(ARGV[1], ARGV[1])
flush_history(ARGV[1])
return reply
