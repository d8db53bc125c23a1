"""The deadline model of a streamed LLM call, and what the call's timing was.

A model takes a moment to its first token, then writes at a steady rate for as long as the answer
is: a 1,000-token answer at 40 tokens/s takes 25 s and is perfectly healthy. So a call is bounded by
- `connect`: reaching the provider (the HTTP client's connect timeout);
- `first_token`: from the request to the first token (the architecture's "worker -> LLM 5-10 s");
- `stall`: the longest silence between two tokens once the answer has started;
- `deadline`: the whole call, `first_token + max_tokens / min_tokens_per_s`: the longest answer the
  call may ask for (`max_tokens` is set on every request) at the slowest rate still accepted.
`Stopwatch` enforces the last three on one timer that each token moves on, and names the bound that
fired (`first_token_timeout`, `stall`, `deadline`).
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

from cloudia.settings import Resilience

# Below this many tokens a rate says little (a short answer is mostly its first-token wait).
RATE_MIN_TOKENS = 20


@dataclass(frozen=True)
class CallBounds:
    connect_s: float
    first_token_s: float
    stall_s: float
    max_tokens: int
    min_tokens_per_s: float

    @classmethod
    def of(cls, res: Resilience) -> "CallBounds":
        return cls(res.llm_connect_timeout_s, res.llm_first_token_timeout_s, res.llm_stall_timeout_s,
                   res.llm_max_tokens, res.llm_min_tokens_per_s)

    @property
    def deadline_s(self) -> float:
        return self.first_token_s + self.max_tokens / self.min_tokens_per_s


def call_deadline_s(res: Resilience) -> float:
    """The longest a live LLM call can last with these settings."""
    return CallBounds.of(res).deadline_s


@dataclass(frozen=True)
class CallTiming:
    """How a call went: seconds to its first token (None if none came), its length, its tokens."""

    first_token_s: float | None
    duration_s: float
    tokens: int

    @property
    def tokens_per_s(self) -> float | None:
        """The writing rate after the first token; None when too few tokens say nothing."""
        if self.first_token_s is None or self.tokens < RATE_MIN_TOKENS:
            return None
        writing_s = self.duration_s - self.first_token_s
        return self.tokens / writing_s if writing_s > 0 else None


class CallTimeout(Exception):
    """A bound of the deadline model fired; `kind` names it."""

    def __init__(self, kind: str, after_s: float):
        super().__init__(f"LLM call cut: {kind.replace('_', ' ')} after {after_s:.1f} s")
        self.kind = kind


class Stopwatch:
    """One call's clock: `async with Stopwatch(bounds) as watch`, `watch.token(n)` on every delta.

    The timer starts at the first-token bound; each token moves it to the next stall bound, never
    past the call's deadline. When it fires, the body is cancelled and `CallTimeout` says which bound
    it was."""

    def __init__(self, bounds: CallBounds):
        self._bounds = bounds
        self._loop = asyncio.get_running_loop()
        self._started = self._loop.time()
        self._first_token_at: float | None = None
        self._tokens = 0
        self._timeout = asyncio.timeout(None)  # bound to the call's task when entered
        self._armed_kind = "first_token_timeout"
        self._ended: float | None = None

    async def __aenter__(self) -> "Stopwatch":
        await self._timeout.__aenter__()
        self._arm(self._started + self._bounds.first_token_s, "first_token_timeout")
        return self

    async def __aexit__(self, exc_type, exc, tb) -> bool:
        self._ended = self._loop.time()
        try:
            await self._timeout.__aexit__(exc_type, exc, tb)
        except TimeoutError:
            raise CallTimeout(self._armed_kind, self._ended - self._started) from None
        return False

    def token(self, count: int = 1) -> None:
        now = self._loop.time()
        if self._first_token_at is None:
            self._first_token_at = now
        self._tokens += count
        deadline = self._started + self._bounds.deadline_s
        stall = now + self._bounds.stall_s
        self._arm(min(stall, deadline), "stall" if stall < deadline else "deadline")

    def set_tokens(self, count: int) -> None:
        """The provider's own count of the tokens written, once it tells (usage)."""
        if count:
            self._tokens = count

    def _arm(self, when: float, kind: str) -> None:
        self._armed_kind = kind
        self._timeout.reschedule(when)

    @property
    def timing(self) -> CallTiming:
        end = self._ended if self._ended is not None else self._loop.time()
        first = None if self._first_token_at is None else self._first_token_at - self._started
        return CallTiming(first, end - self._started, self._tokens)
