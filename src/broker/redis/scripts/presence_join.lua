-- A client joins a presence channel (every key in the channel's slot).
-- KEYS: members hash (client -> entry), expiry zset (client -> expiry ms).
-- ARGV: client, entry JSON, ttl ms, channel, join payload ('' without join/leave;
--       the wire format of broker/wire.rs, built in Rust).
-- Returns 1 when the client was not a member yet.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
local new = redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl * 2)
redis.call('PEXPIRE', KEYS[2], ttl * 2)
if ARGV[5] ~= '' and new == 1 then
  redis.call('SPUBLISH', ARGV[4], ARGV[5])
end
return new
