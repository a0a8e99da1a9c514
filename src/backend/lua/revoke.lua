-- Revoke: delete some of a user's sessions, or all but one, and take them out of the index.
-- Only sessions bound to this user are deleted, whatever ids the caller names.
--
-- KEYS[1] the user's index; ARGV[1] the user id, ARGV[2] 'one' or 'all'; for 'one' ARGV[3]
-- the id (32 hex) to revoke; for 'all' ARGV[3] an id to keep ('' for none) and ARGV[4] most
-- sessions revoked by this call (the caller calls again while some are left, so that no call
-- is long).
--
-- Replies {left, revoked...}: the members still listed apart from the kept one, and the ids
-- revoked.
local ix = index()
local index, user = KEYS[1], ARGV[1]
local prefix = ix.prefix_of(index, user)
local out = {0}
local function revoke(m)
  local key = prefix .. m
  if redis.call('HGET', key, '\0user') == user then
    redis.call('UNLINK', key)
    out[#out + 1] = m
  end
  redis.call('ZREM', index, m)
end
if ARGV[2] == 'one' then
  revoke(ARGV[3])
  return out
end
-- Every member is looked at, not only those whose score is in the future: a score may lag a
-- session that still lives (see index.lua). The dead ones are dropped as they come, so each
-- call shortens the index by up to `most` members and the caller's loop ends.
local keep, most = ARGV[3], tonumber(ARGV[4])
local looked = 0
for _, m in ipairs(redis.call('ZRANGE', index, 0, most)) do
  if looked >= most then break end
  if m ~= keep then
    revoke(m)
    looked = looked + 1
  end
end
local left = redis.call('ZCARD', index)
if keep ~= '' and redis.call('ZSCORE', index, keep) then left = left - 1 end
out[1] = left
return out
