-- Sessions of a user: the live members of the index, each with what its hash says about it.
-- Prunes as it goes: expired members (bounded, see `prune`) and members whose hash is gone
-- (evicted under maxmemory, or deleted behind our back).
--
-- KEYS[1] the user's index; ARGV[1] the user id, ARGV[2] most sessions listed.
-- Replies a flat array: per session its id (32 hex), expiry (Unix ms), created (Unix s), time
-- to idle (s), label (or ''). A member whose score lags its session's expiry (see index.lua)
-- but has not passed yet is listed; one whose score passed is scored again by `prune` first.
local ix = index()
local index, user = KEYS[1], ARGV[1]
local now = ix.now_ms()
local prefix = ix.prefix_of(index, user)
ix.prune(index, prefix, now)
-- Latest expiry first: the most recently used sessions, if there are more than the limit.
local listed = redis.call('ZREVRANGEBYSCORE', index, '+inf', '(' .. now, 'WITHSCORES', 'LIMIT', 0,
  tonumber(ARGV[2]))
local out = {}
for i = 1, #listed, 2 do
  local m = listed[i]
  local meta = redis.call('HMGET', prefix .. m, '\0created', '\0tti', '\0label', '\0user')
  local left = redis.call('PTTL', prefix .. m)
  if meta[1] and meta[4] == user and left > 0 then
    out[#out + 1] = m
    -- The real expiry: the score may lag it (see index.lua).
    out[#out + 1] = now + left
    out[#out + 1] = meta[1]
    out[#out + 1] = meta[2] or '0'
    out[#out + 1] = meta[3] or ''
  else
    redis.call('ZREM', index, m)
  end
end
return out
