-- Reads a history channel's position and, with `since`, what followed it.
-- KEYS: stream, meta. ARGV: since ('' for the position only), limit, ttl ms.
-- Returns {epoch, top, {payload...}} with entries older than the TTL left out.
local stream, meta = KEYS[1], KEYS[2]
local epoch = redis.call('HGET', meta, 'epoch') or ''
local top = tonumber(redis.call('HGET', meta, 'offset') or '0')
local out = {}
if ARGV[1] ~= '' then
  local t = redis.call('TIME')
  local cutoff = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[3])
  local entries = redis.call('XRANGE', stream, '(' .. ARGV[1] .. '-0', '+', 'COUNT', ARGV[2])
  for _, e in ipairs(entries) do
    local f = e[2]
    if tonumber(f[4]) >= cutoff then table.insert(out, f[2]) end
  end
end
return {epoch, top, out}
