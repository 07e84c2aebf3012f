-- warm_keys.lua: fills hash fields with records read from SQL, never over a newer record,
-- and not at all when the session's generation moved since the read began (a delete, clear,
-- eviction or rebuild raced it).
--
-- KEYS[1] the type's hash   KEYS[2] types set   KEYS[3] meta hash
-- ARGV[1] the generation (`gen`) the reader saw   ARGV[2] the escaped type name
-- ARGV[3..] id/envelope pairs
-- Reply: the number of records stored, or -1 when the generation moved (nothing done).
-- TTLs: sets none; the hash and the types set keep theirs.
if (redis.call('HGET', KEYS[3], 'gen') or '') ~= ARGV[1] then return -1 end
local ids, envs = {}, {}
for i = 3, #ARGV, 2 do
  ids[#ids + 1] = ARGV[i]
  envs[#envs + 1] = ARGV[i + 1]
end
local sets = {}
for s = 1, #ids, 1000 do
  local e = math.min(s + 999, #ids)
  local old = redis.call('HMGET', KEYS[1], unpack(ids, s, e))
  for j = 1, #old do
    local n = s + j - 1
    if (not old[j]) or string.sub(old[j], 1, 8) < string.sub(envs[n], 1, 8) then
      sets[#sets + 1] = ids[n]
      sets[#sets + 1] = envs[n]
    end
  end
end
for s = 1, #sets, 1000 do
  redis.call('HSET', KEYS[1], unpack(sets, s, math.min(s + 999, #sets)))
end
if #sets > 0 then redis.call('SADD', KEYS[2], ARGV[2]) end
return #sets / 2
