-- Shared by every script that keeps a user's index (its source is put in front of theirs).
--
-- A bound session `<prefix>:{<tag>}:<32 hex>` is listed in the sorted set
-- `<prefix>:{<tag>}:u:<user>`: same hash tag, so the same cluster slot. The member is the
-- session's 32 hex characters; its score is the session's expiry (Unix ms, Redis's clock) as
-- of the last time a script touched the index for it.
--
-- Refreshes of a bound session move its index entry only now and then (the client sends the
-- touch script, or the 'i' mode of the write script, once per SLACK_PERCENT of the time to
-- idle per worker; other refreshes are a plain PEXPIRE). So a score may lag the session's real
-- expiry by up to that much, and two rules keep the index exact anyway:
-- - the index's own TTL is padded by SLACK_PERCENT of the TTL at every touch, so it is never
--   earlier than any member's real expiry: a refresh without the index happens within the
--   window of a touch that padded it;
-- - a member whose score has passed is only dropped if its session is really gone (PTTL);
--   one still alive is scored again with its real expiry.
-- So every live bound session is listed until it is revoked or invalidated, and the index
-- vanishes by itself (its TTL) once every session has.

-- The helpers are made by `index()`, so that a script pays for them (Lua makes a closure per
-- function on every call) only when it touches an index: most writes never do.
local function index()
  local ix = {}
  local SLACK_PERCENT = 10

  function ix.now_ms()
    local t = redis.call('TIME')
    return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end

  -- The index of a session's user: the session key with its id replaced by 'u:<user>'.
  function ix.index_of(key, user)
    return string.sub(key, 1, #key - 32) .. 'u:' .. user
  end

  function ix.member_of(key)
    return string.sub(key, -32)
  end

  -- The prefix of the session keys an index lists (`<prefix>:{<tag>}:`).
  function ix.prefix_of(index, user)
    return string.sub(index, 1, #index - #user - 2)
  end

  -- Looks at members whose score has passed, at most 256 per call so that no call is long
  -- however many sessions expired at once (the index's TTL removes any left over): drops those
  -- whose session is gone, scores again those still alive.
  function ix.prune(index, prefix, now)
    local stale = redis.call('ZRANGEBYSCORE', index, '-inf', now, 'LIMIT', 0, 256)
    for _, m in ipairs(stale) do
      local left = redis.call('PTTL', prefix .. m)
      if left > 0 then
        redis.call('ZADD', index, now + left, m)
      else
        redis.call('ZREM', index, m)
      end
    end
  end

  -- Records that `member` now expires in `ttl` ms, prunes, and keeps the index alive at least
  -- as long, plus the slack (see above).
  function ix.reindex(index, prefix, member, ttl, now)
    redis.call('ZADD', index, now + ttl, member)
    ix.prune(index, prefix, now)
    local keep = ttl + math.floor(ttl * SLACK_PERCENT / 100)
    if redis.call('PTTL', index) < keep then
      redis.call('PEXPIRE', index, keep)
    end
  end

  -- reindex() for a session key, now.
  function ix.reindex_session(key, user, ttl)
    local prefix = string.sub(key, 1, #key - 32)
    ix.reindex(prefix .. 'u:' .. user, prefix, ix.member_of(key), ttl, ix.now_ms())
  end
  return ix
end

