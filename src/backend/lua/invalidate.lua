-- Invalidate: delete the session, and take it out of its user's index if it is bound. A
-- script, not a bare command, so that a pipeline that meets NOSCRIPT has run no
-- state-changing command outside a script and can be replayed whole.
-- UNLINK frees the memory in a background thread: the call costs O(1) whatever the size.
--
-- KEYS[1] the session hash. Replies 1 when it existed, 0 when not.
local key = KEYS[1]
local user = redis.call('HGET', key, '\0user')
local n = redis.call('UNLINK', key)
if user then
  local ix = index()
  redis.call('ZREM', ix.index_of(key, user), ix.member_of(key))
end
return n
