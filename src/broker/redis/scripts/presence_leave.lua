-- A client leaves a presence channel.
-- KEYS: members hash, expiry zset. ARGV: client, channel, leave payload ('' = none).
-- Returns 1 when the client was a member.
local gone = redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if ARGV[3] ~= '' and gone == 1 then
  redis.call('SPUBLISH', ARGV[2], ARGV[3])
end
return gone
