-- Sessions of a user: the live members of the index, each with what its hash says about it.
-- Prunes as it goes: expired members (bounded, see `prune`) and members whose hash is gone
-- (evicted under maxmemory, or deleted behind our back).
--
-- KEYS[1] the user's index; ARGV[1] the user id, ARGV[2] most sessions listed.
-- Replies a flat array: per session its id (32 hex), expiry (Unix ms), created (Unix s), time
-- to idle (s), label (or '').
local index, user = KEYS[1], ARGV[1]
local now = now_ms()
prune(index, now)
local prefix = string.sub(index, 1, #index - #user - 2)
-- Latest expiry first, so that past the limit the least recently used are the ones left out.
local listed = redis.call('ZREVRANGEBYSCORE', index, '+inf', '(' .. now, 'WITHSCORES', 'LIMIT', 0,
  tonumber(ARGV[2]))
local out = {}
for i = 1, #listed, 2 do
  local m = listed[i]
  local meta = redis.call('HMGET', prefix .. m, '\0created', '\0tti', '\0label', '\0user')
  if meta[1] and meta[4] == user then
    out[#out + 1] = m
    out[#out + 1] = listed[i + 1]
    out[#out + 1] = meta[1]
    out[#out + 1] = meta[2] or '0'
    out[#out + 1] = meta[3] or ''
  else
    redis.call('ZREM', index, m)
  end
end
return out
