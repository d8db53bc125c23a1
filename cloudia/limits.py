"""Per-user guards against unexpected cost (FinOps), in Redis: a rate limit per minute and a daily
token budget. `ping` and `history` frames have a rate limit of their own (`admit_frame`); the cap on a
user's connections is the connection registry's (`TooManyConnections`).

The budget holds: admitting a message reserves the most its LLM call can cost (`call_tokens`: the
context the worker sends, the message, and `llm_max_tokens` back), checked against what is left and
charged in one script, so concurrent admissions cannot pass the limit. The reservation is held for
its job (`budget_hold_key`: the amount and its day) until the worker settles it once, when the job
ends (`settle`): answered, the real usage replaces it; failed for good, it is released. A hold lives
until its day's reset, when its day's counter stops counting anyway.

Windows are fixed (the current UTC minute, the current UTC day), so a check is one atomic script.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Iterable, Sequence, cast

import redis

from cloudia import lua, protocol
from cloudia.schema import budget_hold_key, budget_key, frame_rate_key, rate_key

# A rate counter outlives its minute a little, a budget counter its day, then Redis drops them.
RATE_KEY_TTL_S = 120
BUDGET_KEY_TTL_S = 2 * 86400
# A conservative, provider-neutral count of tokens: one per two bytes of UTF-8, rounded up. No tokenizer
# of the providers' models runs offline here (tiktoken downloads its encodings at first use; Anthropic
# publishes none for its current models), so this is an upper bound measured against cl100k_base and
# o200k_base (the larger count of the two): English prose uses 0.21 tokens a byte, Portuguese 0.27,
# code and Markdown 0.26, Russian 0.21, Chinese 0.36, Hindi 0.39; a half leaves about 2x room for
# English and Portuguese, enough for Claude's tokenizer too (reported to count up to a third more than
# OpenAI's). Byte soup (random characters, base64, digits one by one, emoji, rare ideographs) can take
# up to one token a byte, twice the estimate: the worker settles with the real usage, so such a call is
# still charged in full, after it (and the next admissions see it).
BYTES_PER_TOKEN = 2
# The chat format's own tokens: a role and separators around each message, and a few that start the
# reply (OpenAI counts 4 and 3).
MESSAGE_OVERHEAD_TOKENS = 8
CALL_OVERHEAD_TOKENS = 8

# The admit script's verdicts other than 0 (accepted).
RATE_LIMITED, BUDGET_EXCEEDED = 1, 2

_ADMIT = lua.source("limits_admit")

_SETTLE = lua.source("limits_settle")

_COUNT = lua.source("limits_count")


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

    def __init__(self, message: str, budget: "Budget", needed_tokens: int):
        super().__init__(message, retry_after_s=budget.resets_in_s)
        self.retry_after_s: int = budget.resets_in_s  # always said: the day's reset
        self.budget = budget
        self.needed_tokens = needed_tokens


class TooManyConnections(LimitExceeded):
    reason = "too_many_connections"


def estimate_tokens(text: str) -> int:
    """At most how many tokens `text` is for the providers' tokenizers (see `BYTES_PER_TOKEN`)."""
    return max(1, math.ceil(len(text.encode("utf-8", "surrogatepass")) / BYTES_PER_TOKEN))


def call_tokens(contents: Iterable[str], max_tokens: int) -> int:
    """The most an LLM call can cost: the messages it sends (their `contents`, the context and the
    new message) in, and `max_tokens` out (the cap every call carries)."""
    return CALL_OVERHEAD_TOKENS + sum(estimate_tokens(c) + MESSAGE_OVERHEAD_TOKENS for c in contents) + max_tokens


def within_reservation(messages: Sequence[dict], reserved_tokens: int, max_tokens: int) -> list[dict]:
    """`messages` (oldest first, the job's own last) less their oldest ones until the call fits what its
    admission reserved: the context can have grown since (answers of earlier jobs that came in
    meanwhile). The job's own message always stays; the first one left is the user's."""
    kept = list(messages)
    while len(kept) > 1 and call_tokens((m["content"] for m in kept), max_tokens) > reserved_tokens:
        kept.pop(0)
        while len(kept) > 1 and kept[0].get("role") != "user":
            kept.pop(0)
    return kept


