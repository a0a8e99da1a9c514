-- Touch: a TTL refresh of a bound session that moves its entry in its user's index too (sent
-- when the index is due a touch, see index.lua; other refreshes are a plain PEXPIRE).
--
-- KEYS[1] the session hash; ARGV[1] the TTL in ms. Replies 1, or 0 when the session does not
-- exist (like PEXPIRE).
local key, ttl = KEYS[1], tonumber(ARGV[1])
if redis.call('PEXPIRE', key, ttl) == 0 then return 0 end
local user = redis.call('HGET', key, '\0user')
if user then
  local ix = index()
  ix.reindex_session(key, user, ttl)
end
return 1
