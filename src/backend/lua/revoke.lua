-- Revoke: delete some of a user's sessions, or all but one, and take them out of the index.
-- Only sessions bound to this user are deleted, whatever ids the caller names.
--
-- KEYS[1] the user's index; ARGV[1] the user id, ARGV[2] 'one' or 'all'; for 'one' ARGV[3]
-- the id (32 hex) to revoke; for 'all' ARGV[3] an id to keep ('' for none) and ARGV[4] most
-- sessions revoked by this call (the caller calls again while some are left, so that no call
-- is long).
--
-- Replies {left, revoked...}: the live members still listed apart from the kept one, and the
-- ids revoked.
local index, user = KEYS[1], ARGV[1]
local prefix = string.sub(index, 1, #index - #user - 2)
local out = {0}
local function revoke(m)
  local key = prefix .. m
  if redis.call('HGET', key, '\0user') == user then
    redis.call('UNLINK', key)
    out[#out + 1] = m
  end
  redis.call('ZREM', index, m)
end
if ARGV[2] == 'one' then
  revoke(ARGV[3])
  return out
end
-- Only live members are candidates and counted as left: expired ones (which sort first) are
-- pruned as everywhere, bounded, so that a chunk never spends itself on the dead and stops
-- short of the live sessions behind them.
local keep, most = ARGV[3], tonumber(ARGV[4])
local now = now_ms()
prune(index, now)
local live = redis.call('ZRANGEBYSCORE', index, '(' .. now, '+inf', 'LIMIT', 0, most + 1)
for _, m in ipairs(live) do
  if #out > most then break end
  if m ~= keep then revoke(m) end
end
local left = redis.call('ZCOUNT', index, '(' .. now, '+inf')
local kept = keep ~= '' and redis.call('ZSCORE', index, keep)
if kept and tonumber(kept) > now then left = left - 1 end
out[1] = left
return out
