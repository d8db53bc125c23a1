"""The queues as the tool reads them: their counts, and the DLQ's messages leased in batches and
released (SQS has no peek: a look is a receive with a visibility timeout, undone at the end)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

from botocore.exceptions import ClientError

from cloudia import aws
from cloudia.dlq.messages import DlqError, DlqMessage, Selector
from cloudia.jobs import RETRIES_ATTRIBUTE, now_ms
from cloudia.settings import Resilience

# SQS returns and accepts at most 10 messages per Receive/SendBatch/DeleteBatch call.
SQS_BATCH_MAX = 10
# Long poll of each receive: > 0 makes SQS ask every server, so an empty answer means empty.
RECEIVE_WAIT_S = 1
# How long a look or a move holds the messages it received; must outlast sending and deleting a
# batch, and a crashed run's messages are back in the DLQ after it.
DEFAULT_LEASE_S = 120


@dataclass(frozen=True)
class QueueCounts:
    visible: int
    in_flight: int
    delayed: int

    @property
    def total(self) -> int:
        return self.visible + self.in_flight + self.delayed


def sqs_client(resilience: Resilience = Resilience()):
    return aws.sqs(resilience)


def queue_name(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def _queue_attributes(sqs, url: str, names: list[str]) -> dict:
    if not url:
        raise DlqError("no queue URL given")
    try:
        return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        if "NonExistentQueue" in code or "QueueDoesNotExist" in code:
            raise DlqError(f"queue does not exist: {url}") from error
        raise DlqError(f"cannot read queue {url}: {error}") from error
    except ValueError as error:  # botocore refuses a URL it cannot parse
        raise DlqError(f"not a queue URL: {url} ({error})") from error


def queue_counts(sqs, url: str) -> QueueCounts:
    attributes = _queue_attributes(sqs, url, [
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed",
    ])
    return QueueCounts(
        visible=int(attributes.get("ApproximateNumberOfMessages", 0)),
        in_flight=int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
        delayed=int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)),
    )


def queue_arn(sqs, url: str) -> str:
    return _queue_attributes(sqs, url, ["QueueArn"])["QueueArn"]


def lease(sqs, dlq_url: str, lease_s: int = DEFAULT_LEASE_S, limit: int | None = None) -> Iterator[list[DlqMessage]]:
    """Receive the DLQ's messages in batches, each message once, until the queue has no new one.

    The caller owns the leases: it deletes what it moved and releases the rest (`release`).
    """
    seen: set[str] = set()
    while limit is None or len(seen) < limit:
        wanted = SQS_BATCH_MAX if limit is None else min(SQS_BATCH_MAX, limit - len(seen))
        response = sqs.receive_message(
            QueueUrl=dlq_url,
            MaxNumberOfMessages=wanted,
            VisibilityTimeout=lease_s,
            WaitTimeSeconds=RECEIVE_WAIT_S,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        batch = [
            DlqMessage(m["MessageId"], m["ReceiptHandle"], m["Body"], m.get("MessageAttributes", {}),
                       m.get("Attributes", {}))
            for m in response.get("Messages", [])
            if m["MessageId"] not in seen
        ]
        if not batch:
            return
        seen.update(m.message_id for m in batch)
        yield batch


def release(sqs, dlq_url: str, messages: Iterable[DlqMessage]) -> None:
    """Make leased messages visible again at once."""
    messages = list(messages)
    for start in range(0, len(messages), SQS_BATCH_MAX):
        chunk = messages[start:start + SQS_BATCH_MAX]
        sqs.change_message_visibility_batch(
            QueueUrl=dlq_url,
            Entries=[{"Id": str(i), "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": 0}
                     for i, m in enumerate(chunk)],
        )


def look(sqs, dlq_url: str, selector: Selector = Selector(), limit: int | None = None,
         lease_s: int = DEFAULT_LEASE_S) -> list[DlqMessage]:
    """The DLQ's messages that `selector` matches, oldest first; all are released before returning."""
    queue_counts(sqs, dlq_url)  # a clear error for an unknown queue before the first receive
    held: list[DlqMessage] = []
    try:
        for batch in lease(sqs, dlq_url, lease_s, limit):
            held.extend(batch)
    finally:
        release(sqs, dlq_url, held)
    at_ms = now_ms()
    return sorted((m for m in held if selector.matches(m, at_ms)), key=lambda m: m.sent_at_ms)


def find(sqs, dlq_url: str, message_or_job_id: str, lease_s: int = DEFAULT_LEASE_S) -> DlqMessage | None:
    """The DLQ message with this SQS MessageId or this job id."""
    for message in look(sqs, dlq_url, lease_s=lease_s):
        job = message.job
        if message.message_id == message_or_job_id or (job and job.job_id == message_or_job_id):
            return message
    return None


def superseded(message: DlqMessage, jobs) -> bool:
    """Whether a retry of its job replaced this copy: its retry count is below the job's row's.
    `jobs` reads a job's row (`JobStore.get`); None knows nothing, so nothing is superseded."""
    job = message.job
    if jobs is None or job is None:
        return False
    record = jobs.get(job.job_id)
    return record is not None and int(record.get(RETRIES_ATTRIBUTE) or 0) > job.retry
