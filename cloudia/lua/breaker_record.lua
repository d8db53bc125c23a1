-- ARGV: now_ms, outcome, is_probe, token, window_ms, min_calls, failure_rate, slow_rate, open_ms, probes
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
local now = tonumber(ARGV[1])
local outcome = ARGV[2]
local open_ms = tonumber(ARGV[9])
local function open_circuit()
  redis.call('HSET', KEYS[1], 'state', 'open', 'open_until', now + open_ms, 'open_ms', open_ms, 'successes', 0)
  redis.call('DEL', KEYS[2], KEYS[4], KEYS[5], KEYS[3])
  return {'open', 'opened'}
end
if ARGV[3] == '1' then
  local held = redis.call('ZREM', KEYS[3], ARGV[4])
  if state ~= 'half_open' or held == 0 then return {state, ''} end
  if outcome ~= 'ok' then return open_circuit() end
  local successes = redis.call('HINCRBY', KEYS[1], 'successes', 1)
  if successes >= tonumber(ARGV[10]) then
    redis.call('HSET', KEYS[1], 'state', 'closed')
    redis.call('DEL', KEYS[2], KEYS[4], KEYS[5], KEYS[3])
    return {'closed', 'closed'}
  end
  return {'half_open', ''}
end
if state ~= 'closed' then return {state, ''} end
local window_ms = tonumber(ARGV[5])
local member = ARGV[4]
redis.call('ZADD', KEYS[2], now, member)
if outcome == 'fail' or outcome == 'slow_fail' then redis.call('ZADD', KEYS[4], now, member) end
if outcome == 'slow' or outcome == 'slow_fail' then redis.call('ZADD', KEYS[5], now, member) end
local total, failures, slow = 0, 0, 0
for i, key in ipairs({KEYS[2], KEYS[4], KEYS[5]}) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window_ms)
  redis.call('PEXPIRE', key, window_ms)
end
total = redis.call('ZCARD', KEYS[2])
failures = redis.call('ZCARD', KEYS[4])
slow = redis.call('ZCARD', KEYS[5])
if total >= tonumber(ARGV[6]) and (failures / total >= tonumber(ARGV[7]) or slow / total >= tonumber(ARGV[8])) then
  return open_circuit()
end
return {'closed', ''}
