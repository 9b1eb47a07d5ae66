-- An instance re-asserts its local members of one presence channel (after a
-- failover that lost recent writes, they come back) and pushes their expiry;
-- then members whose expiry passed (their instance died without cleanup) are
-- removed, each with a leave when join/leave is on. Removal happens here, in one
-- atomic step, so exactly one instance sends each leave.
-- KEYS: members hash, expiry zset.
-- ARGV: ttl ms, channel, join/leave ('1'/'0'), then client, entry, client, entry...
-- Returns the number of expired members removed.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
for i = 4, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('ZADD', KEYS[2], now + ttl, ARGV[i])
end
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, c in ipairs(expired) do
  local e = redis.call('HGET', KEYS[1], c)
  redis.call('HDEL', KEYS[1], c)
  redis.call('ZREM', KEYS[2], c)
  if e and ARGV[3] == '1' then
    -- The wire format's leave (broker/wire.rs): data and kind, no id.
    redis.call('SPUBLISH', ARGV[2], '{"d":' .. e .. ',"k":"l"}')
  end
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('PEXPIRE', KEYS[1], ttl * 2)
  redis.call('PEXPIRE', KEYS[2], ttl * 2)
end
return #expired
