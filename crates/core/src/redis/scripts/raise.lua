-- raise.lua: raises a counter of the store's own (a string key under `{m}`) to at least ARGV[1].
--
-- KEYS[1] the counter (e.g. `<prefix>:{m}:epoch-floor`)   ARGV[1] the value (decimal, < 2^53)
-- Reply: the counter's value afterwards.
-- TTLs: none (the counter never expires).
local cur = tonumber(redis.call('GET', KEYS[1])) or 0
local v = tonumber(ARGV[1])
if v > cur then
  redis.call('SET', KEYS[1], ARGV[1])
  return v
end
return cur
