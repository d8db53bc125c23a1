"""`retry`: a person queues their own failed job again without retyping it. The same job and text, once
(two retries queue it once), admitted as a new message is (rate limit, budget), refused for another
user's job and for a job that is not failed."""
from __future__ import annotations

import dataclasses
import json
import threading

import pytest

from cloudia import chat
from cloudia.history import ERROR, USER, Entry
from cloudia.jobs import ANSWERED, FAILED, QUEUED, Job
from cloudia.protocol import LLM_REFUSED_MESSAGE
from tests.functions.conftest import body_of
from tests.support.lost_replies import RepliesLostOnce

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

RETRIES_ATTRIBUTE = "retries"  # the job row's count of retries (cloudia.jobs.RETRIES_ATTRIBUTE)


def send(functions, connection: str, text: str = "Olá, tudo bem?", client_message_id: str = "m-1") -> str:
    response = functions.send(connection, {"action": "sendMessage", "conversationId": "conv-1",
                                           "clientMessageId": client_message_id, "message": text})
    assert response["statusCode"] == 200, body_of(response)
    return body_of(response)["jobId"]


def take_queued(functions) -> list[dict]:
    """Every message on the jobs queue, taken off it (as a worker does), bodies as JSON."""
    bodies = []
    while True:
        got = functions.sqs.receive_message(QueueUrl=functions.settings.jobs_queue_url, MaxNumberOfMessages=10,
                                            WaitTimeSeconds=0).get("Messages", [])
        if not got:
            return bodies
        for message in got:
            bodies.append(json.loads(message["Body"]))
            functions.sqs.delete_message(QueueUrl=functions.settings.jobs_queue_url,
                                         ReceiptHandle=message["ReceiptHandle"])


def fail_like_the_worker(functions, job_id: str, user: str = "alice") -> None:
    """What the worker does with a job the LLM refuses for good: the user told, the failure in the
    history, the job failed, its budget reservation released (its message goes to the DLQ)."""
    service = functions.service
    service.history.append(user, "conv-1", job_id, ERROR, LLM_REFUSED_MESSAGE)
    service.jobs.finish(job_id, FAILED, "status_400: the LLM refused the request")
    service.limits.release(user, job_id)


def failed_job(functions, connection: str, text: str = "Olá, tudo bem?", client_message_id: str = "m-1") -> str:
    job_id = send(functions, connection, text, client_message_id)
    assert [b["job_id"] for b in take_queued(functions)] == [job_id]
    fail_like_the_worker(functions, job_id)
    return job_id


def retry(functions, connection: str, job_id: str) -> dict:
    return functions.send(connection, {"action": "retry", "jobId": job_id}, route_key="retry")


def test_a_retry_queues_the_users_failed_job_again_the_same_job_and_text(functions):
    # GIVEN alice's message whose job failed for good
    alice = functions.open_connection("alice")
    job_id = failed_job(functions, alice, "Explique o teorema, por favor")
    # WHEN she retries it
    response = retry(functions, alice, job_id)
    # THEN she hears `queued` for that job, as for a new message (with what is left of her budget)
    assert response["statusCode"] == 200, body_of(response)
    event = body_of(response)
    assert (event["event"], event["jobId"], event["clientMessageId"]) == ("queued", job_id, "m-1")
    assert event["budget"]["remaining"] < event["budget"]["limit"]
    # AND the same job, with the same text, is on the queue once, saying it is the first retry
    [body] = take_queued(functions)
    job = Job.from_json(json.dumps(body))
    assert (job.job_id, job.user_id, job.conversation_id, job.client_message_id, job.message, job.retry) == (
        job_id, "alice", "conv-1", "m-1", "Explique o teorema, por favor", 1)
    # AND its row went from failed back to queued, counting the retry, its failure's detail gone
    row = functions.service.jobs.get(job_id)
    assert row["status"] == QUEUED and row[RETRIES_ATTRIBUTE] == "1" and "detail" not in row
    # AND its budget reservation is held again, for the worker to settle
    assert functions.service.limits.held(job_id) is not None
    # AND the history gained nothing (the message is there once, and its failure)
    assert [(r["role"], r["jobId"]) for r in functions.history_rows()] == [(USER, job_id), (ERROR, job_id)]


def test_two_retries_queue_it_once_and_both_hear_queued(functions):
    alice = functions.open_connection("alice")
    job_id = failed_job(functions, alice)
    first, second = retry(functions, alice, job_id), retry(functions, alice, job_id)
    assert [body_of(r)["event"] for r in (first, second)] == ["queued", "queued"]
    assert body_of(second)["jobId"] == job_id
    assert [b["job_id"] for b in take_queued(functions)] == [job_id]
    assert functions.service.jobs.get(job_id)[RETRIES_ATTRIBUTE] == "1"


