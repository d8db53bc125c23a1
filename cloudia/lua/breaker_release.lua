-- ARGV: token. A probe slot that was granted but not used (no job arrived) is handed back.
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
