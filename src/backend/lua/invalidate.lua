-- Invalidate: delete the session. A script, not a bare command, so that a pipeline that meets
-- NOSCRIPT has run no state-changing command outside a script and can be replayed whole.
-- UNLINK frees the memory in a background thread: the call costs O(1) whatever the size.
return redis.call('UNLINK', KEYS[1])
