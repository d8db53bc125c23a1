"""The circuit breaker on its own, against the real redis-server: failure-rate and slow-call-rate
windows, fail fast while open, half-open probes, state shared between workers, local fallback."""
from __future__ import annotations

import dataclasses
import time

import redis as redis_lib

from cloudia.breaker import CLOSED, FAIL, HALF_OPEN, OK, OPEN, SLOW, SLOW_FAIL, CircuitBreaker, circuit_is_open
from cloudia.llm.timing import CallTiming
from cloudia.settings import Resilience

RES = Resilience(breaker_window_s=30.0, breaker_min_calls=4, breaker_failure_rate=0.5,
                 breaker_slow_call_rate=0.5, breaker_slow_first_token_s=5.0, breaker_slow_tokens_per_s=20.0,
                 breaker_open_s=15.0, breaker_half_open_probes=2)
# A short, quick answer: first token at 0.1 s, 5 tokens by 0.2 s.
QUICK = CallTiming(first_token_s=0.1, duration_s=0.2, tokens=5)


class Clock:
    """Time the test moves by hand (Redis sees the breaker's clock through the scripts' arguments)."""

    def __init__(self):
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def make(url: str, clock: Clock, transitions: list | None = None, name: str = "llm") -> CircuitBreaker:
    """A breaker with its own Redis connection, as a separate worker process would have."""
    client = redis_lib.Redis.from_url(url, decode_responses=True, socket_timeout=0.5, socket_connect_timeout=0.5)
    on_transition = (lambda n, state, scope: transitions.append((state, scope))) if transitions is not None else None
    return CircuitBreaker(client, RES, name, on_transition, clock=clock)


def call(breaker: CircuitBreaker, ok: bool, timing: CallTiming = QUICK) -> str:
    permit = breaker.acquire()
    assert permit.allowed
    return breaker.record(permit, ok, timing)


def test_opens_on_failure_rate_once_min_calls_seen(settings):
    clock, transitions = Clock(), []
    breaker = make(settings.redis_url, clock, transitions)
    # GIVEN three failures: below the minimum number of calls, it stays closed
    for _ in range(3):
        assert call(breaker, ok=False) == CLOSED
    # WHEN a fourth call makes the window count (3 failures of 4 = 75% >= 50%)
    state = call(breaker, ok=True)
    # THEN it opens, once, and says so
    assert state == OPEN
    assert transitions == [(OPEN, "shared")]


def test_failures_outside_the_window_do_not_count(settings):
    clock = Clock()
    breaker = make(settings.redis_url, clock)
    for _ in range(3):
        call(breaker, ok=False)
    # WHEN the window slides past them
    clock.now += RES.breaker_window_s + 1
    # THEN four new calls with one failure (25%) keep it closed
    for ok in (True, True, False, True):
        assert call(breaker, ok=ok) == CLOSED


def test_opens_on_slow_first_tokens(settings):
    clock = Clock()
    breaker = make(settings.redis_url, clock)
    # GIVEN successful calls whose first token came later than breaker_slow_first_token_s
    late = CallTiming(first_token_s=RES.breaker_slow_first_token_s + 1, duration_s=7.0, tokens=30)
    states = [call(breaker, ok=True, timing=late) for _ in range(4)]
    # THEN the slow-call rate opens it like failures would
    assert states == [CLOSED, CLOSED, CLOSED, OPEN]


def test_opens_on_a_token_rate_below_the_floor(settings):
    clock = Clock()
    breaker = make(settings.redis_url, clock)
    # GIVEN answers that start at once but trickle: 100 tokens in 10 s (10 tokens/s < 20)
    trickle = CallTiming(first_token_s=0.5, duration_s=10.5, tokens=100)
    states = [call(breaker, ok=True, timing=trickle) for _ in range(4)]
    assert states == [CLOSED, CLOSED, CLOSED, OPEN]


def test_long_healthy_answers_never_open_it(settings):
    clock = Clock()
    breaker = make(settings.redis_url, clock)
    # GIVEN a healthy model writing 4,000-token answers: 0.5 s to the first token, then 45 tokens/s
    # (about 90 s each, far longer than any first-token bound)
    long_answer = CallTiming(first_token_s=0.5, duration_s=0.5 + 4000 / 45, tokens=4000)
    # THEN however many there are, the circuit stays closed
    assert {call(breaker, ok=True, timing=long_answer) for _ in range(20)} == {CLOSED}


def test_what_counts_as_slow():
    breaker = CircuitBreaker(None, RES)
    # a short answer's rate is not judged (a handful of tokens says nothing about the rate)
    assert breaker.outcome(True, CallTiming(0.3, 1.3, 5)) == OK
    assert breaker.outcome(True, CallTiming(0.3, 30.3, 1200)) == OK  # 40 tokens/s for 30 s
    assert breaker.outcome(True, CallTiming(6.0, 7.0, 30)) == SLOW  # a late first token
    assert breaker.outcome(True, None) == OK  # nothing measured: not judged slow
    # a failure that came fast is a failure; one that came after a long silence is slow too
    assert breaker.outcome(False, CallTiming(None, 0.2, 0)) == FAIL
    assert breaker.outcome(False, CallTiming(None, RES.breaker_slow_first_token_s, 0)) == SLOW_FAIL
    assert breaker.outcome(False, CallTiming(0.4, 12.0, 40)) == SLOW_FAIL  # stalled after 40 tokens


