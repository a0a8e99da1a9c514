-- The write script: every change to a session's fields goes through it.
--
-- KEYS[1]  the session hash
-- ARGV[1]  'c': the session may be created (issued in this request); 'e': it must exist;
--          'i': it must exist, and a bound session's refresh moves its index entry too
-- ARGV[2]  creation time (Unix seconds), stored as metadata when the session is created
-- ARGV[3]  TTL in ms to set (0: leave the TTL alone; always set when creating)
-- ARGV[4]  most user keys; ARGV[5] most bytes (user keys plus values)
-- ARGV[6]  's' set, 'd' delete, 'i' increment, 'n' set if absent, 'x' compare and set,
--          't' set the session's time to idle; ARGV[7..] its arguments ('x': field, new value,
--          '1' and the expected value or '0' for "expected absent"; 't': the time to idle in s)
--
-- Replies {0}: the session does not exist (expired or logged out) and nothing was written;
-- {1, n}: done (n: fields added, removed, the new counter value, or whether set);
-- {1, 0, found} for 'x' whose field held `found` (nil: absent), not the expected value
-- (the field is not written; in 'c' mode a session that did not exist is created, empty);
-- {2, keys, bytes}: refused, the session would have grown past a limit; nothing was written.
--
-- Guard: a write to a session that does not exist never creates a partial hash under its id.
-- Size: the bytes of user keys and values are kept in the '\0size' field, so the byte limit
-- costs an HSTRLEN per written field, never a scan; keys are counted with HLEN, and only when
-- a write adds one. A write that would take the session past a limit, and grows it, is
-- refused; one that shrinks an oversized session (after a limit was lowered) is not.
-- '\0size' is an upper bound, not always exact: the fast write (MULTI, see settle.lua) adds
-- what it wrote without subtracting what it replaced. So before refusing for bytes, the script
-- counts the session's bytes exactly (an HSTRLEN per field: only near the limit) and stores
-- the count.
-- Memory: the first write command is always one that Redis refuses over `maxmemory` (HSET or
-- HINCRBY), so no write that grows the session slips through once an earlier command of the
-- script has written (Redis checks the limit only until a script's first write). Deletes are
-- not refused: they free memory.
-- Cost: no closures of its own (the index helpers are made only by a write that moves an index
-- entry), and one HMGET answers whether the session exists, its stored size, its metadata and,
-- for a write of one field, that field's value before (`scripts/guard_cost.sh` measures it).
-- Index: a bound session (its '\0user' comes with the same HMGET) that the write refreshes
-- in mode 'i' has its expiry moved in its user's index too (see index.lua).
local key = KEYS[1]
local ttl = tonumber(ARGV[3])
local op, n = ARGV[6], #ARGV
local one = op == 'i' or op == 'n' or op == 'x' or (op == 's' and n == 8)
local meta
if one then
  meta = redis.call('HMGET', key, '\0created', '\0size', '\0user', '\0tti', '\0label', ARGV[7])
else
  meta = redis.call('HMGET', key, '\0created', '\0size', '\0user', '\0tti', '\0label')
end
-- Metadata fields in the hash, which HLEN counts: created and size; a bound session's user,
-- time to idle, bind time and label; an unbound one's time to idle if set.
local metas = 2
if meta[3] then metas = metas + 3 elseif meta[4] then metas = metas + 1 end
if meta[5] then metas = metas + 1 end
local exists = meta[1] ~= false
if not exists and ARGV[1] ~= 'c' then return {0} end
-- Refreshes move a bound session's index entry when the client says it is due ('i'), or when
-- the time to idle itself changes (see index.lua). Written out at each refresh below rather
-- than as a function: a closure per call costs every write.
local reindex = meta[3] and (ARGV[1] == 'i' or op == 't')
if op == 'x' then
  local expected = ARGV[9] == '1' and ARGV[10] or false
  if meta[6] ~= expected then
    -- A miss still creates the session (empty) where it may: the handle has issued its cookie
    -- either way, as for every other write in 'c' mode, and the memory backend does the same.
    if not exists then redis.call('HSET', key, '\0created', ARGV[2], '\0size', 0) end
    if ttl > 0 then
      redis.call('PEXPIRE', key, ttl)
      if reindex then index().reindex_session(key, meta[3], ttl) end
    end
    return {1, 0, meta[6]}
  end
  n = 8
elseif op == 't' then
  if exists then
    redis.call('HSET', key, '\0tti', ARGV[7])
  else
    redis.call('HSET', key, '\0created', ARGV[2], '\0size', 0, '\0tti', ARGV[7])
  end
  if ttl > 0 then
    redis.call('PEXPIRE', key, ttl)
    if reindex then index().reindex_session(key, meta[3], ttl) end
  end
  return {1, 1}
end
local size = tonumber(meta[2] or 0)
local new_size, added = size, 0

if op == 's' or op == 'n' or op == 'x' then
  local seen
  if op == 'n' then
    if meta[6] then
      if ttl > 0 then
        redis.call('PEXPIRE', key, ttl)
        if reindex then index().reindex_session(key, meta[3], ttl) end
      end
      return {1, 0}
    end
    added, new_size = 1, size + #ARGV[7] + #ARGV[8]
  elseif one then
    local old = meta[6] and #meta[6] or 0
    if old > 0 then new_size = size - old + #ARGV[8]
    else added, new_size = 1, size + #ARGV[7] + #ARGV[8] end
  else
    -- Each field's bytes before this write (HSTRLEN: 0 when absent); `seen` answers for a
    -- field named twice.
    for i = 7, n, 2 do
      local field = ARGV[i]
      local old = seen and seen[field]
      if old == nil then
        old = 0
        if exists then old = redis.call('HSTRLEN', key, field) end
      end
      if old > 0 then new_size = new_size - old
      else added = added + 1; new_size = new_size + #field end
      new_size = new_size + #ARGV[i + 1]
      if n > 8 then seen = seen or {}; seen[field] = #ARGV[i + 1] end
    end
  end
  -- Keys after the write (counted only when it adds one, or to answer a refusal).
  local keys = added
  if added > 0 and exists then keys = redis.call('HLEN', key) - metas + added end
  local too_many = added > 0 and keys > tonumber(ARGV[4])
  if too_many or (new_size > size and new_size > tonumber(ARGV[5])) then
    if exists then
      -- '\0size' may overstate (see above): count exactly, then decide (and answer exactly).
      local exact = 0
      for _, f in ipairs(redis.call('HKEYS', key)) do
        if string.byte(f, 1) ~= 0 then exact = exact + #f + redis.call('HSTRLEN', key, f) end
      end
      new_size, size = new_size - size + exact, exact
      redis.call('HSET', key, '\0size', exact)
      if added == 0 then keys = redis.call('HLEN', key) - metas end
    end
    if too_many or (new_size > size and new_size > tonumber(ARGV[5])) then
      return {2, keys, new_size}
    end
  end
  -- Metadata goes in the first HSET, so that a created session is whole or absent. unpack()
  -- takes a few thousand values at most: large writes go in chunks of 250 fields.
  local last = math.min(n, 506)
  if exists then
    redis.call('HSET', key, '\0size', new_size, unpack(ARGV, 7, last))
  else
    redis.call('HSET', key, '\0created', ARGV[2], '\0size', new_size, unpack(ARGV, 7, last))
  end
  for i = 507, n, 500 do
    redis.call('HSET', key, unpack(ARGV, i, math.min(i + 499, n)))
  end
  if ttl > 0 then
    redis.call('PEXPIRE', key, ttl)
    if reindex then index().reindex_session(key, meta[3], ttl) end
  end
  if op == 'x' then return {1, 1} end
  return {1, added}
elseif op == 'i' then
  local field = ARGV[7]
  local before = meta[6]
  if not exists then redis.call('HSET', key, '\0created', ARGV[2], '\0size', 0) end
  redis.call('HINCRBY', key, field, ARGV[8])
  -- Read back as a string: a Lua number would lose the digits of a counter above 2^53.
  local value = redis.call('HGET', key, field)
  if before then
    new_size = size - #before + #value
  else
    added, new_size = 1, size + #field + #value
  end
  local keys = 0
  if added > 0 and exists then keys = redis.call('HLEN', key) - metas - 1 end
  if exists and ((new_size > size and new_size > tonumber(ARGV[5])) or keys + added > tonumber(ARGV[4])) then
    -- '\0size' may overstate: count exactly (the new value included), then decide.
    local exact = 0
    for _, f in ipairs(redis.call('HKEYS', key)) do
      if string.byte(f, 1) ~= 0 then exact = exact + #f + redis.call('HSTRLEN', key, f) end
    end
    new_size, size = exact, exact - new_size + size
  end
  if (new_size > size and new_size > tonumber(ARGV[5])) or keys + added > tonumber(ARGV[4]) then
    -- Undo: the length of the new value is only known once HINCRBY has run.
    if not exists then redis.call('DEL', key)
    elseif before then redis.call('HSET', key, field, before)
    else redis.call('HDEL', key, field) end
    return {2, keys + added, new_size}
  end
  redis.call('HSET', key, '\0size', new_size)
  if ttl > 0 then
    redis.call('PEXPIRE', key, ttl)
    if reindex then index().reindex_session(key, meta[3], ttl) end
  end
  return {1, value}
elseif op == 'd' then
  local seen = {}
  for i = 7, n do
    local field = ARGV[i]
    if not seen[field] then
      seen[field] = true
      local old = redis.call('HSTRLEN', key, field)
      if old > 0 then new_size = new_size - old - #field end
    end
  end
  local removed = 0
  for i = 7, n, 500 do
    removed = removed + redis.call('HDEL', key, unpack(ARGV, i, math.min(i + 499, n)))
  end
  if new_size ~= size then redis.call('HSET', key, '\0size', math.max(new_size, 0)) end
  if ttl > 0 then
    redis.call('PEXPIRE', key, ttl)
    if reindex then index().reindex_session(key, meta[3], ttl) end
  end
  return {1, removed}
end
return redis.error_reply('ERR circumflex-session: unknown write op')
