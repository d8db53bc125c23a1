"""The circuit breaker in the worker: it opens on real provider failures, fails fast while open
(nothing reaches the provider, nothing is taken from the queue), tells the user with the circuit event,
keeps the jobs, lets half-open probes close it, and uses the fallback provider while open."""
from __future__ import annotations

import dataclasses
import json
import time

from cloudia import protocol
from cloudia.breaker import CLOSED, CircuitBreaker, circuit_is_open
from cloudia.jobs import ANSWERED, QUEUED
from tests.support.servers import free_port
from tests.worker.conftest import breaker_state, wait_until
from worker.decisions import Outcome


def _emf_metrics(stdout: str) -> list[dict]:
    documents = []
    for line in stdout.splitlines():
        if line.startswith('{"_aws"'):
            documents.append(json.loads(line))
    return documents


def test_circuit_opens_fails_fast_keeps_jobs_and_probes_close_it(harness, start_worker, capsys):
    # GIVEN a provider that is down, and a breaker that opens after 2 calls at >= 50 % failures
    settings = harness.configure(breaker_min_calls=2, breaker_failure_rate=0.5, breaker_open_s=3.0,
                                 breaker_half_open_probes=2, backoff_base_s=0.2)
    harness.fake_llm.set_faults(down=True)
    connection = harness.connect("ana")
    first, second = harness.send_job("ana", "one"), harness.send_job("ana", "two")

    # WHEN the worker meets the failures
    running = start_worker(settings)
    wait_until(lambda: circuit_is_open(harness.redis), what="the circuit to open")

    # THEN the user hears the circuit event for the job that found the circuit open
    wait_until(lambda: [e for e in harness.recorder.events(connection) if e.get("reason") == "circuit_open"],
               what="the circuit-open event")
    event = next(e for e in harness.recorder.events(connection) if e.get("reason") == "circuit_open")
    assert event == {"event": "error", "message": "Circuit Breaker ativado: API LLM indisponível.",
                     "jobId": event["jobId"], "reason": "circuit_open"}
    assert event["jobId"] in (first.job_id, second.job_id)

    # AND while open, nothing reaches the provider and a new job waits in the queue, not in the DLQ
    time.sleep(0.3)  # let a call that was already on the wire finish
    calls_when_open = harness.fake_llm.stats()["requests"]
    third = harness.send_job("ana", "three")
    time.sleep(1.0)
    assert circuit_is_open(harness.redis)
    assert harness.fake_llm.stats()["requests"] == calls_when_open
    # (the third job either waits visible, or a long poll begun before the opening took it and put it
    # back with the circuit-open delay: either way all three are kept in the queue)
    assert harness.kept_in_queue() == 3
    assert harness.dlq_messages() == []
    # AND a second worker, sharing Redis, sees it open too
    other_worker = CircuitBreaker(harness.redis, settings.resilience)
    assert not other_worker.acquire().allowed

    # WHEN the provider recovers
    harness.fake_llm.reset_faults()

    # THEN after the open wait, half-open probes close it and every kept job is answered
    for job in (first, second, third):
        wait_until(lambda: harness.jobs.get(job.job_id)["status"] == ANSWERED, timeout_s=20,
                   what=f"{job.message} to be answered")
    assert breaker_state(harness) == CLOSED
    assert harness.dlq_messages() == []
    running.stop()
    # AND each opening was reported as CircuitOpened with the single dimension the alarm uses
    opened = [d for d in _emf_metrics(capsys.readouterr().out) if "CircuitOpened" in d]
    assert opened, "no CircuitOpened metric"
    assert all(d["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service"]] and d["service"] == "worker"
               for d in opened)


def test_job_received_while_open_is_delayed_and_the_user_gets_the_seed_event(harness):
    # GIVEN a job already received by this worker
    settings = harness.configure(breaker_min_calls=2, breaker_open_s=30.0)
    connection = harness.connect("ana")
    job = harness.send_job("ana", "am I lost?")
    message = harness.receive()[0]
    # AND another worker has just opened the circuit
    other_worker = CircuitBreaker(harness.redis, settings.resilience)
    for _ in range(2):
        other_worker.record(other_worker.acquire(), False, None)

    # WHEN this worker handles the job
    outcome = harness.run(harness.processor().handle(message))

    # THEN it fails fast: no provider call, the circuit event to the user, the job kept (hidden) in the queue
    assert outcome == Outcome.DELAYED_CIRCUIT_OPEN
    assert harness.fake_llm.stats()["requests"] == 0
    assert harness.recorder.events(connection) == [protocol.circuit_open(job.job_id)]
    assert harness.queue_counts() == (0, 0) and harness.kept_in_queue() == 1  # delayed, as a fresh message
    assert harness.dlq_messages() == []
    assert harness.jobs.get(job.job_id)["status"] == QUEUED


