-- Renew: move a session to a new id. RENAME moves the hash in O(1), whatever its size, and
-- atomically: there is no moment at which neither id holds the data.
--
-- KEYS[1] the old hash, KEYS[2] the new one (a fresh random id); ARGV[1] the new TTL in ms.
-- Replies 1 when moved, 0 when the old session does not exist (nothing happens then).
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return 1
