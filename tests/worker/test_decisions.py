"""Every decision a job can end in, carried out with SQS: the one place where "every message ends
deleted, or visible again later" is kept. Unit tests, no emulator: the SQS client records its calls."""
from __future__ import annotations

import asyncio

import pytest

from cloudia.dlq_format import FAILURE_CLASS_ATTRIBUTE, FAILURE_REASON_ATTRIBUTE, RECEIVE_COUNT_ATTRIBUTE
from worker.decisions import (SQS_MAX_DELAY_S, DeadLetter, Delete, GiveBack, JobQueue, Outcome, Requeue,
                              RetryAfter)

QUEUE, DLQ, MAX_RECEIVES = "https://sqs/jobs", "https://sqs/jobs-dlq", 5


class RecordingSqs:
    def __init__(self):
        self.calls: list[tuple[str, dict]] = []

    def __getattr__(self, operation):
        return lambda **request: self.calls.append((operation, request)) or {}


def message(receives: int = 1) -> dict:
    return {"Body": '{"job_id": "j1"}', "ReceiptHandle": "rh-1",
            "Attributes": {"ApproximateReceiveCount": str(receives)}}


def carry_out(decision, receives: int = 1) -> list[tuple[str, dict]]:
    sqs = RecordingSqs()
    asyncio.run(JobQueue(sqs, QUEUE, DLQ, MAX_RECEIVES).carry_out(message(receives), decision))
    return sqs.calls


DELETE_RH_1 = ("delete_message_batch", {"QueueUrl": QUEUE, "Entries": [{"Id": "0", "ReceiptHandle": "rh-1"}]})


def test_delete_deletes_the_message():
    assert carry_out(Delete()) == [DELETE_RH_1]


def test_deletes_of_jobs_ending_together_share_batch_requests():
    # GIVEN 12 jobs whose messages are deleted at the same moment
    sqs = RecordingSqs()
    queue = JobQueue(sqs, QUEUE, DLQ, MAX_RECEIVES)

    async def twelve():
        await asyncio.gather(*(queue.delete({"ReceiptHandle": f"rh-{i}"}) for i in range(12)))

    asyncio.run(twelve())
    # THEN two requests delete them all (SQS takes 10 a batch), each handle once
    assert [operation for operation, _ in sqs.calls] == ["delete_message_batch"] * 2
    handles = [e["ReceiptHandle"] for _, request in sqs.calls for e in request["Entries"]]
    assert sorted(handles) == sorted(f"rh-{i}" for i in range(12))


def test_a_delete_the_batch_refused_raises_as_a_lone_delete_would():
    class RefusingSqs(RecordingSqs):
        def delete_message_batch(self, **request):
            return {"Failed": [{"Id": "0", "Code": "ReceiptHandleIsInvalid", "Message": "expired"}]}

    with pytest.raises(RuntimeError, match="ReceiptHandleIsInvalid"):
        asyncio.run(JobQueue(RefusingSqs(), QUEUE, DLQ, MAX_RECEIVES).delete(message()))


def test_retry_after_hides_the_message_for_the_delay():
    assert carry_out(RetryAfter(8)) == [("change_message_visibility",
                                         {"QueueUrl": QUEUE, "ReceiptHandle": "rh-1", "VisibilityTimeout": 8})]


def test_requeue_sends_a_fresh_delayed_copy_then_deletes_the_original():
    calls = carry_out(Requeue(12.2))
    assert calls == [("send_message", {"QueueUrl": QUEUE, "MessageBody": '{"job_id": "j1"}', "DelaySeconds": 13}),
                     DELETE_RH_1]
    # SQS takes at most 15 minutes of delay
    assert carry_out(Requeue(3600))[0][1]["DelaySeconds"] == SQS_MAX_DELAY_S


def test_dead_letter_sends_a_copy_that_says_why_then_deletes_the_original():
    [(send, request), delete] = carry_out(DeadLetter("exhausted_status_503: 5 attempts", "exhausted"), receives=5)
    assert send == "send_message" and request["QueueUrl"] == DLQ
    attributes = request["MessageAttributes"]
    assert attributes[FAILURE_REASON_ATTRIBUTE]["StringValue"] == "exhausted_status_503: 5 attempts"
    assert attributes[FAILURE_CLASS_ATTRIBUTE]["StringValue"] == "exhausted"
    assert attributes[RECEIVE_COUNT_ATTRIBUTE]["StringValue"] == "5"
    assert delete == DELETE_RH_1


def test_give_back_makes_the_message_visible_again():
    assert carry_out(GiveBack(2.5)) == [("change_message_visibility",
                                         {"QueueUrl": QUEUE, "ReceiptHandle": "rh-1", "VisibilityTimeout": 3})]


def test_give_back_on_the_last_receive_goes_back_as_a_fresh_copy_so_sqs_does_not_dead_letter_it_unseen():
    calls = carry_out(GiveBack(0, Outcome.HANDED_BACK), receives=MAX_RECEIVES)
    assert [operation for operation, _ in calls] == ["send_message", "delete_message_batch"]
    assert calls[0][1]["QueueUrl"] == QUEUE


@pytest.mark.parametrize("decision, outcome", [
    (Delete(), Outcome.ANSWERED), (Delete(Outcome.DUPLICATE), Outcome.DUPLICATE), (RetryAfter(1), Outcome.RETRY),
    (Requeue(1), Outcome.DELAYED_CIRCUIT_OPEN), (DeadLetter("r", "c"), Outcome.DEAD_LETTERED),
    (GiveBack(1), Outcome.BUSY_ELSEWHERE)])
def test_each_decision_names_its_outcome(decision, outcome):
    assert decision.outcome == outcome
