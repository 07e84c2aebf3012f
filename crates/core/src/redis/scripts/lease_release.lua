-- lease_release.lua: drops the lease if this token holds it.
--
-- KEYS[1] lease hash   ARGV[1] token
-- Reply: 1 dropped, 0 not held by this token.
if redis.call('HGET', KEYS[1], 'token') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
