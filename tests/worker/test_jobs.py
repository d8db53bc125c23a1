"""A job's life in the worker: answered, streamed, stored, cached, pushed, deleted; a redelivery never
pays the LLM twice; a gone connection is not a failure; context comes from Redis or DynamoDB."""
from __future__ import annotations

import dataclasses
import os
import signal
import time
import json

import pytest

from cloudia.context_cache import ContextCache
from cloudia.history import ASSISTANT, USER
from cloudia.jobs import ANSWERED
from cloudia.schema import context_key
from tests.worker.conftest import wait_until


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_job_is_answered_streamed_stored_and_deleted(harness, start_worker, provider):
    # GIVEN a user with a live connection and a queued job
    harness.configure(provider=provider)
    connection = harness.connect("ana")
    job = harness.send_job("ana", "what is a circuit breaker")

    # WHEN the worker runs
    start_worker(harness.settings)

    # THEN the user receives tokens (of the first attempt), then the answer, which they add up to
    events = wait_until(lambda: [e for e in harness.recorder.events(connection) if e["event"] == "answer"]
                        and harness.recorder.events(connection), what="the answer event")
    answer = events[-1]["message"]
    assert answer.startswith("Echo: what is a circuit breaker")
    assert events[-1] == {"event": "answer", "jobId": job.job_id, "message": answer, "conversationId": "c1"}
    tokens = [e for e in events if e["event"] == "token"]
    assert "".join(e["token"] for e in tokens) == answer
    assert {e["attempt"] for e in tokens} == {1}
    # AND the answer is in the history, the job is answered, the context is cached, the message deleted
    entries = harness.history.latest("ana", "c1", 10)
    assert [(e.role, e.message) for e in entries] == [(USER, "what is a circuit breaker"), (ASSISTANT, answer)]
    assert harness.jobs.get(job.job_id)["status"] == ANSWERED
    cached = [json.loads(m) for m in harness.redis.lrange(context_key("ana", "c1"), 0, -1)]
    assert [m["role"] for m in cached] == [USER, ASSISTANT]
    assert harness.redis.ttl(context_key("ana", "c1")) > 0
    wait_until(lambda: harness.queue_counts() == (0, 0), what="the message to be deleted")
    assert harness.fake_llm.stats()["requests"] == 1


def test_redelivered_answered_job_does_not_call_the_llm_again(harness, start_worker):
    # GIVEN a job that was answered, but whose message is delivered again (at-least-once delivery)
    connection = harness.connect("ana")
    job = harness.send_job("ana", "once only")
    running = start_worker(harness.settings)
    wait_until(lambda: harness.jobs.get(job.job_id)["status"] == ANSWERED, what="the first answer")
    wait_until(lambda: harness.queue_counts() == (0, 0), what="the first delete")
    assert harness.fake_llm.stats()["requests"] == 1

    # WHEN the same message arrives again
    harness.sqs.send_message(QueueUrl=harness.settings.jobs_queue_url, MessageBody=job.to_json())

    # THEN it is deleted, the stored answer is pushed again, and the LLM saw no second request
    wait_until(lambda: harness.queue_counts() == (0, 0) and
               len([e for e in harness.recorder.events(connection) if e["event"] == "answer"]) == 2,
               what="the redelivery to be handled")
    running.stop()
    assert harness.fake_llm.stats()["requests"] == 1
    answers = [e for e in harness.recorder.events(connection) if e["event"] == "answer"]
    assert answers[0] == answers[1]
    assert running.worker.outcomes == {"answered": 1, "duplicate": 1}


