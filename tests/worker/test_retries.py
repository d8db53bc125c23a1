"""Retries through the message's visibility: the backoff schedule, Retry-After, DLQ after exactly 5
receives, permanent failures to the DLQ at once; the user is told every time a job fails for good."""
from __future__ import annotations

import random
import time

from cloudia.backoff import backoff_delay_s, visibility_timeout_s
from cloudia.history import ERROR
from cloudia.jobs import FAILED
from cloudia.settings import Resilience
from tests.worker.conftest import wait_until
from worker.decisions import Outcome


def test_backoff_doubles_from_the_base_with_bounded_jitter():
    # GIVEN a small base, as the fast tests use it
    res = Resilience(backoff_base_s=0.5, backoff_jitter_ratio=0.2, backoff_max_s=6.0)
    rng = random.Random(7)
    for receive_count, nominal in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 6.0), (9, 6.0)]:
        # THEN each delay is base * 2^(n-1), capped, within +-20 %
        for _ in range(50):
            assert nominal * 0.8 <= backoff_delay_s(receive_count, res, rng) <= nominal * 1.2
    # AND jitter really spreads the delays (jobs failed together do not come back together)
    assert len({round(backoff_delay_s(3, res, rng), 3) for _ in range(20)}) > 10


def test_visibility_honours_retry_after_and_the_default_schedule():
    res = Resilience()
    rng = random.Random(1)
    assert all(visibility_timeout_s(1, res, rng=rng) == 2 for _ in range(20))  # 2 +- 0.4 s rounds to 2
    assert all(3 <= visibility_timeout_s(2, res, rng=rng) <= 5 for _ in range(20))
    assert all(6 <= visibility_timeout_s(3, res, rng=rng) <= 10 for _ in range(20))
    assert visibility_timeout_s(1, res, retry_after_s=7.2) == 8  # never sooner than the provider asked


def _wait_for_reappearance(harness, timeout_s: float = 15.0) -> tuple[dict, float]:
    started = time.monotonic()
    messages = wait_until(lambda: harness.receive(), timeout_s=timeout_s, interval_s=0.05, what="the message")
    return messages[0], time.monotonic() - started


def test_default_backoff_schedule_is_observed_through_the_message_visibility(harness):
    # GIVEN the default 2 s base with 20 % jitter, and a provider that answers 503
    settings = harness.configure(backoff_base_s=2.0, backoff_jitter_ratio=0.2)
    harness.fake_llm.set_faults(error_rate=1.0, error_status=503)
    processor = harness.processor()
    harness.send_job("ana", "retry me")
    message = harness.receive()[0]
    observed = []
    for receive_count, nominal_s in [(1, 2.0), (2, 4.0)]:
        assert message["Attributes"]["ApproximateReceiveCount"] == str(receive_count)
        # WHEN the attempt fails
        assert harness.run(processor.handle(message)) == Outcome.RETRY
        # THEN the message comes back after base * 2^(n-1) seconds, +- jitter (and SQS's granularity)
        message, waited_s = _wait_for_reappearance(harness)
        observed.append(waited_s)
        jitter_s = nominal_s * settings.resilience.backoff_jitter_ratio
        assert nominal_s - jitter_s - 0.6 <= waited_s <= nominal_s + jitter_s + 1.2, observed
    assert harness.fake_llm.stats()["requests"] == 2


def test_429_retry_after_is_honoured(harness):
    # GIVEN a provider that throttles with Retry-After: 3, and a 0.2 s backoff base
    harness.configure(backoff_base_s=0.2)
    harness.fake_llm.set_faults(error_rate=1.0, error_status=429, retry_after_s=3)
    processor = harness.processor()
    harness.send_job("ana", "slow down")
    message = harness.receive()[0]
    # WHEN the attempt is throttled
    assert harness.run(processor.handle(message)) == Outcome.RETRY
    # THEN the message stays hidden for the provider's 3 s, not the 0.2 s backoff
    message, waited_s = _wait_for_reappearance(harness)
    assert 2.4 <= waited_s <= 4.5


def test_job_goes_to_dlq_after_exactly_5_receives_and_the_user_is_told(harness, start_worker):
    # GIVEN a provider that always fails with 503, and a user with a live connection
    harness.configure(backoff_base_s=0.2)
    harness.fake_llm.set_faults(error_rate=1.0, error_status=503)
    connection = harness.connect("ana")
    job = harness.send_job("ana", "doomed")

    # WHEN the worker retries it
    running = start_worker(harness.settings)
    dead = wait_until(harness.dlq_messages, timeout_s=30, what="the DLQ copy")
    running.stop()

    # THEN it took exactly 5 attempts, and exactly one copy is in the DLQ with the reason
    assert harness.fake_llm.stats()["requests"] == 5
    assert len(dead) == 1 and harness.dlq_messages() == []
    assert dead[0]["Body"] == job.to_json()
    assert dead[0]["MessageAttributes"]["FailureClass"]["StringValue"] == "exhausted"
    assert dead[0]["MessageAttributes"]["FailureReason"]["StringValue"].startswith("exhausted_status_503")
    assert harness.queue_counts() == (0, 0)
    # AND the user heard it, the history says it, the job is failed
    errors = [e for e in harness.recorder.events(connection) if e["event"] == "error"]
    assert len(errors) == 1 and errors[0]["jobId"] == job.job_id
    assert harness.history.latest("ana", "c1", 5)[-1].role == ERROR
    assert harness.jobs.get(job.job_id)["status"] == FAILED
    assert running.worker.outcomes == {"retry": 4, "dead_lettered": 1}


def test_permanent_failure_goes_to_the_dlq_at_once(harness):
    # GIVEN a provider that refuses the request (400: retrying cannot fix it)
    harness.fake_llm.set_faults(error_rate=1.0, error_status=400)
    connection = harness.connect("ana")
    job = harness.send_job("ana", "bad request")
    processor = harness.processor()
    # WHEN the first attempt fails
    assert harness.run(processor.handle(harness.receive()[0])) == Outcome.DEAD_LETTERED
    # THEN one LLM call, the message is in the DLQ with its reason, and the user is told
    assert harness.fake_llm.stats()["requests"] == 1
    dead = harness.dlq_messages()
    assert len(dead) == 1
    assert dead[0]["MessageAttributes"]["FailureClass"]["StringValue"] == "permanent"
    assert harness.queue_counts() == (0, 0)
    assert [e["reason"] for e in harness.recorder.events(connection)] == ["status_400"]
    assert harness.jobs.get(job.job_id)["status"] == FAILED


def test_provider_down_is_a_transient_failure(harness):
    # GIVEN the provider resets every connection
    harness.configure(backoff_base_s=2.0)
    harness.fake_llm.set_faults(down=True)
    harness.send_job("ana", "anyone?")
    processor = harness.processor()
    # WHEN an attempt fails THEN the job is retried later, not dead-lettered
    assert harness.run(processor.handle(harness.receive()[0])) == Outcome.RETRY
    assert harness.dlq_messages() == []
    assert harness.queue_counts() == (0, 1)  # hidden for its backoff, still in the queue