def test_a_slow_failure_counts_in_both_rates(settings):
    clock = Clock()
    # GIVEN a breaker that opens on slow calls only (failure rate 100 % can't be reached by 3 of 4)
    res = dataclasses.replace(RES, breaker_failure_rate=0.9)
    client = redis_lib.Redis.from_url(settings.redis_url, decode_responses=True)
    breaker = CircuitBreaker(client, res, "llm", clock=clock)
    hung = CallTiming(first_token_s=None, duration_s=RES.breaker_slow_first_token_s + 1, tokens=0)
    # WHEN two calls hang past the first-token bound and fail, among four
    states = [breaker.record(breaker.acquire(), ok, timing)
              for ok, timing in ((True, QUICK), (False, hung), (True, QUICK), (False, hung))]
    # THEN the slow rate (2 of 4 = 50 %) opens it, though the failure rate alone (50 % < 90 %) would not
    assert states == [CLOSED, CLOSED, CLOSED, OPEN]


def test_open_circuit_fails_fast_for_every_worker_sharing_redis(settings):
    clock = Clock()
    worker_a, worker_b = make(settings.redis_url, clock), make(settings.redis_url, clock)
    # GIVEN worker A discovers the provider is failing
    for _ in range(4):
        call(worker_a, ok=False)
    # WHEN worker B (its own breaker instance and connection) asks to call
    permit = worker_b.acquire()
    # THEN B fails fast without calling, knowing how long to wait; the cheap read agrees
    assert not permit.allowed and permit.state == OPEN
    assert 14.9 <= permit.retry_after_s <= 15.0
    client = redis_lib.Redis.from_url(settings.redis_url, decode_responses=True)
    assert circuit_is_open(client) is True
    assert circuit_is_open(client, name="other-provider") is False


def test_half_open_probes_are_limited_and_close_it(settings):
    clock, transitions = Clock(), []
    worker_a, worker_b = make(settings.redis_url, clock, transitions), make(settings.redis_url, clock, transitions)
    for _ in range(4):
        call(worker_a, ok=False)
    # WHEN the open wait is over
    clock.now += RES.breaker_open_s + 0.1
    probe_a, probe_b, third = worker_a.acquire(), worker_b.acquire(), worker_a.acquire()
    client = redis_lib.Redis.from_url(settings.redis_url, decode_responses=True)
    assert circuit_is_open(client) is False  # half-open: senders are not told "open" any more
    # THEN exactly breaker_half_open_probes calls are let through, fleet-wide
    assert (probe_a.allowed, probe_a.probe, probe_b.allowed, probe_b.probe) == (True, True, True, True)
    assert not third.allowed and third.state == HALF_OPEN
    # AND as many successful probes close it
    assert worker_a.record(probe_a, True, QUICK) == HALF_OPEN
    assert worker_b.record(probe_b, True, QUICK) == CLOSED
    assert worker_a.acquire().state == CLOSED
    assert transitions == [(OPEN, "shared"), (CLOSED, "shared")]


def test_a_failed_probe_opens_it_again(settings):
    clock, transitions = Clock(), []
    breaker = make(settings.redis_url, clock, transitions)
    for _ in range(4):
        call(breaker, ok=False)
    clock.now += RES.breaker_open_s + 0.1
    probe = breaker.acquire()
    assert probe.probe
    # WHEN the probe fails
    assert breaker.record(probe, False, QUICK) == OPEN
    # THEN the circuit waits a full open period again
    permit = breaker.acquire()
    assert not permit.allowed and permit.retry_after_s > RES.breaker_open_s - 0.5
    assert transitions == [(OPEN, "shared"), (OPEN, "shared")]


def test_an_unused_probe_slot_is_handed_back(settings):
    clock = Clock()
    breaker = make(settings.redis_url, clock)
    for _ in range(4):
        call(breaker, ok=False)
    clock.now += RES.breaker_open_s + 0.1
    first, second = breaker.acquire(), breaker.acquire()
    assert first.allowed and second.allowed
    assert not breaker.acquire().allowed
    # WHEN a worker took a slot but found no job to probe with
    breaker.release(first)
    # THEN the slot is free for another
    assert breaker.acquire().allowed


def test_falls_back_to_local_state_when_redis_is_unreachable(own_redis):
    clock, transitions = Clock(), []
    breaker = make(own_redis.url, clock, transitions)
    client = redis_lib.Redis.from_url(own_redis.url, decode_responses=True, socket_timeout=0.5,
                                      socket_connect_timeout=0.5)
    # GIVEN Redis is down
    own_redis.stop()
    # WHEN the provider keeps failing
    states = [call(breaker, ok=False) for _ in range(4)]
    # THEN the breaker still opens, on its own state, and still fails fast
    assert states == [CLOSED, CLOSED, CLOSED, OPEN]
    assert transitions == [(OPEN, "local")]
    assert breaker.acquire().allowed is False
    # AND the cheap read answers "not open" instead of raising
    assert circuit_is_open(client) is False
