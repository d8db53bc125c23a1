"""A circuit breaker around the LLM provider, its state shared by every worker through Redis.

States: CLOSED (calls go through and are counted) -> OPEN (every call fails fast, nothing reaches the
provider) -> after `breaker_open_s`, HALF_OPEN (at most `breaker_half_open_probes` probe calls at a
time; that many successes close it, one failure opens it again).

It opens when, over the last `breaker_window_s` and once `breaker_min_calls` calls were seen, either the
failure rate reaches `breaker_failure_rate` or the rate of slow calls reaches `breaker_slow_call_rate`.
A call is slow when its first token came later than `breaker_slow_first_token_s` (or none came by
then), or its tokens came slower than `breaker_slow_tokens_per_s`: a provider that takes 9 s to start
is as unusable as one that fails, but a healthy model writing a long answer for a minute is not slow.
A call that fails slowly counts as both.

A probe slot (`Permit` of a half-open circuit) is settled exactly once: by `record`, or by `release`
when no call was made; both are idempotent, so whoever holds the permit last can always release it.

Why not a library: pybreaker counts consecutive failures only (no rate, no time window, no slow
calls, and its Redis storage is a read-modify-write race across processes); aiobreaker is pybreaker's
asyncio port with the same model; purgatory has no failure-rate/slow-call window and no atomic shared
half-open probe limit; Powertools' own `circuit_breaker` utility trips on consecutive failures only,
keeps its state in DynamoDB (a round trip per call) and wraps sync functions. Here every transition
is one Lua script run atomically in Redis, so one worker's discovery protects the fleet and exactly
one worker sees (and reports) each transition.

If Redis is unreachable, each breaker falls back to the same algorithm on local state, so the worker
keeps protecting the provider on its own until Redis is back.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import redis
from redis.commands.core import Script

from cloudia import lua
from cloudia.llm.timing import CallTiming
from cloudia.schema import breaker_key
from cloudia.settings import Resilience

logger = logging.getLogger(__name__)

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
# The breakers' names (their Redis keys, `schema.breaker_key`): the primary provider's, which
# `sendMessage` reads to tell a sender at once, and the fallback provider's.
PRIMARY_BREAKER, FALLBACK_BREAKER = "llm", "llm-fallback"
OK, SLOW, FAIL, SLOW_FAIL = "ok", "slow", "fail", "slow_fail"
# After a Redis error, use local state this long before asking Redis again (no 500 ms stall per call).
REDIS_RETRY_AFTER_S = 5.0
# A probe slot is freed if its holder never reports (crashed worker): after this long it counts as lost.
PROBE_LEASE_MIN_S = 10.0

_ACQUIRE = lua.source("breaker_acquire")

_RECORD = lua.source("breaker_record")

_RELEASE = lua.source("breaker_release")


def _keys(name: str) -> list[str]:
    base = breaker_key(name)
    return [base, f"{base}:calls", f"{base}:probes", f"{base}:failures", f"{base}:slow"]


def circuit_is_open(redis_client: redis.Redis, name: str = PRIMARY_BREAKER) -> bool:
    """Cheap read of the shared state: True while the circuit is open and its wait has not run out.

    False when Redis cannot be reached (the caller then queues the job; the worker decides)."""
    try:
        state, open_until = redis_client.hmget(breaker_key(name), ["state", "open_until"])
    except (redis.RedisError, OSError):
        return False
    return state == OPEN and open_until is not None and time.time() * 1000 < float(open_until)


@dataclass
class Permit:
    """The answer to "may I call the provider now?". A probe's slot is settled once (`settled`)."""

    allowed: bool
    state: str
    probe: bool = False
    token: str = ""
    retry_after_s: float = 0.0
    local: bool = False
    settled: bool = field(default=False, compare=False)


class _LocalState:
    """The same algorithm on in-process state, for when Redis is unreachable."""

    def __init__(self):
        self.lock = threading.Lock()
        self.state = CLOSED
        self.open_until = 0.0
        self.successes = 0
        self.probes: dict[str, float] = {}
        self.calls: deque[tuple[float, str]] = deque()


