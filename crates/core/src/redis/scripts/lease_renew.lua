-- lease_renew.lua: extends a lease this token holds while it lives. A lease that lapsed is
-- never extended: the holder takes it again with lease_take.lua ('reacquire'), under a new
-- epoch, and only if no other writer took an epoch meanwhile (`rules::renew`).
--
-- KEYS[1] lease hash   ARGV[1] token   ARGV[2] ttl ms
-- Reply: 1 extended; 0 lapsed, gone or another token's.
-- TTLs: none (see lease_take.lua); a lease of an older version loses its PX here.
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cur = redis.call('HMGET', KEYS[1], 'token', 'exp')
if cur[1] ~= ARGV[1] then return 0 end
local left
if cur[2] then left = tonumber(cur[2]) - now else left = redis.call('PTTL', KEYS[1]) end
if left <= 0 then return 0 end
redis.call('HSET', KEYS[1], 'exp', now + tonumber(ARGV[2]))
redis.call('PERSIST', KEYS[1])
return 1
