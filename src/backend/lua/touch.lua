-- Touch: the TTL refresh of a bound session (an unbound one refreshes with a plain PEXPIRE),
-- which moves the session's expiry in its user's index too.
--
-- KEYS[1] the session hash; ARGV[1] the TTL in ms. Replies 1, or 0 when the session does not
-- exist (like PEXPIRE).
local key, ttl = KEYS[1], tonumber(ARGV[1])
if redis.call('PEXPIRE', key, ttl) == 0 then return 0 end
local user = redis.call('HGET', key, '\0user')
if user then reindex(index_of(key, user), member_of(key), ttl, now_ms()) end
return 1
