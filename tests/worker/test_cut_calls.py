"""A worker that dies during the LLM call (SIGKILL, OOM, lost host) leaves its job `calling`, and its
heartbeat stops. The redelivery finds the stale mark and calls again, once (the cut stream stopped the
provider's generation); the user sees one clean answer, its tokens restarting with the new attempt. A
second crash on the same job sends it to the DLQ with its user told. A live call, however long, is
never taken for a dead one. A call that fails while the worker lives is retried."""
from __future__ import annotations

import boto3

from cloudia.history import ERROR
from cloudia.jobs import (ANSWERED, ATTEMPTS_ATTRIBUTE, CALL_TOKEN_ATTRIBUTE, CALLING, FAILED, QUEUED,
                         RECALLS_ATTRIBUTE, JobStore, now_ms)
from tests.support.lost_replies import RepliesLostOnce
from tests.worker.conftest import wait_until
from worker.decisions import Outcome

# The killed worker's message comes back after this (its heartbeat extended it to about as much).
SHORT_VISIBILITY_S = 2
# A streamed answer of about 4 s: long enough to be cut in the middle.
LONG_ANSWER = dict(first_token_ms=300, tokens_per_s=40, answer_tokens_min=160, answer_tokens_max=160)


def client_view(events: list[dict], job_id: str) -> list[str]:
    """What a client following the protocol shows for a job after each event: tokens append, a higher
    attempt starts the text again, the answer replaces it."""
    shown, attempt, text = [], 0, ""
    for event in (e for e in events if e.get("jobId") == job_id):
        if event["event"] == "token" and event["attempt"] >= attempt:
            text = text + event["token"] if event["attempt"] == attempt else event["token"]
            attempt = event["attempt"]
        elif event["event"] == "answer":
            text = event["message"]
        shown.append(text)
    return shown


def _kill_mid_answer(harness, worker_process, connection: str, job) -> None:
    """Start a worker process, let it stream part of the answer to `connection`, then SIGKILL it."""
    process = worker_process(harness.settings)
    streamed = len([e for e in harness.recorder.events(connection) if e["event"] == "token"])
    wait_until(lambda: len([e for e in harness.recorder.events(connection) if e["event"] == "token"]) >= streamed + 5,
               timeout_s=30, what="part of the answer streamed")
    process.kill()
    process.wait(10)
    assert harness.jobs.get(job.job_id)["status"] == CALLING


def _setup(harness, **resilience):
    settings = harness.configure(**resilience)
    harness.sqs.set_queue_attributes(QueueUrl=settings.jobs_queue_url,
                                     Attributes={"VisibilityTimeout": str(SHORT_VISIBILITY_S)})
    harness.fake_llm.set_profile(**LONG_ANSWER)
    connection = harness.connect("ana")
    return connection, harness.send_job("ana", "cut short")


def test_a_worker_killed_mid_answer_is_recalled_once_and_the_user_sees_one_clean_answer(
        harness, worker_process, start_worker):
    # GIVEN a worker SIGKILLed halfway through streaming an answer
    connection, job = _setup(harness)
    _kill_mid_answer(harness, worker_process, connection, job)

    # WHEN another worker takes the redelivered message
    running = start_worker(harness.settings)
    wait_until(lambda: harness.jobs.get(job.job_id)["status"] == ANSWERED, timeout_s=30, what="the answer")
    wait_until(lambda: harness.queue_counts() == (0, 0), what="the delete")
    running.stop()

    # THEN it was called again once, and answered
    assert harness.fake_llm.stats()["requests"] == 2
    record = harness.jobs.get(job.job_id)
    assert (int(record[ATTEMPTS_ATTRIBUTE]), int(record[RECALLS_ATTRIBUTE])) == (2, 1)
    assert running.worker.outcomes == {"answered": 1}
    assert harness.dlq_messages() == []
    # AND the user saw the first attempt's partial text replaced, never appended to: one clean answer
    events = harness.recorder.events(connection)
    answers = [e["message"] for e in events if e["event"] == "answer"]
    assert len(answers) == 1 and answers[0].startswith("Echo: cut short")
    tokens = [e for e in events if e["event"] == "token"]
    assert {e["attempt"] for e in tokens} == {1, 2}
    shown = client_view(events, job.job_id)
    assert shown[-1] == answers[0]
    assert all(answers[0].startswith(text) for text in shown)  # at every moment a prefix of the answer


