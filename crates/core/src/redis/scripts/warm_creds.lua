-- warm_creds.lua: stores creds read from SQL, never over newer creds, and not at all when the
-- session's generation moved since the read began.
--
-- KEYS[1] creds   KEYS[2] meta hash
-- ARGV[1] the generation the reader saw   ARGV[2] the creds envelope
-- Reply: 1 stored, 0 Redis holds newer creds, -1 the generation moved (nothing done).
-- TTLs: sets none; a new creds key has none.
if (redis.call('HGET', KEYS[2], 'gen') or '') ~= ARGV[1] then return -1 end
local old = redis.call('GET', KEYS[1])
if (not old) or string.sub(old, 1, 8) < string.sub(ARGV[2], 1, 8) then
  redis.call('SET', KEYS[1], ARGV[2])
  return 1
end
return 0
