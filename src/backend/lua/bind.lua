-- Bind: store a session under a fresh id as the user's, list it in the user's index, and
-- revoke the user's oldest sessions past the cap; all at once, so that no other command sees
-- the cap exceeded or the session unlisted.
--
-- KEYS[1] the new session hash (a fresh id with the user's tag), KEYS[2] the user's index.
-- ARGV[1] creation time (Unix s), ARGV[2] TTL in ms, ARGV[3] the session's time to idle in s
-- (listed by sessions_of), ARGV[4] the user id, ARGV[5] a label ('' for none), ARGV[6] most
-- sessions per user (0: no cap), ARGV[7..] the fields and values carried over from the
-- session before login (bounded by the session limits it was written under).
--
-- Replies {0, revoked...}: the ids (32 hex) of the sessions revoked by the cap.
local ix = index()
local key, index = KEYS[1], KEYS[2]
local ttl, cap, n = tonumber(ARGV[2]), tonumber(ARGV[6]), #ARGV
local now = ix.now_ms()
local size = 0
for i = 7, n, 2 do size = size + #ARGV[i] + #ARGV[i + 1] end
-- The first write is an HSET: Redis refuses it over maxmemory before anything changed.
-- `\0bound` orders the cap's revocations: the bind time in microseconds.
local t = redis.call('TIME')
redis.call('HSET', key, '\0created', ARGV[1], '\0size', size, '\0user', ARGV[4],
  '\0tti', ARGV[3], '\0bound', t[1] .. string.format('%06d', tonumber(t[2])))
if ARGV[5] ~= '' then redis.call('HSET', key, '\0label', ARGV[5]) end
for i = 7, n, 500 do
  redis.call('HSET', key, unpack(ARGV, i, math.min(i + 499, n)))
end
redis.call('PEXPIRE', key, ttl)
local member = ix.member_of(key)
local prefix = string.sub(key, 1, #key - 32)
ix.reindex(index, prefix, member, ttl, now)
local revoked = {0}
if cap > 0 and redis.call('ZCOUNT', index, '(' .. now, '+inf') > cap then
  -- Oldest first: by the time each was bound.
  local others = {}
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', index, '(' .. now, '+inf')) do
    if m ~= member then
      local bound = redis.call('HGET', prefix .. m, '\0bound')
      if bound then
        others[#others + 1] = {tonumber(bound), m}
      else
        redis.call('ZREM', index, m)
      end
    end
  end
  table.sort(others, function(a, b) return a[1] < b[1] end)
  for i = 1, #others + 1 - cap do
    local m = others[i][2]
    redis.call('UNLINK', prefix .. m)
    redis.call('ZREM', index, m)
    revoked[#revoked + 1] = m
  end
end
return revoked
