-- lease_state.lua: the session's lease as this server's clock sees it (read only).
--
-- KEYS[1] lease hash   KEYS[2] meta hash
-- Reply: {token or '', holder, epoch, acquired at, ms left (<= 0: lapsed; -2: no lease), ep}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cur = redis.call('HMGET', KEYS[1], 'token', 'holder', 'epoch', 'at', 'exp')
local ep = redis.call('HGET', KEYS[2], 'ep') or '0'
if not cur[1] then return {'', '', '0', '0', -2, ep} end
local left
if cur[5] then left = tonumber(cur[5]) - now else left = redis.call('PTTL', KEYS[1]) end
return {cur[1], cur[2] or '', cur[3] or '0', cur[4] or '0', left, ep}
