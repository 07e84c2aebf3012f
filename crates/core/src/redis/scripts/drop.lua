-- drop.lua: drops records of a session (its type hashes are named by the types set, all in the
-- session's slot) as the mode says, and bumps the generation so a warm that raced it is dropped.
--
-- KEYS[1] meta hash   KEYS[2] types set   KEYS[3] dirty hash   KEYS[4] creds
-- ARGV[1] the session's key base (`<prefix>:{s:<sid>}:`)
-- ARGV[2] mode:
--   'clear-keys' / 'clear': a clear at version ARGV[3] (its keys; 'clear' the creds too): every
--        record older than that version goes, with its dirty mark; a record written at a higher
--        version (a later writer whose Redis step landed first) stays, so the clear never undoes
--        a later write; raises `clr` (writes at or below it are refused) and `ver`;
--   'rebuild': Redis lost writes; drops every record except those marked dirty by writes the
--        caller did not flush (ARGV[5..]: name/version pairs it flushed; a mark above the version
--        flushed, or a name not listed, is a write that landed after the flush began), raises
--        `ver` to ARGV[3];
--   'evict': drops everything unless the session has dirty records (refused), keeps `ver`;
--   'accept': an operator accepted SQL's state of a session SQL was found behind: drops
--        everything and its marks, sets `ver` to ARGV[3] (lowering it) and removes the mark `sb`.
-- ARGV[3] the version (decimal)   ARGV[4] the caller's epoch, checked only when >= 0 (a clear
--         of a store without SQL: a durable clear was fenced by SQL)
-- ARGV[5] clears: the version as 8 big-endian bytes; 'rebuild': ARGV[5..] the flushed pairs
-- Reply: the number of type hashes dropped or trimmed; -1 an eviction refused (dirty records);
--        -3 a later epoch fences the caller (nothing done).
-- TTLs: none set; kept records keep theirs; the meta hash, types set and dirty hash never get one.
local function vlt(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
local base, mode, v, epoch = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local clear = mode == 'clear' or mode == 'clear-keys'
if epoch >= 0 and epoch < (tonumber(redis.call('HGET', KEYS[1], 'ep')) or 0) then return -3 end
local dirty = redis.call('HLEN', KEYS[3])
if mode == 'evict' and dirty > 0 then return -1 end
local types = redis.call('SMEMBERS', KEYS[2])
local ver = redis.call('HGET', KEYS[1], 'ver') or '0'
local function finish()
  if vlt(redis.call('HGET', KEYS[1], 'ver') or '0', v) then redis.call('HSET', KEYS[1], 'ver', v) end
  if clear and vlt(redis.call('HGET', KEYS[1], 'clr') or '0', v) then redis.call('HSET', KEYS[1], 'clr', v) end
  redis.call('HINCRBY', KEYS[1], 'gen', 1)
end
if mode == 'accept' then
  for _, t in ipairs(types) do redis.call('DEL', base .. 'k:' .. t) end
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
  redis.call('HSET', KEYS[1], 'ver', v)
  redis.call('HDEL', KEYS[1], 'sb')
  redis.call('HINCRBY', KEYS[1], 'gen', 1)
  return #types
end
-- nothing to keep: every record is older than a clear (the session's `ver` is below it), or a
-- rebuild or an eviction meets no dirty record
if mode == 'evict' or (mode == 'rebuild' and dirty == 0) or (clear and vlt(ver, v)) then
  for _, t in ipairs(types) do redis.call('DEL', base .. 'k:' .. t) end
  redis.call('DEL', KEYS[2])
  if mode == 'clear-keys' then
    local c = redis.call('HMGET', KEYS[3], '\0c', '\0n')
    redis.call('DEL', KEYS[3])
    if c[1] then redis.call('HSET', KEYS[3], '\0c', c[1]) end
    if c[2] then redis.call('HSET', KEYS[3], '\0n', c[2]) end
  else
    redis.call('DEL', KEYS[3], KEYS[4])
  end
  if mode ~= 'evict' then finish() else redis.call('HINCRBY', KEYS[1], 'gen', 1) end
  return #types
end
-- which records stay
local keep
if mode == 'rebuild' then
  local flushed = {}
  for i = 5, #ARGV, 2 do flushed[ARGV[i]] = ARGV[i + 1] end
  local marks = redis.call('HGETALL', KEYS[3])
  local kept = {}
  for i = 1, #marks, 2 do
    local name, mark = marks[i], marks[i + 1]
    local f = flushed[name]
    if name == '\0n' or f == nil or vlt(f, mark) then
      kept[name] = true
    else
      redis.call('HDEL', KEYS[3], name)
    end
  end
  keep = function(name) return kept[name] end
else
  local vb = ARGV[5]
  keep = function(name, env)
    if mode == 'clear-keys' and name == '\0c' then return true end
    return env and string.sub(env, 1, 8) > vb
  end
end
local n = 0
for _, t in ipairs(types) do
  local key = base .. 'k:' .. t
  local all = redis.call('HGETALL', key)
  local gone = {}
  for i = 1, #all, 2 do
    if not keep(t .. '\0' .. all[i], all[i + 1]) then gone[#gone + 1] = all[i] end
  end
  if #gone * 2 == #all then
    redis.call('DEL', key)
    redis.call('SREM', KEYS[2], t)
  elseif #gone > 0 then
    for s = 1, #gone, 1000 do redis.call('HDEL', key, unpack(gone, s, math.min(s + 999, #gone))) end
  end
  if #gone > 0 then n = n + 1 end
end
local creds = redis.call('GET', KEYS[4])
if creds and not keep('\0c', creds) then redis.call('DEL', KEYS[4]) end
if clear then
  -- the marks of the records the clear dropped go with them
  for _, name in ipairs(redis.call('HKEYS', KEYS[3])) do
    local stays = name == '\0n'
    if name == '\0c' then
      stays = keep('\0c', redis.call('GET', KEYS[4]))
    elseif not stays then
      local sep = string.find(name, '\0', 1, true)
      if sep then
        local env = redis.call('HGET', base .. 'k:' .. string.sub(name, 1, sep - 1), string.sub(name, sep + 1))
        stays = keep(name, env)
      end
    end
    if not stays then redis.call('HDEL', KEYS[3], name) end
  end
end
finish()
return n
