-- lease_renew.lua: extends a lease this token holds; takes it back if it expired and no later
-- epoch exists.
--
-- KEYS[1] lease hash   KEYS[2] meta hash
-- ARGV[1] token   ARGV[2] ttl ms   ARGV[3] epoch   ARGV[4] holder   ARGV[5] now, ms
-- Reply: 1 kept, 0 lost.
-- TTLs: the lease hash gets PEXPIRE ttl.
local t = redis.call('HGET', KEYS[1], 'token')
if t == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
local ep = tonumber(ARGV[3])
if (not t) and (tonumber(redis.call('HGET', KEYS[2], 'ep')) or 0) <= ep then
  redis.call('HSET', KEYS[1], 'token', ARGV[1], 'holder', ARGV[4], 'epoch', ep, 'at', ARGV[5])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('HSET', KEYS[2], 'ep', ep)
  return 1
end
return 0