def _minute(now_s: float) -> int:
    return int(now_s // 60)


def _seconds_to_next_minute(now_s: float) -> int:
    return max(1, math.ceil(60 - now_s % 60))


def _day(now_s: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(now_s))


def _next_day_s(now_s: float) -> int:
    """When the budget resets: the next UTC midnight, in epoch seconds."""
    return (int(now_s) // 86400 + 1) * 86400


@dataclass(frozen=True)
class Budget:
    """A user's daily budget as they are told it: used (reservations included), its limit, its reset."""

    used: int
    limit: int
    resets_at_s: int

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)

    @property
    def resets_in_s(self) -> int:
        return max(1, math.ceil(self.resets_at_s - time.time()))

    def told(self) -> dict[str, int]:
        """As the client is told it (`protocol.budget`)."""
        return protocol.budget(self.remaining, self.limit, self.resets_at_s)


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
    budget: Budget | None = None


@dataclass(frozen=True)
class Hold:
    """A job's reservation: how many tokens, counted in which day's budget."""

    tokens: int
    day: str
    raw: str

    @classmethod
    def parse(cls, raw: str | None) -> "Hold | None":
        if raw is None:
            return None
        try:
            value = json.loads(raw)
            return cls(int(value["tokens"]), str(value["day"]), raw)
        except (ValueError, TypeError, KeyError):
            return None


@dataclass(frozen=True)
class Settlement:
    reserved_tokens: int
    charged_tokens: int
    # The day's total after it (-1: that day's counter is gone already).
    tokens_that_day: int


class UsageLimits:
    def __init__(self, client: redis.Redis, rate_limit_per_minute: int, daily_token_budget: int,
                 frame_rate_limit_per_minute: int = 0):
        self._redis = client
        self._rate_limit = rate_limit_per_minute
        self._budget = daily_token_budget
        self._frame_rate_limit = frame_rate_limit_per_minute
        self._admit = client.register_script(_ADMIT)
        self._count = client.register_script(_COUNT)
        self._settle = client.register_script(_SETTLE)

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

    def admit(self, user_id: str, tokens: int, now_s: float | None = None, job_id: str | None = None) -> Usage:
        """Count one request and reserve `tokens` of the day's budget if what is left covers them, or
        raise `RateLimited` / `BudgetExceeded`. With `job_id` the reservation is held for that job
        until `settle` (a job that holds one already is not charged again)."""
        now_s = time.time() if now_s is None else now_s
        day, resets_at_s = _day(now_s), _next_day_s(now_s)
        keys = [rate_key(user_id, _minute(now_s)), budget_key(user_id, day)]
        args: list[int | str] = [RATE_KEY_TTL_S, self._rate_limit, tokens, self._budget, BUDGET_KEY_TTL_S]
        if job_id is not None:
            keys.append(budget_hold_key(job_id))
            hold = json.dumps({"tokens": tokens, "day": day}, separators=(",", ":"))
            args += [hold, max(1, math.ceil(resets_at_s - now_s))]
        verdict, rate, used = self._admit(keys=keys, args=args)
        budget = Budget(int(used), self._budget, resets_at_s)
        if verdict == RATE_LIMITED:
            raise RateLimited(f"too many messages: at most {self._rate_limit} a minute, try again shortly")
        if verdict == BUDGET_EXCEEDED:
            raise BudgetExceeded(protocol.BUDGET_EXCEEDED_MESSAGE.format(
                needed=tokens, remaining=budget.remaining, limit=self._budget,
                resets_at=time.strftime("%H:%M", time.gmtime(resets_at_s))), budget, tokens)
        return Usage(int(rate), int(used), budget)

    def held(self, job_id: str) -> Hold | None:
        """What the job holds of its user's budget (None: nothing, or it was settled)."""
        # The client decodes responses (cloudia/redis_client.py): a str or None.
        return Hold.parse(cast("str | None", self._redis.get(budget_hold_key(job_id))))

    def settle(self, user_id: str, job_id: str, real_tokens: int | None) -> Settlement | None:
        """End the job's reservation, once: charge `real_tokens` instead of it (0 releases it; None keeps
        what was reserved). None when the job holds nothing (settled already, or its day is over)."""
        hold = self.held(job_id)
        if hold is None:
            return None
        charged = hold.tokens if real_tokens is None else max(0, int(real_tokens))
        used = self._settle(keys=[budget_hold_key(job_id), budget_key(user_id, hold.day)],
                            args=[hold.raw, hold.tokens, charged])
        if used is None:
            return None
        return Settlement(hold.tokens, charged, int(used))

    def release(self, user_id: str, job_id: str) -> Settlement | None:
        """Give the job's whole reservation back (its call will not be made, or was not answered)."""
        return self.settle(user_id, job_id, 0)

    def charge_tokens(self, user_id: str, tokens: int, now_s: float | None = None) -> int:
        return charge_tokens(self._redis, user_id, tokens, now_s)

    def refund_tokens(self, user_id: str, tokens: int, now_s: float | None = None) -> int:
        return charge_tokens(self._redis, user_id, -tokens, now_s)
