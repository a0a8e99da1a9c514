-- Compare-and-set of one field of a hash: the write half of a read-modify-write, measured by
-- `examples/cas_cost.rs` (`--mechanism script`). Its read half is a plain HGET.
--
-- KEYS[1]  the hash
-- ARGV[1]  the field
-- ARGV[2]  'v': the field must still hold ARGV[3]; 'a': it must still be absent
-- ARGV[3]  the value read before ('' with 'a')
-- ARGV[4]  the new value
-- ARGV[5]  TTL in ms, set with the write
--
-- Replies 1: written and the TTL set; 0: the field changed since it was read, nothing written.
--
-- A script runs with no other command between its HGET and its HSET, so the comparison and the
-- write are one step; and it needs no state on the connection, so it can travel in the same
-- pipeline as any other client's commands.
local key, field = KEYS[1], ARGV[1]
local current = redis.call('HGET', key, field)
if ARGV[2] == 'a' then
  if current then return 0 end
elseif current ~= ARGV[3] then
  return 0
end
redis.call('HSET', key, field, ARGV[4])
redis.call('PEXPIRE', key, ARGV[5])
return 1
