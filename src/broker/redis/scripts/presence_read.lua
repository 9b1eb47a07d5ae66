-- Who is in a presence channel, or how many. Expired members are removed first,
-- with their leaves, as in presence_refresh.lua.
-- KEYS: members hash, expiry zset.
-- ARGV: channel, join/leave ('1'/'0'), mode ('list' or 'stats'), max members listed.
-- Returns {clients, users, entries}: entries only for 'list' within the maximum
-- (users only for 'stats').
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, c in ipairs(expired) do
  local e = redis.call('HGET', KEYS[1], c)
  redis.call('HDEL', KEYS[1], c)
  redis.call('ZREM', KEYS[2], c)
  if e and ARGV[2] == '1' then
    redis.call('SPUBLISH', ARGV[1], '{"d":' .. e .. ',"k":"l"}')
  end
end
local n = redis.call('HLEN', KEYS[1])
if ARGV[3] == 'stats' then
  local users, anonymous, count = {}, 0, 0
  for _, v in ipairs(redis.call('HVALS', KEYS[1])) do
    local ok, m = pcall(cjson.decode, v)
    if ok and m.user and m.user ~= '' then
      if not users[m.user] then users[m.user] = true; count = count + 1 end
    else
      anonymous = anonymous + 1
    end
  end
  return {n, count + anonymous, {}}
end
if n > tonumber(ARGV[4]) then
  return {n, 0, {}}
end
return {n, 0, redis.call('HVALS', KEYS[1])}
