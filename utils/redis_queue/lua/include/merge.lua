--[[
  How claim.lua finds the best ready tasks across task types: cursors over pending sets,
  merged through a binary min-heap, and the partition's ready index (mark_ready in
  include/common.lua), which orders the types by a lower bound of their best score.

  A cursor is {key, type, rows, pos, offset, page, exhausted, band, low, high, age}: it
  reads its pending set (or one priority band of it, with aging) a page at a time, pages
  doubling, and `head` is its current task's ordering key (age(score, band) with aging).
]]

local READY_PAGE = 32 -- index entries read per ZRANGE while scanning it
local READY_AUDIT_MS = 60000 -- how often a claim audits a slice of the index
local READY_AUDIT = 1000 -- types audited per slice

local function heap_push(heap, c)
  c.live = true -- in the heap: its current row is still in its set
  heap[#heap + 1] = c
  local i = #heap
  while i > 1 do
    local parent = math.floor(i / 2)
    if heap[parent].head <= heap[i].head then break end
    heap[parent], heap[i] = heap[i], heap[parent]
    i = parent
  end
end

local function heap_pop(heap)
  local top, n = heap[1], #heap
  top.live = false
  heap[1] = heap[n]
  heap[n] = nil
  n = n - 1
  local i = 1
  while true do
    local l, r, m = 2 * i, 2 * i + 1, i
    if l <= n and heap[l].head < heap[m].head then m = l end
    if r <= n and heap[r].head < heap[m].head then m = r end
    if m == i then break end
    heap[i], heap[m] = heap[m], heap[i]
    i = m
  end
  return top
end

local function new_cursor(key, task_type, page, band, age)
  local c = {key = key, type = task_type, rows = {}, pos = -1, offset = 0, page = page,
             exhausted = false, band = band, age = age}
  if band then
    c.low = string.format('%.0f', -band * BAND_US)
    c.high = '(' .. string.format('%.0f', (1 - band) * BAND_US)
  end
  return c
end

-- Moves a cursor to its next task; false once it has no more. A pending key of the
-- wrong type ends the cursor with c.broken set to the error to report.
local function advance(c)
  c.pos = c.pos + 2
  if c.pos > #c.rows then
    if c.exhausted then return false end
    local rows
    if c.band then
      rows = redis.pcall('ZRANGE', c.key, c.low, c.high, 'BYSCORE', 'LIMIT', c.offset, c.page,
                         'WITHSCORES')
    else
      rows = redis.pcall('ZRANGE', c.key, c.offset, c.offset + c.page - 1, 'WITHSCORES')
    end
    if rows.err then
      c.broken = {E_WRONGTYPE, c.key, redis.call('TYPE', c.key).ok}
      return false
    end
    c.rows = rows
    c.exhausted = #c.rows < 2 * c.page
    c.offset = c.offset + c.page
    c.page = c.page * 2
    c.pos = 1
    if #c.rows == 0 then return false end
  end
  c.head = tonumber(c.rows[c.pos + 1])
  if c.band then c.head = c.age(c.head, c.band) end
  return true
end

-- Takes the heap's best task into `picked`, noting its id for removal once the merge is
-- over (cursor offsets stay valid until then).
local function take(heap, picked, taken)
  local c = heap_pop(heap)
  local id = c.rows[c.pos]
  picked[#picked + 1] = {id, c.type, c.rows[c.pos + 1]}
  local ids = taken[c.key]
  if not ids then
    ids = {}
    taken[c.key] = ids
  end
  ids[#ids + 1] = id
  if advance(c) then heap_push(heap, c) end
end

local function remove_taken(taken)
  for key, ids in pairs(taken) do call_sliced('ZREM', key, ids) end
end

-- Which types a claim may take from: is_open(t), and `closed`, where the claim marks a
-- type whose own limit held a task back. A type is open when it is not paused (nor the
-- whole queue), is served (in `named`, or in the set `served_key`, or every type when
-- both are empty), and its own limit admits a task now; a type a limit holds back is
-- noted with its waiting count (lim_note_block). Each type is looked at once per claim.
local function type_filter(base, paused_key, L, named, served_key)
  local paused_all, paused = false, {}
  if redis.call('HLEN', paused_key) > 0 then
    local rows = redis.call('HGETALL', paused_key)
    for i = 1, #rows, 2 do
      paused[rows[i]] = true
      if rows[i] == '*' then paused_all = true end
    end
  end
  local serves = nil
  if #named > 0 then
    serves = {}
    for _, t in ipairs(named) do serves[t] = true end
  end
  local function served(t)
    if served_key then return redis.call('SISMEMBER', served_key, t) == 1 end
    return serves == nil or serves[t] == true
  end
  local memo, closed = {}, {}
  local function is_open(t)
    if closed[t] then return false end
    local open = memo[t]
    if open == nil then
      open = not paused_all and not paused[t] and served(t)
      if open and L then
        local at = lim_block(L, t, 0)
        if at then
          open = false
          local waiting = redis.pcall('ZCARD', pending_key(base, t))
          if type(waiting) == 'number' and waiting > 0 then
            lim_note_block(L, t, at, t, waiting)
          end
        end
      end
      memo[t] = open
    end
    return open
  end
  return is_open, closed
end

-- Reads the ready index in order, a page at a time, skipping its '' and '#' members (no
-- task type starts with either).
local function index_cursor(base)
  return {key = base .. 'ready', rows = {}, pos = -1, offset = 0, done = false}
end

-- The next (type, lower bound of its best score), or nil at the end of the index.
local function index_next(ix)
  while true do
    ix.pos = ix.pos + 2
    if ix.pos > #ix.rows then
      if ix.done then return nil end
      ix.rows = redis.call('ZRANGE', ix.key, ix.offset, ix.offset + READY_PAGE - 1,
                           'WITHSCORES')
      ix.done = #ix.rows < 2 * READY_PAGE
      ix.offset = ix.offset + READY_PAGE
      ix.pos = 1
      if #ix.rows == 0 then return nil end
    end
    local t = ix.rows[ix.pos]
    if t ~= '' and t ~= '#' then return t, tonumber(ix.rows[ix.pos + 1]) end
  end
end

-- The index is rebuilt from every known type's pending set when its '' member is missing
-- (a partition written before the index existed, or whose index key was clobbered and
-- deleted by mark_ready): every set is read before anything is written, so a pending set
-- of the wrong type is reported with nothing changed. Once a minute ('' holds the time
-- of the last look) a claim audits the next READY_AUDIT types of the type set (SSCAN, its
-- cursor kept as the score of '#'), lowering their entries to their heads: whatever
-- bypassed the index (a hand edit, a worker of an older version putting a task back
-- during a rolling upgrade) is found within T / READY_AUDIT minutes, a few ms at a time.
local function ready_rebuild(base, types_key, now)
  local index = base .. 'ready'
  local looked = redis.pcall('ZSCORE', index, '')
  if type(looked) == 'string' then
    if now - tonumber(looked) < READY_AUDIT_MS then return nil end
    local cursor = redis.call('ZSCORE', index, '#') or '0'
    local scan = redis.call('SSCAN', types_key, string.format('%.0f', tonumber(cursor)),
                            'COUNT', READY_AUDIT)
    for _, t in ipairs(scan[2]) do
      local head = redis.pcall('ZRANGE', pending_key(base, t), 0, 0, 'WITHSCORES')
      if not head.err and head[2] then redis.call('ZADD', index, 'LT', head[2], t) end
    end
    redis.call('ZADD', index, now, '', scan[1], '#')
    return nil
  end
  local entries = {now, ''}
  for _, t in ipairs(redis.call('SMEMBERS', types_key)) do
    local key = pending_key(base, t)
    local head = redis.pcall('ZRANGE', key, 0, 0, 'WITHSCORES')
    if head.err then return {E_WRONGTYPE, key, redis.call('TYPE', key).ok} end
    if head[2] then
      entries[#entries + 1] = head[2]
      entries[#entries + 1] = t
    end
  end
  redis.call('DEL', index)
  call_sliced('ZADD', index, entries)
  return nil
end

-- The best score in a type's pending set (nil when it is empty or not a zset).
local function pending_head(base, task_type)
  local head = redis.pcall('ZRANGE', pending_key(base, task_type), 0, 0, 'WITHSCORES')
  if head.err or not head[2] then return nil end
  return tonumber(head[2])
end

-- Sets a type's index entry to `head` (a score as text), or drops it (false).
local function ready_set(base, task_type, head)
  local index = base .. 'ready'
  local done
  if head then
    done = redis.pcall('ZADD', index, head, task_type)
  else
    done = redis.pcall('ZREM', index, task_type)
  end
  if type(done) == 'table' and done.err then redis.call('DEL', index) end
end

-- Sets a type's index entry to its pending set's real head (drops it when the set is
-- empty); returns that head's score, or nil.
local function ready_fix(base, task_type)
  local head = redis.pcall('ZRANGE', pending_key(base, task_type), 0, 0, 'WITHSCORES')
  if head.err then return nil end
  ready_set(base, task_type, head[2] or false)
  return head[2] and tonumber(head[2]) or nil
end
