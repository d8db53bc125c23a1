-- KEYS: a rate counter. ARGV: its ttl. The count, this attempt included.
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return count