@dataclass(frozen=True)
class _Shared:
    """The state every worker shares: the Redis client and the breaker's scripts registered on it."""
    client: redis.Redis
    acquire: Script
    record: Script
    release: Script

    @classmethod
    def on(cls, client: redis.Redis) -> "_Shared":
        return cls(client, client.register_script(_ACQUIRE), client.register_script(_RECORD),
                   client.register_script(_RELEASE))


class CircuitBreaker:
    def __init__(self, redis_client: redis.Redis | None, resilience: Resilience, name: str = PRIMARY_BREAKER,
                 on_transition: Callable[[str, str, str], None] | None = None,
                 clock: Callable[[], float] = time.time):
        """`on_transition(name, new_state, scope)` is called by the one caller that made the change."""
        self.name = name
        self._shared = _Shared.on(redis_client) if redis_client is not None else None
        self._res = resilience
        self._keys = _keys(name)
        self._on_transition = on_transition
        self._clock = clock
        self._local = _LocalState()
        self._redis_down_until = 0.0
        # A probe is recorded at its first token (see the worker's processor), so its slot is held at
        # most the first-token bound; a slot whose holder died frees itself after this.
        self._probe_lease_ms = int(max(PROBE_LEASE_MIN_S, 2 * resilience.llm_first_token_timeout_s) * 1000)

    # -- public API ---------------------------------------------------------------------------
    def acquire(self) -> Permit:
        """May a call go to the provider now? Fails fast (allowed=False) while the circuit is open."""
        if (shared := self._use_redis()) is not None:
            token = uuid.uuid4().hex
            try:
                state, allowed, wait_ms = shared.acquire(
                    keys=self._keys, args=[self._now_ms(), self._res.breaker_half_open_probes,
                                           self._probe_lease_ms, token])
                allowed = bool(int(allowed))
                probe = allowed and state == HALF_OPEN
                return Permit(allowed, state, probe, token if probe else "", int(wait_ms) / 1000)
            except (redis.RedisError, OSError) as error:
                self._redis_failed(error)
        return self._local_acquire()

    def outcome(self, succeeded: bool, timing: CallTiming | None) -> str:
        """OK, SLOW, FAIL or SLOW_FAIL for a call that went as `timing` says."""
        slow = timing is not None and self._is_slow(timing)
        if not succeeded:
            return SLOW_FAIL if slow else FAIL
        return SLOW if slow else OK

    def _is_slow(self, timing: CallTiming) -> bool:
        res = self._res
        if timing.first_token_s is None:  # no token (yet): slow once it waited past a healthy start
            return timing.duration_s >= res.breaker_slow_first_token_s
        if timing.first_token_s >= res.breaker_slow_first_token_s:
            return True
        rate = timing.tokens_per_s
        return rate is not None and rate < res.breaker_slow_tokens_per_s

    def record(self, permit: Permit, succeeded: bool, timing: CallTiming | None) -> str:
        """Report a call's outcome and settle its permit; returns the new state. A failure means the
        provider is unhealthy (timeout, connection error, 5xx, 429), not that the request was wrong
        (that counts as a success). `timing` tells a slow call (None: not judged slow)."""
        outcome = self.outcome(succeeded, timing)
        permit.settled = True
        if not permit.local and (shared := self._use_redis()) is not None:
            try:
                state, transition = shared.record(keys=self._keys, args=[
                    self._now_ms(), outcome, "1" if permit.probe else "0", permit.token or uuid.uuid4().hex,
                    int(self._res.breaker_window_s * 1000), self._res.breaker_min_calls,
                    self._res.breaker_failure_rate, self._res.breaker_slow_call_rate,
                    int(self._res.breaker_open_s * 1000), self._res.breaker_half_open_probes])
                self._transitioned(transition, state, "shared", outcome)
                return state
            except (redis.RedisError, OSError) as error:
                self._redis_failed(error)
        return self._local_record(permit, outcome)

    def release(self, permit: Permit) -> None:
        """Hand back a probe slot that was not used; a no-op once the permit is settled."""
        if not permit.probe or permit.settled:
            return
        permit.settled = True
        if permit.local or self._shared is None:  # (a permit from Redis implies a client)
            with self._local.lock:
                self._local.probes.pop(permit.token, None)
            return
        try:
            self._shared.release(keys=self._keys, args=[permit.token])
        except (redis.RedisError, OSError) as error:
            self._redis_failed(error)

    def open_remaining_s(self) -> float:
        """Seconds until the open circuit lets probes through; 0 when not open."""
        if (shared := self._use_redis()) is not None:
            try:
                state, open_until = shared.client.hmget(self._keys[0], ["state", "open_until"])
                if state != OPEN or open_until is None:
                    return 0.0
                return max(0.0, (float(open_until) - self._now_ms()) / 1000)
            except (redis.RedisError, OSError) as error:
                self._redis_failed(error)
        with self._local.lock:
            if self._local.state != OPEN:
                return 0.0
            return max(0.0, self._local.open_until - self._clock())

    # -- internals ----------------------------------------------------------------------------
    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _use_redis(self) -> _Shared | None:
        """The shared state, unless there is none or Redis failed within the last REDIS_RETRY_AFTER_S."""
        return self._shared if self._shared is not None and self._clock() >= self._redis_down_until else None

    def _redis_failed(self, error: Exception) -> None:
        if self._clock() >= self._redis_down_until:
            logger.warning("circuit breaker %s uses local state: Redis unreachable (%s)", self.name, error)
        self._redis_down_until = self._clock() + REDIS_RETRY_AFTER_S

    def _transitioned(self, transition: str, state: str, scope: str, outcome: str) -> None:
        if not transition:
            return
        logger.warning("circuit breaker %s %s (%s state, last call %s)", self.name, transition, scope, outcome,
                       extra={"breaker": self.name, "breaker_state": state, "breaker_scope": scope})
        if self._on_transition:
            self._on_transition(self.name, state, scope)

    def _local_acquire(self) -> Permit:
        s, now = self._local, self._clock()
        with s.lock:
            if s.state == CLOSED:
                return Permit(True, CLOSED, local=True)
            if s.state == OPEN:
                if now < s.open_until:
                    return Permit(False, OPEN, retry_after_s=s.open_until - now, local=True)
                s.state, s.successes, s.probes = HALF_OPEN, 0, {}
            lease_s = self._probe_lease_ms / 1000
            s.probes = {t: at for t, at in s.probes.items() if at > now - lease_s}
            if len(s.probes) < self._res.breaker_half_open_probes:
                token = uuid.uuid4().hex
                s.probes[token] = now
                return Permit(True, HALF_OPEN, probe=True, token=token, local=True)
            return Permit(False, HALF_OPEN, retry_after_s=1.0, local=True)

    def _local_record(self, permit: Permit, outcome: str) -> str:
        s, now, res = self._local, self._clock(), self._res
        transition = ""
        with s.lock:
            if permit.probe and permit.local:
                held = s.probes.pop(permit.token, None)
                if s.state == HALF_OPEN and held is not None:
                    if outcome != OK:
                        transition = self._local_open(now)
                    else:
                        s.successes += 1
                        if s.successes >= res.breaker_half_open_probes:
                            s.state, s.calls, s.probes = CLOSED, deque(), {}
                            transition = "closed"
            elif s.state == CLOSED:
                s.calls.append((now, outcome))
                while s.calls and s.calls[0][0] <= now - res.breaker_window_s:
                    s.calls.popleft()
                total = len(s.calls)
                failures = sum(1 for _, o in s.calls if o in (FAIL, SLOW_FAIL))
                slow = sum(1 for _, o in s.calls if o in (SLOW, SLOW_FAIL))
                if total >= res.breaker_min_calls and (failures / total >= res.breaker_failure_rate
                                                       or slow / total >= res.breaker_slow_call_rate):
                    transition = self._local_open(now)
            state = s.state
        self._transitioned(transition, state, "local", outcome)
        return state

    def _local_open(self, now: float) -> str:
        s = self._local
        s.state, s.open_until, s.successes, s.probes, s.calls = OPEN, now + self._res.breaker_open_s, 0, {}, deque()
        return "opened"
