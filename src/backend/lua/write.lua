-- The write script: every change to a session's fields goes through it.
--
-- KEYS[1]  the session hash
-- ARGV[1]  'c': the session may be created (issued in this request); 'e': it must exist
-- ARGV[2]  creation time (Unix seconds), stored as metadata when the session is created
-- ARGV[3]  TTL in ms to set (0: leave the TTL alone; always set when creating)
-- ARGV[4]  most user keys; ARGV[5] most bytes (user keys plus values)
-- ARGV[6]  's' set, 'd' delete, 'i' increment, 'n' set if absent; ARGV[7..] its arguments
--
-- Replies {0}: the session does not exist (expired or logged out) and nothing was written;
-- {1, n}: done (n: fields added, removed, the new counter value, or whether set);
-- {2, keys, bytes}: refused, the session would have grown past a limit; nothing was written.
--
-- Guard: a write to a session that does not exist never creates a partial hash under its id.
-- Size: the bytes of user keys and values are kept in the '\0size' field, so a limit costs
-- HSTRLEN per written field, never a scan. Keys are HLEN minus the metadata fields.
-- Memory: the first write command is always one that Redis refuses over `maxmemory` (HSET or
-- HINCRBY), so no write that grows the session slips through once an earlier command of the
-- script has written (Redis checks the limit only until a script's first write). Deletes are
-- not refused: they free memory.
local key = KEYS[1]
local ttl = tonumber(ARGV[3])
local exists = redis.call('EXISTS', key) == 1
if not exists and ARGV[1] ~= 'c' then return {0} end
local max_keys, max_bytes = tonumber(ARGV[4]), tonumber(ARGV[5])
local keys, size = 0, 0
if exists then
  local stored = redis.call('HGET', key, '\0size')
  local meta = 1
  if stored then size = tonumber(stored); meta = 2 end
  keys = redis.call('HLEN', key) - meta
end
local function refused(new_keys, new_size)
  return (new_keys > max_keys and new_keys > keys) or (new_size > max_bytes and new_size > size)
end
-- Metadata first in the first HSET, so that a created session is whole or absent.
local function hset(new_size, first, last)
  if exists then
    return redis.call('HSET', key, '\0size', new_size, unpack(ARGV, first, last))
  end
  return redis.call('HSET', key, '\0created', ARGV[2], '\0size', new_size, unpack(ARGV, first, last))
end
local function expire()
  if ttl > 0 or not exists then redis.call('PEXPIRE', key, ttl) end
end
-- The bytes a field holds now (0: absent), as seen by this script so far.
local seen = {}
local function held(field)
  local len = seen[field]
  if len == nil then
    len = 0
    if exists then len = redis.call('HSTRLEN', key, field) end
  end
  return len
end

local op, n = ARGV[6], #ARGV
if op == 's' then
  local new_keys, new_size = keys, size
  for i = 7, n, 2 do
    local field, len = ARGV[i], #ARGV[i + 1]
    local old = held(field)
    if old > 0 then new_size = new_size - old else new_keys = new_keys + 1; new_size = new_size + #field end
    new_size = new_size + len
    seen[field] = len
  end
  if refused(new_keys, new_size) then return {2, new_keys, new_size} end
  if n < 7 then
    if not exists then hset(size, 7, 6) end
    expire()
    return {1, 0}
  end
  -- unpack() takes a few thousand values at most: large writes go in chunks of 250 fields.
  local added = hset(new_size, 7, math.min(n, 506))
  for i = 507, n, 500 do
    added = added + redis.call('HSET', key, unpack(ARGV, i, math.min(i + 499, n)))
  end
  expire()
  return {1, added}
elseif op == 'n' then
  local field, value = ARGV[7], ARGV[8]
  if exists and redis.call('HEXISTS', key, field) == 1 then expire(); return {1, 0} end
  local new_keys, new_size = keys + 1, size + #field + #value
  if refused(new_keys, new_size) then return {2, new_keys, new_size} end
  hset(new_size, 7, 8)
  expire()
  return {1, 1}
elseif op == 'i' then
  local field = ARGV[7]
  local before = false
  if exists then before = redis.call('HGET', key, field) end
  local old = before and #before or 0
  if not exists then redis.call('HSET', key, '\0created', ARGV[2], '\0size', 0) end
  redis.call('HINCRBY', key, field, ARGV[8])
  -- Read back as a string: a Lua number would lose the digits of a counter above 2^53.
  local value = redis.call('HGET', key, field)
  local new_keys, new_size = keys, size - old + #value
  if not before then new_keys = new_keys + 1; new_size = new_size + #field end
  if refused(new_keys, new_size) then
    -- Undo: the length of the new value is only known once HINCRBY has run.
    if not exists then redis.call('DEL', key)
    elseif before then redis.call('HSET', key, field, before)
    else redis.call('HDEL', key, field) end
    return {2, new_keys, new_size}
  end
  redis.call('HSET', key, '\0size', new_size)
  expire()
  return {1, value}
elseif op == 'd' then
  local new_size = size
  for i = 7, n do
    local field = ARGV[i]
    local old = held(field)
    if old > 0 then new_size = new_size - old - #field end
    seen[field] = 0
  end
  local removed = 0
  for i = 7, n, 500 do
    removed = removed + redis.call('HDEL', key, unpack(ARGV, i, math.min(i + 499, n)))
  end
  if new_size ~= size then redis.call('HSET', key, '\0size', math.max(new_size, 0)) end
  expire()
  return {1, removed}
end
return redis.error_reply('ERR circumflex-session: unknown write op')
