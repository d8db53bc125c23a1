"""Graceful shutdown of the worker process (`python -m worker`, as the container runs it): SIGTERM
finishes in-flight jobs, hands back what cannot finish within the grace, a second signal exits at
once; no job is lost on any path."""
from __future__ import annotations

import signal
import time

from cloudia.jobs import ANSWERED, CALLING, QUEUED
from tests.worker.conftest import wait_llm_call_started, wait_until


def test_sigterm_mid_answer_lets_it_finish_before_exiting(harness, worker_process):
    # GIVEN a worker streaming a 4 s answer to a connected user, longer than the queue's visibility
    # timeout and the job's liveness window (only its heartbeat keeps it)
    settings = harness.configure(worker_shutdown_grace_s=10.0)
    harness.sqs.set_queue_attributes(QueueUrl=settings.jobs_queue_url, Attributes={"VisibilityTimeout": "2"})
    harness.fake_llm.set_profile(first_token_ms=300, tokens_per_s=40, answer_tokens_min=150, answer_tokens_max=150)
    connection = harness.connect("ana")
    job = harness.send_job("ana", "finish me")
    process = worker_process(settings)
    wait_until(lambda: any(e["event"] == "token" for e in harness.recorder.events(connection)), timeout_s=20,
               what="the answer to start streaming")

    # WHEN ECS stops the task
    process.send_signal(signal.SIGTERM)

    # THEN the worker finishes the answer, then exits cleanly within the grace period
    assert process.wait(timeout=15) == 0
    assert harness.jobs.get(job.job_id)["status"] == ANSWERED
    assert harness.queue_counts() == (0, 0)
    assert harness.fake_llm.stats()["requests"] == 1
    answers = [e["message"] for e in harness.recorder.events(connection) if e["event"] == "answer"]
    assert len(answers) == 1 and len(answers[0].split()) == 150


def test_job_beyond_the_grace_period_is_handed_back_to_the_queue(harness, worker_process):
    # GIVEN a job whose LLM call outlasts the 1 s grace
    settings = harness.configure(worker_shutdown_grace_s=1.0, llm_first_token_timeout_s=8.0)
    harness.fake_llm.set_faults(latency_ms=6000)
    job = harness.send_job("ana", "too slow")
    process = worker_process(settings)
    wait_llm_call_started(harness)

    # WHEN the worker is stopped
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)

    # THEN it exits within the grace (plus the hand-back), and the job is at once visible again
    assert process.wait(timeout=10) == 0
    print("exit after", time.monotonic() - started, harness.queue_counts())
    assert time.monotonic() - started < 5.0
    messages = harness.receive()
    assert [m["Body"] for m in messages] == [job.to_json()]
    assert harness.jobs.get(job.job_id)["status"] == QUEUED


def test_second_signal_exits_at_once_and_the_job_stays_in_the_queue(harness, worker_process):
    # GIVEN a job in flight and a long grace
    settings = harness.configure(worker_shutdown_grace_s=30.0, llm_first_token_timeout_s=8.0)
    harness.fake_llm.set_faults(latency_ms=6000)
    job = harness.send_job("ana", "impatient operator")
    process = worker_process(settings)
    wait_llm_call_started(harness)

    # WHEN two signals arrive
    process.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)

    # THEN it exits at once, and the undeleted message reappears after its visibility timeout; the
    # job reads `calling`, as after a crash (see test_cut_calls.py for what its redelivery does)
    assert process.wait(timeout=5) == 128 + signal.SIGTERM
    assert time.monotonic() - started < 3.0
    assert harness.queue_counts() == (0, 1)
    assert harness.jobs.get(job.job_id)["status"] == CALLING
