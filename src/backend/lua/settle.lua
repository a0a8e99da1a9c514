-- The settle script: the second half of a fast write, run only when its first half may have
-- taken the session past a limit.
--
-- A fast write (`Step::FastSet` in plan.rs) is one MULTI: `HMGET` of '\0created' and the
-- written fields' values before, `HSET` of the fields, `HINCRBY '\0size'` by the bytes
-- written, and a `PEXPIRE`. It costs about half of the write script in Redis, because it runs
-- no Lua, but it cannot refuse: it writes first. Its reply tells whether the session existed
-- (if not, the hash it made is an orphan without '\0created', which readers ignore and the
-- writer deletes at once), whether it added keys, and the size it left. When it added a key,
-- or its size passed the byte limit, the writer calls this script, which decides as the write
-- script would have: the session must be within its limits, or the write must not have grown
-- it. If it is not, the write is undone: each field that still holds the value written gets
-- back its value before (or is deleted if it had none), so a later write by someone else is
-- never undone.
--
-- KEYS[1]  the session hash
-- ARGV[1]  most user keys; ARGV[2] most bytes (user keys plus values)
-- ARGV[3..] for each written field: field, value written, '1' and the value before, or '0'
--          and '' (the field was absent)
--
-- Replies as the write script does: {0} the session is gone (nothing to settle); {1, 0} within
-- the limits (or the write did not grow it); {2, keys, bytes}: over a limit, undone (keys and
-- bytes as they were with the write, as the write script reports a refusal).
-- '\0size' is stored exact afterwards (it is an upper bound between counts, see write.lua).
local key = KEYS[1]
local meta = redis.call('HMGET', key, '\0created', '\0user', '\0tti', '\0label')
if not meta[1] then return {0} end
local metas = 2
if meta[2] then metas = metas + 3 elseif meta[3] then metas = metas + 1 end
if meta[4] then metas = metas + 1 end
local keys = redis.call('HLEN', key) - metas
local size = 0
for _, field in ipairs(redis.call('HKEYS', key)) do
  if string.byte(field, 1) ~= 0 then size = size + #field + redis.call('HSTRLEN', key, field) end
end
-- What the write changed: bytes and keys it added.
local grew, added = 0, 0
for i = 3, #ARGV, 4 do
  if ARGV[i + 2] == '1' then
    grew = grew + #ARGV[i + 1] - #ARGV[i + 3]
  else
    grew = grew + #ARGV[i] + #ARGV[i + 1]
    added = added + 1
  end
end
local over = (grew > 0 and size > tonumber(ARGV[2])) or (added > 0 and keys > tonumber(ARGV[1]))
if not over then
  redis.call('HSET', key, '\0size', size)
  return {1, 0}
end
-- Undo, field by field, where the field still holds what this write put there.
local after = size
for i = 3, #ARGV, 4 do
  local field, written = ARGV[i], ARGV[i + 1]
  if redis.call('HGET', key, field) == written then
    if ARGV[i + 2] == '1' then
      redis.call('HSET', key, field, ARGV[i + 3])
      after = after - #written + #ARGV[i + 3]
    else
      redis.call('HDEL', key, field)
      after = after - #field - #written
    end
  end
end
redis.call('HSET', key, '\0size', after)
return {2, keys, size}
