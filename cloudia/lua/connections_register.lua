-- KEYS: connection, the user's connections, the connection's tombstone.
-- ARGV: user id, TTL s, cap (0: none), the prefix of a connection's key, connection id.
-- With a cap, the user's live registrations other than this one are counted first; a member whose key
-- expired or belongs to another user is pruned on the way, so expiry and disconnects free a place.
-- A connection already registered to this user is renewed without counting.
if redis.call('EXISTS', KEYS[3]) == 1 then return {-1, 0} end
local cap = tonumber(ARGV[3])
local live = 0
if cap > 0 and redis.call('GET', KEYS[1]) ~= ARGV[1] then
  for _, member in ipairs(redis.call('SMEMBERS', KEYS[2])) do
    if member ~= ARGV[5] and redis.call('GET', ARGV[4] .. member) == ARGV[1] then
      live = live + 1
    else
      redis.call('SREM', KEYS[2], member)
    end
  end
  if live >= cap then return {-2, live} end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return {0, live + 1}
