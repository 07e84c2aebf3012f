-- clean.lua: after a flush, removes the dirty marks at or below the version flushed, and the
-- tombstones SQL now holds (only when the stored tombstone is still the one flushed).
--
-- KEYS[1] dirty hash   KEYS[2] meta hash
-- ARGV[1] the session's key base   ARGV[2..] triples: mark name, version flushed (decimal), the tombstone
--         envelope that was flushed or ''
-- Reply: the number of marks removed. Bumps the generation when it removed a tombstone.
-- TTLs: sets none.
local function vlt(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
local n, tombs = 0, false
for i = 2, #ARGV, 3 do
  local name, v, tomb = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local mark = redis.call('HGET', KEYS[1], name)
  if mark and not vlt(v, mark) then
    n = n + redis.call('HDEL', KEYS[1], name)
    if tomb ~= '' then
      local sep = string.find(name, '\0', 1, true)
      local key = ARGV[1] .. 'k:' .. string.sub(name, 1, sep - 1)
      local id = string.sub(name, sep + 1)
      if redis.call('HGET', key, id) == tomb then
        redis.call('HDEL', key, id)
        tombs = true
      end
    end
  end
end
if tombs then redis.call('HINCRBY', KEYS[2], 'gen', 1) end
return n