def test_retries_at_the_same_moment_queue_it_once(functions):
    # GIVEN a failed job, and eight retries of it sent at once (a person hammering the button on two tabs)
    alice = functions.open_connection("alice")
    job_id = failed_job(functions, alice)
    gate, replies = threading.Barrier(8), []

    def one():
        gate.wait()
        replies.append(retry(functions, alice, job_id))

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # THEN every one is answered queued (none is an error), and the job is queued once
    assert sorted(body_of(r)["event"] for r in replies) == ["queued"] * 8, [body_of(r) for r in replies]
    assert [b["job_id"] for b in take_queued(functions)] == [job_id]
    assert functions.service.jobs.get(job_id)[RETRIES_ATTRIBUTE] == "1"
    # AND one reservation is held for it, not eight
    held = functions.service.limits.held(job_id)
    assert held is not None
    budget = functions.service.limits.admit("alice", 0)
    assert budget.tokens_today == held.tokens


def test_a_retry_whose_reply_was_lost_and_sent_again_still_queues_the_job_once(functions, monkeypatch):
    # GIVEN a failed job, and a table whose reply to the retry's write is lost (the write landed,
    # then the SDK sent it again)
    alice = functions.open_connection("alice")
    job_id = failed_job(functions, alice)
    jobs = functions.service.jobs
    monkeypatch.setattr(jobs, "_db", RepliesLostOnce(jobs._db))
    # WHEN she retries it
    response = retry(functions, alice, job_id)
    # THEN she hears `queued`, and the job is on the queue once, counted as one retry
    assert body_of(response)["event"] == "queued", body_of(response)
    assert [(b["job_id"], b["retry"]) for b in take_queued(functions)] == [(job_id, 1)]
    assert jobs.get(job_id)[RETRIES_ATTRIBUTE] == "1"


def test_a_job_failed_again_after_its_retry_can_be_retried_again(functions):
    alice = functions.open_connection("alice")
    job_id = failed_job(functions, alice)
    assert body_of(retry(functions, alice, job_id))["event"] == "queued"
    take_queued(functions)
    fail_like_the_worker(functions, job_id)
    assert body_of(retry(functions, alice, job_id))["event"] == "queued"
    [body] = take_queued(functions)
    assert body["retry"] == 2


def test_another_users_job_is_refused_as_if_it_did_not_exist(functions):
    # GIVEN alice's failed job
    alice, bob = functions.open_connection("alice"), functions.open_connection("bob")
    job_id = failed_job(functions, alice)
    # WHEN bob retries it, or a job that does not exist
    refused, unknown = retry(functions, bob, job_id), retry(functions, bob, "job-nope")
    # THEN both are refused alike (nothing tells him the job exists), naming the job and the action
    for response, named in ((refused, job_id), (unknown, "job-nope")):
        assert response["statusCode"] == 404
        assert body_of(response) | {"jobId": None} == {"event": "error", "reason": "job_not_found", "jobId": None,
                                                       "action": "retry", "message": body_of(refused)["message"]}
        assert body_of(response)["jobId"] == named
    # AND alice's job is still failed, and nothing was queued
    assert functions.service.jobs.get(job_id)["status"] == FAILED
    assert take_queued(functions) == []


def test_a_job_that_is_not_failed_is_refused(functions):
    alice = functions.open_connection("alice")
    # GIVEN a job still queued, and one answered
    queued = send(functions, alice, "still waiting", "m-1")
    answered = send(functions, alice, "answered already", "m-2")
    take_queued(functions)
    functions.service.jobs.finish(answered, ANSWERED)
    # WHEN each is retried THEN each is refused with why, and nothing is queued
    for job_id, status in ((queued, QUEUED), (answered, ANSWERED)):
        response = retry(functions, alice, job_id)
        assert response["statusCode"] == 409
        event = body_of(response)
        assert (event["event"], event["reason"], event["jobId"]) == ("error", "job_not_failed", job_id)
        assert status in event["message"]
        assert functions.service.jobs.get(job_id)["status"] == status
    assert take_queued(functions) == []


