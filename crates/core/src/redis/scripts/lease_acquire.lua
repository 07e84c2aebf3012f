-- lease_acquire.lua: takes a session's lease.
--
-- KEYS[1] lease hash (token, holder, epoch, at)   KEYS[2] meta hash (`ep`)
-- ARGV[1] token   ARGV[2] holder   ARGV[3] ttl ms   ARGV[4] the lowest epoch (SQL's)
-- ARGV[5] force ('1')   ARGV[6] now, ms (for the record)
-- The epoch goes above every epoch seen (meta, SQL, the lease), unless the same token takes it
-- again (it keeps its epoch).
-- Reply: {1|0, holder, epoch, acquired at, ms left}: 0 (with the holder's fields) when another
--        token holds it.
-- TTLs: the lease hash gets PEXPIRE ttl; the meta hash keeps its own.
local cur = redis.call('HMGET', KEYS[1], 'token', 'holder', 'epoch', 'at')
if cur[1] and cur[1] ~= ARGV[1] and ARGV[5] ~= '1' then
  return {0, cur[2], cur[3], cur[4], redis.call('PTTL', KEYS[1])}
end
local seen = math.max(tonumber(redis.call('HGET', KEYS[2], 'ep')) or 0, tonumber(ARGV[4]), tonumber(cur[3]) or 0)
local ep, at = seen + 1, ARGV[6]
if cur[1] == ARGV[1] then
  ep, at = tonumber(cur[3]), cur[4]
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'token', ARGV[1], 'holder', ARGV[2], 'epoch', ep, 'at', at)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if ep > (tonumber(redis.call('HGET', KEYS[2], 'ep')) or 0) then redis.call('HSET', KEYS[2], 'ep', ep) end
return {1, ARGV[2], tostring(ep), at, tonumber(ARGV[3])}
