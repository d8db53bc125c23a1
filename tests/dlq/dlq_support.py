"""Helpers that put jobs into the DLQ the two ways production does, and read queues back."""
from __future__ import annotations

import uuid

from cloudia.dlq_format import FAILURE_REASON_ATTRIBUTE
from cloudia import aws
from cloudia.history import USER, HistoryStore
from cloudia.jobs import Job, JobStore, now_ms

# SQS moves a message to the DLQ on the receive after the 5th (the queue's maxReceiveCount).
MAX_RECEIVES = 5


def new_job(text: str = "hello") -> Job:
    return Job(
        job_id=f"job-{uuid.uuid4().hex[:10]}",
        user_id="user-1",
        conversation_id="conv-1",
        client_message_id=uuid.uuid4().hex,
        message=text,
        created_at_ms=now_ms(),
    )


def record_job(settings, job: Job) -> JobStore:
    """What sendMessage writes for a job: its row and its user's history entry (one transaction)."""
    db = aws.dynamodb(settings.resilience)
    history = HistoryStore.of(settings, db)
    store = JobStore.of(settings, db)
    store.create(job, history.put_request(job.user_id, job.conversation_id, job.job_id, USER, job.message,
                                          job.created_at_ms))
    return store


def fail_permanently(sqs, dlq_url: str, reason: str, job: Job | None = None,
                     reason_attribute: str = FAILURE_REASON_ATTRIBUTE, **extra_attributes: str) -> Job:
    """What the worker does with a job that can never succeed: straight to the DLQ, with why."""
    job = job or new_job()
    attributes = {reason_attribute: {"DataType": "String", "StringValue": reason},
                  "FailureClass": {"DataType": "String", "StringValue": "permanent"}}
    attributes.update({k: {"DataType": "String", "StringValue": v} for k, v in extra_attributes.items()})
    sqs.send_message(QueueUrl=dlq_url, MessageBody=job.to_json(), MessageAttributes=attributes)
    return job


def exhaust_receives(sqs, queue_url: str, dlq_url: str, job: Job | None = None) -> Job:
    """A job nobody manages to process: received 5 times (visibility 0), then the redrive policy moves it."""
    job = job or new_job()
    sqs.send_message(QueueUrl=queue_url, MessageBody=job.to_json(),
                     MessageAttributes={"traceparent": {"DataType": "String", "StringValue": "00-abc-01"}})
    for _ in range(MAX_RECEIVES + 1):
        sqs.receive_message(QueueUrl=queue_url, VisibilityTimeout=0, MaxNumberOfMessages=1)
    assert total(sqs, dlq_url) >= 1, "the redrive policy did not move the job to the DLQ"
    return job


def total(sqs, url: str) -> int:
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed",
    ])["Attributes"]
    return sum(int(v) for v in attributes.values())


def drain(sqs, url: str) -> list[dict]:
    """Every message on the queue (held for a minute, so each is returned once)."""
    messages: dict[str, dict] = {}
    while True:
        batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60, WaitTimeSeconds=1,
                                    MessageAttributeNames=["All"],
                                    MessageSystemAttributeNames=["All"]).get("Messages", [])
        if not batch:
            return list(messages.values())
        messages.update((m["MessageId"], m) for m in batch)


def redrive_ids(messages: list[dict]) -> list[str]:
    return sorted(m["MessageAttributes"]["redriveId"]["StringValue"] for m in messages)
