-- KEYS: the job's hold, its day's budget. ARGV: the hold's value as read, the tokens it holds, the
-- tokens to charge instead. Once: the hold goes with it, so a second settle (a redelivered job) finds
-- nothing and changes nothing. Nil when nothing was held (settled already, or past its day).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return nil end
redis.call('DEL', KEYS[1])
if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
local used = redis.call('INCRBY', KEYS[2], tonumber(ARGV[3]) - tonumber(ARGV[2]))
if used < 0 then
  redis.call('SET', KEYS[2], 0, 'KEEPTTL')
  used = 0
end
return used
