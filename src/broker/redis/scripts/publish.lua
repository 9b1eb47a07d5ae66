-- Stores a history publication and fans it out, atomically on the shard that owns
-- the channel's slot (every key is in that slot).
-- KEYS: stream, meta, dedup key.
-- ARGV: channel, payload tail (broker/wire.rs: `"d":...,"f":...}`), max len,
--       ttl ms, a fresh epoch, dedup window ms.
-- Returns {offset, epoch, repeated (0/1)}. The dedup key is the client's
-- idempotency key, or a random one per publish so that a resend of the same command
-- (redis-rs retries after a timeout) is not stored twice.
local stream, meta = KEYS[1], KEYS[2]
if KEYS[3] then
  local prev = redis.call('GET', KEYS[3])
  if prev then
    local o, e = string.match(prev, '^(%d+):(.*)$')
    if not o then
      -- A value without the epoch: report the channel's current one.
      return {tonumber(prev) or 0, redis.call('HGET', meta, 'epoch') or '', 1}
    end
    return {tonumber(o), e, 1}
  end
end
local epoch = redis.call('HGET', meta, 'epoch')
if (not epoch) or redis.call('EXISTS', stream) == 0 then
  -- First publication, or the history expired or was lost: a new epoch.
  epoch = ARGV[5]
  redis.call('DEL', meta, stream)
  redis.call('HSET', meta, 'epoch', epoch)
end
local offset = redis.call('HINCRBY', meta, 'offset', 1)
-- The wire format's history prefix (broker/wire.rs), then the tail Rust built.
local payload = '{"o":' .. offset .. ',"e":"' .. epoch .. '",' .. ARGV[2]
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('XADD', stream, 'MAXLEN', ARGV[3], offset .. '-0', 'p', payload, 't', ms)
redis.call('PEXPIRE', stream, ARGV[4])
redis.call('PEXPIRE', meta, ARGV[4])
if KEYS[3] then redis.call('SET', KEYS[3], offset .. ':' .. epoch, 'PX', ARGV[6]) end
redis.call('SPUBLISH', ARGV[1], payload)
return {offset, epoch, 0}
