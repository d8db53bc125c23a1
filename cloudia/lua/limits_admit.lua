-- KEYS: rate, budget[, the job's hold]. ARGV: rate ttl, rate limit, tokens, budget, budget ttl[, the
-- hold's value, its ttl]. The rate counter counts every attempt; tokens are reserved only for an
-- accepted message, and only if what is left covers them. A job that holds a reservation already is
-- accepted without a second one (a retried admission of the same job).
local rate = redis.call('INCR', KEYS[1])
if rate == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
local used = tonumber(redis.call('GET', KEYS[2]) or '0')
if rate > tonumber(ARGV[2]) then return {1, rate, used} end
if KEYS[3] and redis.call('EXISTS', KEYS[3]) == 1 then return {0, rate, used} end
if used + tonumber(ARGV[3]) > tonumber(ARGV[4]) then return {2, rate, used} end
used = redis.call('INCRBY', KEYS[2], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[5])
if KEYS[3] then redis.call('SET', KEYS[3], ARGV[6], 'EX', ARGV[7]) end
return {0, rate, used}
