-- An instance's heartbeat: its report under its own key, its expiry in the index,
-- and the expired ones dropped from the index. All keys share the {registry} tag.
-- KEYS: the instance's key, the index. ARGV: instance id, report JSON, ttl ms.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('PEXPIRE', KEYS[2], ttl * 10)
return 1