def test_fallback_provider_answers_while_the_primary_is_open(harness, start_worker):
    # GIVEN a primary (OpenAI wire format) where nothing listens, and a fallback (Anthropic) that works
    settings = dataclasses.replace(
        harness.configure(breaker_min_calls=2, breaker_open_s=30.0, backoff_base_s=0.2),
        llm_base_url=f"http://127.0.0.1:{free_port()}/v1",
        llm_fallback_provider="anthropic", llm_fallback_base_url=harness.fake_llm.anthropic_base_url,
        llm_fallback_model="fake-fallback", llm_fallback_api_key="test-key")
    jobs = [harness.send_job("ana", f"question {i}") for i in range(3)]

    # WHEN the worker runs
    start_worker(settings)

    # THEN the primary's circuit opens and every job is answered by the fallback
    for job in jobs:
        wait_until(lambda: harness.jobs.get(job.job_id)["status"] == ANSWERED, timeout_s=20,
                   what=f"{job.message} to be answered")
    assert circuit_is_open(harness.redis)
    assert harness.fake_llm.stats()["messages"] == 3
    assert harness.fake_llm.stats()["chat_completions"] == 0


def test_while_open_the_worker_takes_no_job_so_none_spends_its_receives(harness, start_worker):
    # GIVEN the shared circuit is open (another worker found the provider failing)
    # (open 5 s: on a loaded machine the jobs and the worker's start take seconds)
    settings = harness.configure(breaker_min_calls=2, breaker_open_s=5.0, breaker_half_open_probes=1)
    other_worker = CircuitBreaker(harness.redis, settings.resilience)
    for _ in range(2):
        other_worker.record(other_worker.acquire(), False, None)
    opened_at = time.monotonic()
    jobs = [harness.send_job("ana", f"kept {i}") for i in range(3)]

    # WHEN this worker runs during the open period
    start_worker(settings)
    time.sleep(1.0)

    # THEN it received nothing: every job still waits visible, its receive count untouched
    counts = harness.queue_counts()
    assert time.monotonic() - opened_at < 5.0, "the open period was over before the queue was read"
    assert counts == (3, 0)
    assert harness.fake_llm.stats()["requests"] == 0
    # AND once the wait is over, a single probe closes the circuit and every job is answered once
    for job in jobs:
        wait_until(lambda: harness.jobs.get(job.job_id)["status"] == ANSWERED, timeout_s=15,
                   what=f"{job.message} to be answered")
    assert harness.fake_llm.stats()["requests"] == 3
    assert breaker_state(harness) == CLOSED


def test_a_job_kept_through_an_outage_longer_than_its_receives_is_answered_not_dead_lettered(
        harness, start_worker):
    # GIVEN a provider down for longer than 5 probe cycles (open 0.5 s, one probe at a time)
    settings = harness.configure(breaker_min_calls=1, breaker_failure_rate=0.5, breaker_open_s=0.5,
                                 breaker_half_open_probes=1, backoff_base_s=0.2)
    harness.fake_llm.set_faults(down=True)
    job = harness.send_job("ana", "will you answer me?")
    start_worker(settings)
    # WHEN the job has been tried as a probe more times than it has receives
    wait_until(lambda: circuit_is_open(harness.redis),
               what="the circuit to open")
    time.sleep(1.0 + settings.resilience.max_receives * (settings.resilience.breaker_open_s + 1.0))
    assert harness.jobs.get(job.job_id)["status"] == QUEUED
    assert harness.dlq_messages() == []
    # AND the provider comes back
    harness.fake_llm.reset_faults()
    # THEN the kept job is answered, once
    wait_until(lambda: harness.jobs.get(job.job_id)["status"] == ANSWERED, timeout_s=20, what="the answer")
    assert harness.dlq_messages() == []


def test_half_open_probes_close_the_circuit_at_their_first_token_not_at_the_end_of_a_long_answer(
        harness, start_worker):
    # GIVEN an open circuit, and a provider back to health that writes 10 s answers (first token
    # 100 ms, then 40 tokens/s, 400 tokens)
    settings = harness.configure(breaker_min_calls=2, breaker_failure_rate=0.5, breaker_open_s=1.0,
                                 breaker_half_open_probes=2, llm_stall_timeout_s=5.0)
    breaker = CircuitBreaker(harness.redis, settings.resilience)
    for _ in range(2):
        breaker.record(breaker.acquire(), False, None)
    assert circuit_is_open(harness.redis)
    harness.fake_llm.set_profile(first_token_ms=100, tokens_per_s=40, answer_tokens_min=400, answer_tokens_max=400)
    for i in range(3):
        harness.send_job("ana", f"long {i}", conversation_id=f"c{i}")

    # WHEN the open wait is over and the worker's probes start their answers
    started = time.monotonic()
    start_worker(settings)
    wait_until(lambda: breaker_state(harness) == CLOSED, timeout_s=8, what="the circuit to close")

    # THEN it closed within seconds, long before any of those answers could end
    assert time.monotonic() - started < 6.0
    assert harness.fake_llm.stats()["answered"] == 0
