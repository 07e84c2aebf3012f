-- write.lua: applies one write batch of a session at one version, atomically.
--
-- KEYS[1] creds (string)        KEYS[2] types set        KEYS[3] dirty hash
-- KEYS[4] meta hash             KEYS[5..4+T] one hash per type, in ARGV order
-- KEYS[5+T] the dirty index, only when ARGV[10] names the session
-- ARGV[1]  floor: the version the caller knows this Redis applied for the session
-- ARGV[2]  ttl in ms (0: none)
-- ARGV[3]  mode: 'd' durable (SQL committed the same records first: they become clean),
--          'r' Redis only (records are marked dirty; deletes leave tombstones),
--          'n' no SQL tier (the session is marked as such)
-- ARGV[4]  the version as 8 big-endian bytes      ARGV[5] the version in decimal
-- ARGV[6]  '1' when the batch holds creds          ARGV[7] the creds envelope (or '')
-- ARGV[8]  the tombstone envelope at this version  ARGV[9] the writer's epoch
-- ARGV[10] the session id to add to the dirty index (the last KEY), or '' (a cluster: the
--          index lives in another slot and is written by the caller)
-- ARGV[11..] per type: escaped type name, number of puts, number of deletes, the puts as
--          id/envelope pairs, the deleted ids
-- Reply: 1 applied; -1 the session's `ver` is below the floor (Redis lost writes: nothing
--        done); -2 the version is not above the session's cleared watermark `clr`; -3 a later
--        epoch (`ep`) fences the writer (modes 'r' and 'n' only: for a durable write SQL's
--        fence decided, and what SQL committed must reach Redis, or Redis would fall behind).
-- Records: each is replaced only by a newer version (the first 8 bytes compare as versions);
--        versions (`ver`, `clr`, dirty marks) are decimal strings compared as numbers (they pass
--        2^53, beyond a Lua number's exact integers).
-- TTLs (the lifetime rules, README "Storage layout"): only data keys (creds, type hashes) ever
--        get a TTL. The types set, dirty hash, meta hash and lease hash never do, so every key
--        that indexes others outlives them. A durable write with a ttl sets PEXPIRE ttl on the
--        data keys it touched, when the session has no dirty record; one without keeps their
--        TTLs (SQL holds what they hold). A write to Redis only ('r', 'n') PERSISTs the data keys
--        it touched: a record SQL lacks (or a tombstone SQL lacks) never expires before a flush.
local function vlt(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
local floor, ttl, mode = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local vb, vnum, tomb, epoch = ARGV[4], ARGV[5], ARGV[8], tonumber(ARGV[9])
local m = redis.call('HMGET', KEYS[4], 'ver', 'clr', 'ep')
if mode ~= 'd' and epoch < (tonumber(m[3]) or 0) then return -3 end
local ver = m[1] or '0'
if vlt(ver, floor) then return -1 end
if not vlt(m[2] or '0', vnum) then return -2 end
local function newer(old) return (not old) or string.sub(old, 1, 8) < vb end
local function chunked(cmd, key, list)
  for s = 1, #list, 1000 do
    redis.call(cmd, key, unpack(list, s, math.min(s + 999, #list)))
  end
end
local function hmget(key, ids)
  local out = {}
  for s = 1, #ids, 1000 do
    local got = redis.call('HMGET', key, unpack(ids, s, math.min(s + 999, #ids)))
    for j = 1, #got do out[s + j - 1] = got[j] end
  end
  return out
end
local names, data, stored, deleted = {}, {}, {}, false
if ARGV[6] == '1' then
  if newer(redis.call('GET', KEYS[1])) then redis.call('SET', KEYS[1], ARGV[7], 'KEEPTTL') end
  names[#names + 1] = '\0c'
  data[#data + 1] = KEYS[1]
end
local i, k = 11, 5
while i <= #ARGV do
  local t, np, nd = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local key = KEYS[k]
  i, k = i + 3, k + 1
  local ids, envs = {}, {}
  for _ = 1, np do
    ids[#ids + 1] = ARGV[i]
    envs[#envs + 1] = ARGV[i + 1]
    i = i + 2
  end
  for _ = 1, nd do
    ids[#ids + 1] = ARGV[i]
    envs[#envs + 1] = false
    i = i + 1
  end
  local old = hmget(key, ids)
  local sets, dels = {}, {}
  for j = 1, #ids do
    names[#names + 1] = t .. '\0' .. ids[j]
    if not envs[j] then deleted = true end
    if newer(old[j]) then
      if envs[j] then
        sets[#sets + 1] = ids[j]
        sets[#sets + 1] = envs[j]
      elseif mode == 'r' then
        sets[#sets + 1] = ids[j]
        sets[#sets + 1] = tomb
      elseif old[j] then
        dels[#dels + 1] = ids[j]
      end
    end
  end
  if #sets > 0 then
    chunked('HSET', key, sets)
    stored[#stored + 1] = t
  end
  if #dels > 0 then chunked('HDEL', key, dels) end
  data[#data + 1] = key
end
if #stored > 0 then redis.call('SADD', KEYS[2], unpack(stored)) end
if mode == 'd' then
  local marks = hmget(KEYS[3], names)
  local clean = {}
  for j = 1, #names do
    if marks[j] and not vlt(vnum, marks[j]) then clean[#clean + 1] = names[j] end
  end
  if #clean > 0 then chunked('HDEL', KEYS[3], clean) end
  if deleted then redis.call('HINCRBY', KEYS[4], 'gen', 1) end
elseif mode == 'r' then
  local fv = {}
  for _, n in ipairs(names) do
    fv[#fv + 1] = n
    fv[#fv + 1] = vnum
  end
  if #fv > 0 then chunked('HSET', KEYS[3], fv) end
  if ARGV[10] ~= '' then redis.call('SADD', KEYS[k], ARGV[10]) end
else
  redis.call('HSET', KEYS[3], '\0n', 1)
end
if vlt(ver, vnum) then redis.call('HSET', KEYS[4], 'ver', vnum) end
if mode ~= 'd' then
  for _, key in ipairs(data) do redis.call('PERSIST', key) end
elseif ttl > 0 and redis.call('HLEN', KEYS[3]) == 0 then
  for _, key in ipairs(data) do redis.call('PEXPIRE', key, ttl) end
end
return 1