def test_gone_connection_is_not_a_failure(harness, start_worker):
    # GIVEN the user's registered connection is gone at API Gateway (410)
    connection = harness.connect("ana")
    harness.recorder.gone.add(connection)
    job = harness.send_job("ana", "are you there")

    # WHEN the worker answers
    running = start_worker(harness.settings)

    # THEN the job still succeeds: answer stored for resume, message deleted, stale connection dropped
    wait_until(lambda: harness.jobs.get(job.job_id)["status"] == ANSWERED, what="the answer")
    wait_until(lambda: harness.queue_counts() == (0, 0), what="the delete")
    assert harness.history.latest("ana", "c1", 5)[-1].message.startswith("Echo: are you there")
    assert harness.redis.get(f"conn:{connection}") is None
    running.stop()
    assert running.worker.outcomes == {"answered": 1}


def test_context_comes_from_the_cache_and_else_from_history(harness, start_worker):
    # GIVEN a conversation with earlier turns in the history, and a cached context that differs
    history = harness.history
    history.append("ana", "c1", "old-1", USER, "first question", 1000)
    history.append("ana", "c1", "old-1", ASSISTANT, "first answer", 2000)
    cache = ContextCache(harness.redis, 600, 20)
    cache.put("bob", "c9", [{"role": USER, "content": "cached question", "jobId": "x"},
                            {"role": ASSISTANT, "content": "cached answer", "jobId": "x"}])
    processor = harness.processor()
    ana_job = harness.send_job("ana", "second question")
    bob_job = harness.send_job("bob", "next", conversation_id="c9")

    # WHEN the contexts are built
    ana_context = harness.run(processor._context(ana_job))
    bob_context = harness.run(processor._context(bob_job))

    # THEN ana's comes from DynamoDB (cache cold) and bob's from Redis, each ending with the new message once
    assert [m["content"] for m in ana_context] == ["first question", "first answer", "second question"]
    assert [m["content"] for m in bob_context] == ["cached question", "cached answer", "next"]


def test_worker_answers_with_redis_down(harness, start_worker, own_redis):
    # GIVEN the worker's Redis (context cache, connections, shared breaker state) is down
    settings = dataclasses.replace(harness.settings, redis_url=own_redis.url)
    own_redis.stop()
    job = harness.send_job("ana", "redis is gone")

    # WHEN the worker runs
    running = start_worker(settings)

    # THEN the job is still answered: context from DynamoDB, breaker on local state, answer stored
    wait_until(lambda: harness.jobs.get(job.job_id)["status"] == ANSWERED, timeout_s=15, what="the answer")
    wait_until(lambda: harness.queue_counts() == (0, 0), what="the delete")
    assert harness.history.latest("ana", "c1", 5)[-1].message.startswith("Echo: redis is gone")
    running.stop()
    assert running.worker.outcomes == {"answered": 1}


def test_duplicate_delivered_during_the_attempt_does_not_call_the_llm_twice(harness, start_worker):
    # GIVEN a slow provider and two copies of the same job in the queue (SQS delivers at least once)
    harness.configure(llm_first_token_timeout_s=1.0, worker_concurrency=4)
    harness.fake_llm.set_faults(latency_ms=700)
    connection = harness.connect("ana")
    job = harness.send_job("ana", "only once please")
    harness.sqs.send_message(QueueUrl=harness.settings.jobs_queue_url, MessageBody=job.to_json())

    # WHEN one worker takes both at once
    running = start_worker(harness.settings)

    # THEN the second copy waits for the first attempt's lease, then finds the job answered
    wait_until(lambda: harness.queue_counts() == (0, 0), timeout_s=20, what="both copies to be handled")
    running.stop()
    assert harness.fake_llm.stats()["requests"] == 1
    assert running.worker.outcomes == {"answered": 1, "busy_elsewhere": 1, "duplicate": 1}
    answers = [e for e in harness.recorder.events(connection) if e["event"] == "answer"]
    assert len(answers) == 2 and answers[0] == answers[1]


