-- lease_take.lua: takes a session's lease, or an epoch to write under without one (a claim),
-- or takes a lapsed lease again. The same decision as `rules::take_lease` (crates/core/src/sql/
-- rules.rs), made here where the lease lives in Redis; tests run both against the same cases.
--
-- KEYS[1] lease hash: token, holder, epoch, at (ms), exp (ms, by this server's clock)
-- KEYS[2] meta hash: `ep`, the highest epoch that took the session (writes to Redis only that
--         carry a lower one are fenced)
-- ARGV[1] mode: 'acquire' | 'claim' | 'reacquire'
-- ARGV[2] token   ARGV[3] holder   ARGV[4] ttl ms
-- ARGV[5] the epoch the durable tier handed out for this take, or 0 when there is none (a store
--         without SQL): the epoch is then handed out here, above ARGV[9]
-- ARGV[6] force ('1': take it even from a live lease of another token, which ends that lease)
-- ARGV[7] check ('1': a claim is refused while another token's lease lives; '0': leases off)
-- ARGV[8] since: for 'reacquire', the epoch the caller held
-- ARGV[9] floor: the lowest epoch to hand out here (ARGV[5] = 0)
-- ARGV[10] seal ('1': the taker seals what it writes). Without SQL (ARGV[5] = 0) the meta hash's
--          `sealed` marks a session a sealing taker took (with SQL, SQL keeps the mark)
-- Reply: {1, epoch, acquired at, ms left, '', sealed} granted;
--        {0, holder, epoch, acquired at, ms left, sealed} another token's live lease;
--        {-1, ep} the epoch handed out is not above what this Redis saw (the durable tier is
--        behind: hand out another above ep);
--        {-2, ep} 'reacquire': another writer took an epoch since, or (without SQL) the lease
--        hash is gone: the session was purged (or this Redis lost it). The lease is lost.
--        sealed: 1 when (without SQL) the session's data was sealed before this take, else 0.
-- TTLs: none. The lease hash never expires by itself (an eviction policy for keys with a TTL
--       cannot end a lease early); it lapses by `exp`. A lease written by an older version
--       (PX, no `exp`) is read by its PTTL and rewritten without one.
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local mode, token, ttl = ARGV[1], ARGV[2], tonumber(ARGV[4])
local own = ARGV[5] == '0'
local sealed = 0
if own and redis.call('HGET', KEYS[2], 'sealed') == '1' then sealed = 1 end
local cur = redis.call('HMGET', KEYS[1], 'token', 'holder', 'epoch', 'at', 'exp')
local ep = tonumber(redis.call('HGET', KEYS[2], 'ep')) or 0
local left = -1
if cur[1] then
  if cur[5] then left = tonumber(cur[5]) - now else left = redis.call('PTTL', KEYS[1]) end
end
local live = cur[1] and left > 0
local mine = live and cur[1] == token
local other = live and cur[1] ~= token
local function extend()
  redis.call('HSET', KEYS[1], 'exp', now + ttl)
  redis.call('PERSIST', KEYS[1])
  return {1, cur[3], cur[4], ttl, '', sealed}
end
if mode == 'reacquire' then
  if ep > tonumber(ARGV[8]) or (own and not cur[1]) then return {-2, tostring(ep)} end
  if mine then return extend() end
  if other then return {0, cur[2], cur[3], cur[4], left, sealed} end
elseif mode == 'acquire' then
  if mine then return extend() end
  if other and ARGV[6] ~= '1' then return {0, cur[2], cur[3], cur[4], left, sealed} end
elseif other and ARGV[7] == '1' and ARGV[6] ~= '1' then
  return {0, cur[2], cur[3], cur[4], left, sealed}
end
local seen = math.max(ep, tonumber(cur[3]) or 0)
local e = tonumber(ARGV[5])
if e == 0 then
  e = math.max(seen, tonumber(ARGV[9])) + 1
elseif e <= seen then
  return {-1, tostring(seen)}
end
if mode == 'claim' then
  if other then redis.call('DEL', KEYS[1]) end
else
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'token', token, 'holder', ARGV[3], 'epoch', e, 'at', now, 'exp', now + ttl)
end
redis.call('HSET', KEYS[2], 'ep', e)
if own and ARGV[10] == '1' then redis.call('HSET', KEYS[2], 'sealed', 1) end
return {1, tostring(e), tostring(now), ttl, '', sealed}