def test_a_second_crash_on_the_same_job_sends_it_to_the_dlq_with_its_user_told(
        harness, worker_process, start_worker):
    # GIVEN a job whose call was cut by a crash, then cut again on its recall
    connection, job = _setup(harness)
    _kill_mid_answer(harness, worker_process, connection, job)
    _kill_mid_answer(harness, worker_process, connection, job)

    # WHEN a third worker takes the redelivered message
    running = start_worker(harness.settings)
    dead = wait_until(harness.dlq_messages, timeout_s=30, what="the DLQ copy")
    running.stop()

    # THEN the LLM was not called a third time, and the job is in the DLQ with why
    assert harness.fake_llm.stats()["requests"] == 2
    assert [m["Body"] for m in dead] == [job.to_json()]
    assert dead[0]["MessageAttributes"]["FailureClass"]["StringValue"] == "interrupted"
    assert dead[0]["MessageAttributes"]["FailureReason"]["StringValue"].startswith("interrupted_call")
    assert harness.queue_counts() == (0, 0)
    # AND its user heard it, the history says it, the job is failed
    errors = [e for e in harness.recorder.events(connection) if e["event"] == "error"]
    assert [(e["jobId"], e["reason"]) for e in errors] == [(job.job_id, "interrupted_call")]
    assert harness.history.latest("ana", "c1", 5)[-1].role == ERROR
    assert harness.jobs.get(job.job_id)["status"] == FAILED
    assert running.worker.outcomes == {"dead_lettered": 1}


def test_with_recalls_off_a_cut_call_goes_to_the_dlq_and_is_not_paid_twice(harness, worker_process, start_worker):
    # GIVEN the operator's choice never to call a cut call again, and a crash mid-answer
    connection, job = _setup(harness, llm_recalls_after_crash=0)
    _kill_mid_answer(harness, worker_process, connection, job)

    # WHEN another worker takes the redelivered message
    running = start_worker(harness.settings)
    dead = wait_until(harness.dlq_messages, timeout_s=30, what="the DLQ copy")
    running.stop()

    # THEN the LLM saw one call only, and the user was told
    assert harness.fake_llm.stats()["requests"] == 1
    assert dead[0]["MessageAttributes"]["FailureClass"]["StringValue"] == "interrupted"
    assert [e["reason"] for e in harness.recorder.events(connection) if e["event"] == "error"] == ["interrupted_call"]


def test_a_live_long_answer_is_neither_redelivered_nor_taken_for_a_dead_call(harness, start_worker):
    # GIVEN an answer that takes twice the queue's visibility timeout and four liveness windows
    connection, job = _setup(harness)
    harness.fake_llm.set_profile(first_token_ms=300, tokens_per_s=40, answer_tokens_min=240, answer_tokens_max=240)

    # WHEN two workers share the queue while one of them streams it
    first, second = start_worker(harness.settings), start_worker(harness.settings)
    wait_until(lambda: harness.jobs.get(job.job_id)["status"] == ANSWERED, timeout_s=30, what="the answer")
    wait_until(lambda: harness.queue_counts() == (0, 0), what="the delete")
    first.stop()
    second.stop()

    # THEN its heartbeat kept the message hidden and the call alive: one call, one receive, one answer
    assert harness.fake_llm.stats()["requests"] == 1
    outcomes = [first.worker.outcomes, second.worker.outcomes]
    assert sorted(outcomes, key=len) == [{}, {"answered": 1}]
    assert int(harness.jobs.get(job.job_id)[ATTEMPTS_ATTRIBUTE]) == 1
    assert len([e for e in harness.recorder.events(connection) if e["event"] == "answer"]) == 1


def test_an_answer_finished_just_before_its_worker_died_is_stored_not_paid_again(harness):
    # GIVEN a job whose worker died after the provider finished the answer (the worker kept the
    # finished text in Redis) but before the answer was stored: the job reads `calling`, no heartbeat
    from cloudia import redis_client
    from cloudia.completed_answers import CompletedAnswers
    from cloudia.jobs import RECOVERED_DETAIL

    harness.configure()
    processor = harness.processor()
    connection = harness.connect("ana")
    job = harness.send_job("ana", "finished in time")
    assert harness.jobs.start_call(job.job_id, stale_before_ms=now_ms()).mark
    harness.run(CompletedAnswers(redis_client.async_client(harness.settings)).keep(
        job.job_id, "Echo: finished in time, and paid for"))
    wait_until(lambda: now_ms() - int(harness.jobs.get(job.job_id)["callHeartbeatAtMs"])
               > harness.settings.resilience.job_liveness_s * 1000, what="the heartbeat to go stale")

    # WHEN its message is delivered again
    outcome = harness.run(processor.handle(harness.receive()[0]))

    # THEN the kept answer is stored and pushed; the LLM is not called again
    assert outcome == Outcome.DUPLICATE
    assert harness.fake_llm.stats()["requests"] == 0
    assert harness.history.latest("ana", "c1", 5)[-1].message == "Echo: finished in time, and paid for"
    record = harness.jobs.get(job.job_id)
    assert (record["status"], record["detail"]) == (ANSWERED, RECOVERED_DETAIL)
    assert [e["message"] for e in harness.recorder.events(connection) if e["event"] == "answer"] == [
        "Echo: finished in time, and paid for"]


