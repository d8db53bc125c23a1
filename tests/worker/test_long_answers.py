"""Long streamed answers are normal: against a fake LLM that streams like a real model (half a second
to the first token, then 40 tokens/s), answers of 500 and 2,500 tokens (12 s and a minute) are each
answered with exactly one call and the circuit stays closed; a provider slower than the first-token
bound, or one that stalls mid-stream, fails its calls and opens the circuit."""
from __future__ import annotations

from cloudia.breaker import CLOSED, circuit_is_open
from cloudia.jobs import ANSWERED, QUEUED
from tests.worker.conftest import breaker_state, wait_until
from worker.decisions import Outcome

# A real model's pace (the fake's `model` profile, at 40 tokens/s), with answers of 500 tokens.
REAL_MODEL = dict(first_token_ms=500, tokens_per_s=40, answer_tokens_min=500, answer_tokens_max=500)
# The production bounds (cdk.json's defaults), with room for a 2,500-token answer.
PRODUCTION_BOUNDS = dict(llm_first_token_timeout_s=10.0, llm_stall_timeout_s=10.0, llm_max_tokens=4096,
                         breaker_min_calls=5)
# The queue's visibility is far shorter than the answers: only the heartbeat keeps them in hand.
SHORT_VISIBILITY_S = 2


def test_ordinary_and_very_long_answers_are_each_answered_with_one_call_and_the_circuit_stays_closed(
        harness, start_worker):
    # GIVEN a healthy model streaming at 40 tokens/s, a connected user, and five ordinary questions
    # beside one that asks for 2,500 tokens (about a minute of streaming)
    settings = harness.configure(**PRODUCTION_BOUNDS, worker_concurrency=8)
    harness.sqs.set_queue_attributes(QueueUrl=settings.jobs_queue_url,
                                     Attributes={"VisibilityTimeout": str(SHORT_VISIBILITY_S)})
    harness.fake_llm.set_profile(**REAL_MODEL)
    connection = harness.connect("ana")
    ordinary = [harness.send_job("ana", f"question {i}", conversation_id=f"c{i}") for i in range(5)]
    long_one = harness.send_job("ana", "write me a long essay [answer_tokens=2500]", conversation_id="long")

    # WHEN the worker answers them all at once
    running = start_worker(settings)
    for job in ordinary + [long_one]:
        wait_until(lambda: harness.jobs.get(job.job_id)["status"] == ANSWERED, timeout_s=120,
                   interval_s=0.5, what=f"{job.message!r} answered")
    wait_until(lambda: harness.queue_counts() == (0, 0), what="the deletes")
    running.stop()

    # THEN each was answered by exactly one call, whole, and the circuit never opened
    assert harness.fake_llm.stats()["requests"] == 6
    assert running.worker.outcomes == {"answered": 6}
    answers = {e["jobId"]: e["message"] for e in harness.recorder.events(connection) if e["event"] == "answer"}
    assert [len(answers[j.job_id].split()) for j in ordinary] == [500] * 5
    assert len(answers[long_one.job_id].split()) == 2500
    assert breaker_state(harness) == CLOSED and not circuit_is_open(harness.redis)
    # AND the user watched it stream: a token event for nearly every token, all of the first attempt
    tokens = [e for e in harness.recorder.events(connection) if e["event"] == "token" and e["jobId"] == long_one.job_id]
    assert len(tokens) > 100 and {e["attempt"] for e in tokens} == {1}


def _three_failed_calls(harness, **resilience) -> list[Outcome]:
    harness.configure(breaker_min_calls=3, **resilience)
    jobs = [harness.send_job("ana", f"try {i}", conversation_id=f"c{i}") for i in range(3)]
    processor = harness.processor()
    outcomes = [harness.run(processor.handle(harness.receive()[0])) for _ in jobs]
    assert [harness.jobs.get(j.job_id)["status"] for j in jobs] == [QUEUED] * 3
    return outcomes


def test_a_provider_slower_than_the_first_token_bound_fails_its_calls_and_opens_the_circuit(harness):
    # GIVEN a model whose first token takes 1.5 s, and a first-token bound of 1 s
    harness.fake_llm.set_profile(first_token_ms=1500, tokens_per_s=40, answer_tokens_min=20, answer_tokens_max=20)
    # WHEN three jobs are tried
    outcomes = _three_failed_calls(harness, llm_first_token_timeout_s=1.0)
    # THEN each call is cut and retried later, and the third opens the circuit
    assert outcomes[:2] == [Outcome.RETRY, Outcome.RETRY]
    assert circuit_is_open(harness.redis)


def test_a_provider_that_stalls_mid_stream_fails_its_calls_and_opens_the_circuit(harness):
    # GIVEN a model that starts well, then goes silent for 3 s after 5 tokens; a stall bound of 1 s
    harness.fake_llm.set_profile(first_token_ms=100, tokens_per_s=40, answer_tokens_min=40, answer_tokens_max=40)
    harness.fake_llm.set_faults(stall_after_tokens=5, stall_ms=3000)
    # WHEN three jobs are tried
    outcomes = _three_failed_calls(harness, llm_stall_timeout_s=1.0)
    # THEN each call is cut at the stall, and the circuit opens
    assert outcomes[:2] == [Outcome.RETRY, Outcome.RETRY]
    assert circuit_is_open(harness.redis)
