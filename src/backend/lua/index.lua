-- Shared by every script that keeps a user's index (its source is put in front of theirs).
--
-- A bound session `<prefix>:{<tag>}:<32 hex>` is listed in the sorted set
-- `<prefix>:{<tag>}:u:<user>`: same hash tag, so the same cluster slot. The member is the
-- session's 32 hex characters, the score its expiry (Unix ms, on Redis's clock). The index's
-- own TTL is never earlier than its latest member's expiry, so it outlives no session by more
-- than that, and vanishes by itself once every session has.

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The index of a session's user: the session key with its id replaced by 'u:<user>'.
local function index_of(key, user)
  return string.sub(key, 1, #key - 32) .. 'u:' .. user
end

local function member_of(key)
  return string.sub(key, -32)
end

-- Drops members whose session has expired: at most 256 per call, so that no call is long
-- however many sessions expired at once (the index's TTL removes any left over).
local function prune(index, now)
  local stale = redis.call('ZCOUNT', index, '-inf', now)
  if stale > 0 then
    redis.call('ZREMRANGEBYRANK', index, 0, math.min(stale, 256) - 1)
  end
end

-- Records that `member` now expires in `ttl` ms, prunes, and keeps the index alive at least
-- as long.
local function reindex(index, member, ttl, now)
  redis.call('ZADD', index, now + ttl, member)
  prune(index, now)
  if redis.call('PTTL', index) < ttl then
    redis.call('PEXPIRE', index, ttl)
  end
end