def test_a_job_that_never_reached_the_queue_cannot_be_retried(functions):
    # GIVEN a failed job whose history entry was taken back (it could not be queued, and a worker
    # that took the copy which landed after all failed it)
    service = functions.service
    job = Job("job-lost", "alice", "conv-1", "m-9", "lost", 1000)
    entry = service.history.put_request(job.user_id, job.conversation_id, job.job_id, USER, job.message,
                                        job.created_at_ms)
    service.jobs.create(job, entry)
    service.history.remove(job.user_id, job.conversation_id, Entry(job.job_id, USER, job.message, 1000))
    service.jobs.finish(job.job_id, FAILED, "not queued: SQS down")
    alice = functions.open_connection("alice")
    # WHEN it is retried THEN it is refused: the person sends it again
    response = retry(functions, alice, job.job_id)
    assert response["statusCode"] == 409 and body_of(response)["reason"] == "job_not_retriable"
    assert take_queued(functions) == []


def test_a_retry_over_the_rate_limit_is_refused_and_the_job_stays_failed(functions_with, settings):
    # GIVEN a rate limit of one message a minute, spent by the message that failed
    functions = functions_with(resilience=dataclasses.replace(settings.resilience, rate_limit_per_minute=1))
    alice = functions.open_connection("alice")
    job_id = failed_job(functions, alice)
    # WHEN she retries it within the minute
    response = retry(functions, alice, job_id)
    # THEN it is refused as a new message would be, on that job, and nothing changed
    assert response["statusCode"] == 429
    event = body_of(response)
    assert (event["event"], event["reason"], event["jobId"]) == ("error", "rate_limited", job_id)
    assert functions.service.jobs.get(job_id)["status"] == FAILED
    assert take_queued(functions) == []


def test_a_retry_over_the_budget_is_refused_says_what_is_left_and_the_job_stays_failed(functions_with, settings):
    # GIVEN a budget of 1,500 tokens a day: a short message reserves about 1,050 (llm_max_tokens is 1,024)
    functions = functions_with(resilience=dataclasses.replace(settings.resilience, daily_token_budget=1500))
    alice = functions.open_connection("alice")
    job_id = failed_job(functions, alice)  # its reservation released when it failed
    send(functions, alice, "another one", "m-2")  # holds most of the budget now
    take_queued(functions)
    # WHEN she retries the failed one
    response = retry(functions, alice, job_id)
    # THEN it is refused by the budget, with what is left and when it resets, on that job
    assert response["statusCode"] == 429
    event = body_of(response)
    assert (event["event"], event["reason"], event["jobId"]) == ("error", "budget_exceeded", job_id)
    assert event["budget"]["limit"] == 1500 and event["budget"]["remaining"] < 1050
    assert event["retryAfter"] > 0
    assert functions.service.jobs.get(job_id)["status"] == FAILED
    assert functions.service.limits.held(job_id) is None
    assert take_queued(functions) == []


def test_a_retry_is_admitted_by_the_function_that_admits_a_new_message(functions, monkeypatch):
    # The same admission, not a copy of it: sendMessage's `_reserve` is what a retry calls.
    alice = functions.open_connection("alice")
    job_id = failed_job(functions, alice)
    admitted = []
    reserve = chat.ChatService._reserve
    monkeypatch.setattr(chat.ChatService, "_reserve", lambda self, job: admitted.append(job) or reserve(self, job))
    assert body_of(retry(functions, alice, job_id))["event"] == "queued"
    [job] = admitted
    assert (job.job_id, job.message) == (job_id, "Olá, tudo bem?")


def test_a_retry_that_cannot_be_queued_leaves_the_job_failed_and_its_reservation_released(functions, monkeypatch):
    alice = functions.open_connection("alice")
    job_id = failed_job(functions, alice)
    service = functions.service

    def refuse(**_kwargs):
        raise ConnectionError("SQS unreachable")

    monkeypatch.setattr(service._sqs, "send_message", refuse)
    response = retry(functions, alice, job_id)
    assert response["statusCode"] == 503
    event = body_of(response)
    assert (event["reason"], event["jobId"]) == ("enqueue_failed", job_id)
    assert service.jobs.get(job_id)["status"] == FAILED
    assert service.limits.held(job_id) is None
    # AND once SQS is back, a retry goes through
    monkeypatch.undo()
    assert body_of(retry(functions, alice, job_id))["event"] == "queued"


@pytest.mark.parametrize("frame, reason", [
    ({"action": "retry"}, "missing_field"),
    ({"action": "retry", "jobId": "job 1"}, "invalid_field"),
    ({"action": "retry", "jobId": 7}, "invalid_field"),
])
def test_a_malformed_retry_is_refused_with_why(functions, frame, reason):
    alice = functions.open_connection("alice")
    response = functions.send(alice, frame, route_key="retry")
    assert response["statusCode"] == 400 and body_of(response)["reason"] == reason
