-- drop.lua: drops every record of a session: its type hashes (named by the types set, all in
-- the session's slot), the types set, and the creds and dirty marks as the mode says. Bumps the
-- generation so a warm that raced it is dropped.
--
-- KEYS[1] meta hash   KEYS[2] types set   KEYS[3] dirty hash   KEYS[4] creds
-- ARGV[1] the session's key base (`<prefix>:{s:<sid>}:`)
-- ARGV[2] mode: 'clear-keys' keeps the creds and their dirty mark; 'clear' drops everything;
--         'rebuild' drops everything and the marks; 'evict' refuses a session with dirty records
-- ARGV[3] the version: raises `ver`; for the clears also the cleared watermark `clr`
-- ARGV[4] the caller's lease epoch (-1: none)
-- Reply: the number of type hashes dropped; -1 an eviction refused (dirty records);
--        -3 a later lease epoch fences the caller (nothing done).
-- TTLs: sets none; the meta hash keeps its own.
local mode, v, epoch = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
if epoch >= 0 and epoch < (tonumber(redis.call('HGET', KEYS[1], 'ep')) or 0) then return -3 end
if mode == 'evict' and redis.call('HLEN', KEYS[3]) > 0 then return -1 end
local types = redis.call('SMEMBERS', KEYS[2])
for _, t in ipairs(types) do redis.call('DEL', ARGV[1] .. 'k:' .. t) end
redis.call('DEL', KEYS[2])
if mode == 'clear-keys' then
  local c = redis.call('HMGET', KEYS[3], '\0c', '\0n')
  redis.call('DEL', KEYS[3])
  if c[1] then redis.call('HSET', KEYS[3], '\0c', c[1]) end
  if c[2] then redis.call('HSET', KEYS[3], '\0n', c[2]) end
else
  redis.call('DEL', KEYS[3], KEYS[4])
end
if v > (tonumber(redis.call('HGET', KEYS[1], 'ver')) or 0) then redis.call('HSET', KEYS[1], 'ver', v) end
if (mode == 'clear' or mode == 'clear-keys') and v > (tonumber(redis.call('HGET', KEYS[1], 'clr')) or 0) then
  redis.call('HSET', KEYS[1], 'clr', v)
end
redis.call('HINCRBY', KEYS[1], 'gen', 1)
return #types
