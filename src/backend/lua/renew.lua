-- Renew: move a session to a new id. RENAME moves the hash in O(1), whatever its size, and
-- atomically: there is no moment at which neither id holds the data. A bound session's index
-- entry moves with it (the new id keeps the tag, so the index is in the same slot).
--
-- KEYS[1] the old hash, KEYS[2] the new one (a fresh random id); ARGV[1] the new TTL in ms.
-- Replies 1 when moved, 0 when the old session does not exist (nothing happens then).
local meta = redis.call('HMGET', KEYS[1], '\0created', '\0user')
if not meta[1] then return 0 end
local ttl = tonumber(ARGV[1])
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('PEXPIRE', KEYS[2], ttl)
local user = meta[2]
if user then
  local ix = index()
  redis.call('ZREM', ix.index_of(KEYS[1], user), ix.member_of(KEYS[1]))
  ix.reindex_session(KEYS[2], user, ttl)
end
return 1