def test_a_call_still_running_elsewhere_is_waited_for_not_repeated(harness):
    # GIVEN a job another worker started calling a moment ago (its lease lost, say, with a Redis restart)
    harness.configure(job_liveness_s=30.0)
    processor = harness.processor()
    job = harness.send_job("ana", "in progress elsewhere")
    assert harness.jobs.start_call(job.job_id, stale_before_ms=now_ms() - 60_000).mark

    # WHEN its message is delivered here
    outcome = harness.run(processor.handle(harness.receive()[0]))

    # THEN this worker leaves it alone and looks again later; the LLM saw nothing from it
    assert outcome == Outcome.BUSY_ELSEWHERE
    assert harness.fake_llm.stats()["requests"] == 0
    assert harness.jobs.get(job.job_id)["status"] == CALLING
    # AND the mark refuses a recall while its heartbeat is fresh, and allows one once it is stale
    assert not harness.jobs.start_call(job.job_id, stale_before_ms=now_ms() - 60_000, recall_of=1).mark
    mark = harness.jobs.start_call(job.job_id, stale_before_ms=now_ms() + 1, recall_of=1).mark
    assert mark is not None and mark.attempt == 2
    # AND no more recalls than allowed
    assert not harness.jobs.start_call(job.job_id, stale_before_ms=now_ms() + 1, recall_of=1).mark


def test_two_crashes_apart_are_each_recalled_only_crashes_in_a_row_exhaust_the_recalls(harness):
    # GIVEN a job cut by a crash and recalled (one recall allowed in a row)
    harness.configure()
    job = harness.send_job("ana", "unlucky twice")
    stale = lambda: now_ms() + 1  # noqa: E731 - "every heartbeat so far is stale"
    assert harness.jobs.start_call(job.job_id, stale_before_ms=stale()).mark
    assert harness.jobs.start_call(job.job_id, stale_before_ms=stale(), recall_of=1).mark
    # WHEN the recall then fails while its worker lives (a 503), and a later call is cut by a crash again
    harness.jobs.end_failed_call(job.job_id)
    assert harness.jobs.start_call(job.job_id, stale_before_ms=stale()).mark
    # THEN that crash is recalled too: it is not a job that keeps killing its workers
    mark = harness.jobs.start_call(job.job_id, stale_before_ms=stale(), recall_of=1).mark
    assert mark is not None and mark.attempt == 4
    assert int(harness.jobs.get(job.job_id)[RECALLS_ATTRIBUTE]) == 2
    # AND a crash right after it (two in a row) is not
    assert harness.jobs.start_call(job.job_id, stale_before_ms=stale(), recall_of=1).mark is None


def test_a_call_that_fails_while_the_worker_lives_is_retried_not_taken_for_a_crash(harness):
    # GIVEN a provider answering 503
    harness.configure()
    harness.fake_llm.set_faults(error_rate=1.0, error_status=503)
    job = harness.send_job("ana", "try again")

    # WHEN the attempt fails
    outcome = harness.run(harness.processor().handle(harness.receive()[0]))

    # THEN the job is queued again for its retry
    assert outcome == Outcome.RETRY
    assert harness.jobs.get(job.job_id)["status"] == QUEUED


def test_a_retried_call_mark_whose_first_reply_was_lost_is_this_calls_own_and_counts_once(harness):
    # GIVEN a job, and a table whose first reply to each call mark is lost (the write itself landed)
    harness.configure()
    job = harness.send_job("ana", "slow table")
    flaky = JobStore.of(harness.settings, RepliesLostOnce(boto3.client("dynamodb")))

    # WHEN the worker marks the call (the SDK sends the same write twice)
    first = flaky.start_call(job.job_id, stale_before_ms=now_ms() - 60_000).mark

    # THEN the mark is this call's, not "another worker is calling", and it counts one attempt
    assert first is not None and first.attempt == 1
    # AND a different call is still refused while the mark is fresh
    assert not harness.jobs.start_call(job.job_id, stale_before_ms=now_ms() - 60_000).mark
    # AND a crash's recall, its reply lost too, is this recall's own, counted once
    recall = flaky.start_call(job.job_id, stale_before_ms=now_ms() + 1, recall_of=2).mark
    assert recall is not None and recall.attempt == 2
    record = harness.jobs.get(job.job_id)
    assert (int(record[ATTEMPTS_ATTRIBUTE]), int(record[RECALLS_ATTRIBUTE])) == (2, 1)
    assert record[CALL_TOKEN_ATTRIBUTE] == recall.token
