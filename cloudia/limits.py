"""Per-user guards against unexpected cost (FinOps), in Redis: a rate limit per minute and a daily
token budget. The functions check and charge a message's tokens when they accept it; the worker
adds the answer's tokens with `charge_tokens`. `ping` and `history` frames have a rate limit of their
own (`admit_frame`); the cap on a user's connections is the connection registry's (`TooManyConnections`).

Windows are fixed (the current UTC minute, the current UTC day), so a check is one atomic script.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import redis

from cloudia import protocol
from cloudia.schema import budget_key, frame_rate_key, rate_key

# A rate counter outlives its minute a little, a budget counter its day, then Redis drops them.
RATE_KEY_TTL_S = 120
BUDGET_KEY_TTL_S = 2 * 86400
# A rough, provider-neutral estimate: about four characters per token.
CHARS_PER_TOKEN = 4

ACCEPTED, RATE_LIMITED, BUDGET_EXCEEDED = 0, 1, 2

# KEYS: rate, budget. ARGV: rate ttl, rate limit, tokens, budget, budget ttl.
# The rate counter counts every attempt; tokens are charged only for an accepted message.
_ADMIT = """
local rate = redis.call('INCR', KEYS[1])
if rate == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
if rate > tonumber(ARGV[2]) then return {1, rate, tonumber(redis.call('GET', KEYS[2]) or '0')} end
local used = tonumber(redis.call('GET', KEYS[2]) or '0')
if used + tonumber(ARGV[3]) > tonumber(ARGV[4]) then return {2, rate, used} end
used = redis.call('INCRBY', KEYS[2], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[5])
return {0, rate, used}
"""

# KEYS: a rate counter. ARGV: its ttl. The count, this attempt included.
_COUNT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return count
"""


class LimitExceeded(Exception):
    reason = "limit_exceeded"

    def __init__(self, message: str, retry_after_s: int | None = None):
        super().__init__(message)
        # When trying again can succeed, in whole seconds (None: not said).
        self.retry_after_s = retry_after_s


class RateLimited(LimitExceeded):
    reason = "rate_limited"


class BudgetExceeded(LimitExceeded):
    reason = "budget_exceeded"


class TooManyConnections(LimitExceeded):
    reason = "too_many_connections"


def estimate_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


def _minute(now_s: float) -> int:
    return int(now_s // 60)


def _seconds_to_next_minute(now_s: float) -> int:
    return max(1, math.ceil(60 - now_s % 60))


def _day(now_s: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(now_s))


def charge_tokens(client: redis.Redis, user_id: str, tokens: int, now_s: float | None = None) -> int:
    """Add `tokens` to the user's budget of the day (negative to refund); the day's total."""
    key = budget_key(user_id, _day(time.time() if now_s is None else now_s))
    pipe = client.pipeline(transaction=True)
    pipe.incrby(key, tokens)
    pipe.expire(key, BUDGET_KEY_TTL_S)
    return int(pipe.execute()[0])


@dataclass(frozen=True)
class Usage:
    requests_this_minute: int
    tokens_today: int


class UsageLimits:
    def __init__(self, client: redis.Redis, rate_limit_per_minute: int, daily_token_budget: int,
                 frame_rate_limit_per_minute: int = 0):
        self._redis = client
        self._rate_limit = rate_limit_per_minute
        self._budget = daily_token_budget
        self._frame_rate_limit = frame_rate_limit_per_minute
        self._admit = client.register_script(_ADMIT)
        self._count = client.register_script(_COUNT)

    def admit_frame(self, user_id: str, now_s: float | None = None) -> int:
        """Count one `ping` or `history` frame of the user in the current minute, or raise
        `RateLimited` (with when the next minute starts) past the limit (0: no limit)."""
        if self._frame_rate_limit <= 0:
            return 0
        now_s = time.time() if now_s is None else now_s
        count = int(self._count(keys=[frame_rate_key(user_id, _minute(now_s))], args=[RATE_KEY_TTL_S]))
        if count > self._frame_rate_limit:
            retry_after_s = _seconds_to_next_minute(now_s)
            raise RateLimited(protocol.FRAMES_RATE_LIMITED_MESSAGE.format(
                limit=self._frame_rate_limit, retry_after_s=retry_after_s), retry_after_s=retry_after_s)
        return count

    def admit(self, user_id: str, tokens: int, now_s: float | None = None) -> Usage:
        """Count one request and charge `tokens`, or raise `RateLimited` / `BudgetExceeded`."""
        now_s = time.time() if now_s is None else now_s
        verdict, rate, used = self._admit(
            keys=[rate_key(user_id, _minute(now_s)), budget_key(user_id, _day(now_s))],
            args=[RATE_KEY_TTL_S, self._rate_limit, tokens, self._budget, BUDGET_KEY_TTL_S],
        )
        if verdict == RATE_LIMITED:
            raise RateLimited(f"too many messages: at most {self._rate_limit} a minute, try again shortly")
        if verdict == BUDGET_EXCEEDED:
            raise BudgetExceeded(
                f"daily token budget reached ({used} of {self._budget} tokens used): try again tomorrow"
            )
        return Usage(int(rate), int(used))

    def charge_tokens(self, user_id: str, tokens: int, now_s: float | None = None) -> int:
        return charge_tokens(self._redis, user_id, tokens, now_s)

    def refund_tokens(self, user_id: str, tokens: int, now_s: float | None = None) -> int:
        return charge_tokens(self._redis, user_id, -tokens, now_s)