def test_a_hung_redis_costs_bounded_time_not_the_job(harness, start_worker, own_redis):
    # GIVEN the worker's Redis accepts connections but never answers (the process is frozen)
    settings = dataclasses.replace(harness.settings, redis_url=own_redis.url)
    os.kill(own_redis._proc.pid, signal.SIGSTOP)
    try:
        job = harness.send_job("ana", "redis hangs")
        started = time.monotonic()

        # WHEN the worker runs
        running = start_worker(settings)

        # THEN every Redis call gives up after its 500 ms bound and the job is answered anyway
        wait_until(lambda: harness.jobs.get(job.job_id)["status"] == ANSWERED, timeout_s=15, what="the answer")
        assert time.monotonic() - started < 10.0
        running.stop()
        assert running.worker.outcomes == {"answered": 1}
    finally:
        os.kill(own_redis._proc.pid, signal.SIGCONT)


def test_the_tokens_an_answer_used_are_charged_to_the_users_daily_budget(harness, start_worker):
    from cloudia.limits import UsageLimits, call_tokens
    from cloudia.llm.fake import count_tokens

    # GIVEN a queued job for which the sender reserved the most its call can cost
    limits = UsageLimits(harness.redis, 100, 1_000_000)
    message = "tell me about exponential backoff with jitter, in detail please"
    job = harness.send_job("ana", message)
    reserved = call_tokens([message], harness.settings.resilience.llm_max_tokens)
    limits.admit("ana", reserved, job_id=job.job_id)
    # WHEN the worker answers it
    start_worker(harness.settings)
    wait_until(lambda: harness.jobs.get(job.job_id)["status"] == ANSWERED, what="the job answered")
    # THEN the day's total is what the LLM reported using, in place of the reservation
    answer = harness.history.latest("ana", "c1", 5)[-1].message
    used = count_tokens(message) + count_tokens(answer)
    assert used < reserved
    wait_until(lambda: limits.charge_tokens("ana", 0) == used, what="the budget settled with the answer's tokens")


def test_an_unreachable_gateway_does_not_slow_the_llm_stream_into_a_timeout(harness, start_worker):
    from cloudia.breaker import circuit_is_open
    from tests.support.servers import free_port

    # GIVEN a user with a registered connection, but nothing listens where the worker pushes events
    # (each push fails only after botocore's connect retries), and an LLM timeout of 3 s
    settings = dataclasses.replace(harness.configure(llm_first_token_timeout_s=3.0),
                                   ws_management_endpoint=f"http://127.0.0.1:{free_port()}")
    harness.connect("ana")
    message = " ".join(f"word{i}" for i in range(30))  # a streamed answer of about 30 tokens
    job = harness.send_job("ana", message)
    # WHEN the worker answers it, streaming
    start_worker(settings)
    # THEN the answer is stored on the first LLM call: token pushes never held the stream up
    wait_until(lambda: harness.jobs.get(job.job_id)["status"] == ANSWERED, timeout_s=20, what="the answer")
    assert harness.fake_llm.stats()["requests"] == 1
    assert not circuit_is_open(harness.redis)
    assert [e.role for e in harness.history.latest("ana", "c1", 5)] == [USER, ASSISTANT]


def test_a_copy_from_before_its_users_retry_is_dropped_not_called(harness):
    # GIVEN a job its user retried (the row counts one retry) and a copy of its first attempt's
    # message, as a DLQ redrive from the console would send it
    import boto3

    from cloudia.jobs import RETRIES_ATTRIBUTE
    from worker.decisions import Outcome

    harness.configure()
    processor = harness.processor()
    job = harness.send_job("ana", "retried since")
    boto3.client("dynamodb").update_item(
        TableName=harness.settings.jobs_table, Key={"jobId": {"S": job.job_id}},
        UpdateExpression="SET #r = :one", ExpressionAttributeNames={"#r": RETRIES_ATTRIBUTE},
        ExpressionAttributeValues={":one": {"N": "1"}})
    # WHEN the worker receives the stale copy
    outcome = harness.run(processor.handle(harness.receive()[0]))
    # THEN it is dropped: the retry's own message carries the job, and the LLM is not called
    assert outcome == Outcome.DUPLICATE
    assert harness.fake_llm.stats()["requests"] == 0
    assert harness.queue_counts() == (0, 0)
