-- Every live instance's report.
-- KEYS: the index. ARGV: the key prefix of instance reports.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local out = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local r = redis.call('GET', ARGV[1] .. id)
  if r then table.insert(out, r) end
end
return out
