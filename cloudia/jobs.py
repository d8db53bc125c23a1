"""The unit of work carried by the jobs queue, and its state in the jobs table."""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass

from cloudia.schema import JOBS_PARTITION_KEY, JOBS_TTL_ATTRIBUTE
from cloudia.settings import Resilience

# SQS message attributes of a job the worker moved to the DLQ: why, and the failure's class.
FAILURE_REASON_ATTRIBUTE = "FailureReason"
FAILURE_CLASS_ATTRIBUTE = "FailureClass"
# ... and how many times it was received from the jobs queue (the DLQ's own count grows with every look).
RECEIVE_COUNT_ATTRIBUTE = "ReceiveCount"

# Job states. A job moves queued -> calling -> answered | failed, back to queued when a call fails
# and is retried. `answered` is final and stops a redelivery from calling the LLM; `calling` left
# behind by a worker that died mid-call tells the next one the LLM may already have been paid.
QUEUED, CALLING, ANSWERED, FAILED = "queued", "calling", "answered", "failed"
CALL_STARTED_ATTRIBUTE = "callStartedAtMs"


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Job:
    job_id: str
    user_id: str
    conversation_id: str
    client_message_id: str
    message: str
    created_at_ms: int

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, body: str) -> "Job":
        return cls(**json.loads(body))


class JobStore:
    """Jobs table access. Conditional writes make every transition safe under redelivery."""

    def __init__(self, dynamodb, table_name: str, resilience: Resilience):
        self._db = dynamodb
        self._table = table_name
        self._ttl_s = resilience.job_ttl_days * 86400

    def create(self, job: Job) -> bool:
        """Record a new job as queued; False if it already exists (a retry of the same write)."""
        try:
            self._db.put_item(
                TableName=self._table,
                Item={
                    JOBS_PARTITION_KEY: {"S": job.job_id},
                    "status": {"S": QUEUED},
                    "userId": {"S": job.user_id},
                    "conversationId": {"S": job.conversation_id},
                    "createdAtMs": {"N": str(job.created_at_ms)},
                    JOBS_TTL_ATTRIBUTE: {"N": str(job.created_at_ms // 1000 + self._ttl_s)},
                },
                ConditionExpression="attribute_not_exists(#k)",
                ExpressionAttributeNames={"#k": JOBS_PARTITION_KEY},
            )
            return True
        except self._db.exceptions.ConditionalCheckFailedException:
            return False

    def get(self, job_id: str) -> dict | None:
        item = self._db.get_item(
            TableName=self._table, Key={JOBS_PARTITION_KEY: {"S": job_id}}, ConsistentRead=True
        ).get("Item")
        if not item:
            return None
        return {k: next(iter(v.values())) for k, v in item.items()}

    def finish(self, job_id: str, status: str, detail: str = "") -> bool:
        """Move a job to a final state once; False if it was already answered."""
        return self._update_if(
            job_id,
            UpdateExpression="SET #s = :s, detail = :d, finishedAtMs = :t",
            ConditionExpression="attribute_not_exists(#s) OR #s <> :answered",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={
                ":s": {"S": status},
                ":d": {"S": detail},
                ":t": {"N": str(now_ms())},
                ":answered": {"S": ANSWERED},
            },
        )

    def start_call(self, job_id: str, stale_before_ms: int) -> bool:
        """Mark the job `calling` just before the LLM call; False if it is answered, or another worker's
        call started after `stale_before_ms` (still running). The mark carries a token of this call,
        so a retry of this very write (its reply lost to a timeout) is not taken for another call."""
        return self._update_if(
            job_id,
            UpdateExpression="SET #s = :calling, #c = :t, #k = :token",
            ConditionExpression=("attribute_not_exists(#s) OR #k = :token OR (#s <> :answered AND "
                                 "(#s <> :calling OR #c < :stale_before))"),
            ExpressionAttributeNames={"#s": "status", "#c": CALL_STARTED_ATTRIBUTE, "#k": "callToken"},
            ExpressionAttributeValues={
                ":calling": {"S": CALLING},
                ":answered": {"S": ANSWERED},
                ":t": {"N": str(now_ms())},
                ":token": {"S": uuid.uuid4().hex},
                ":stale_before": {"N": str(stale_before_ms)},
            },
        )

    def end_failed_call(self, job_id: str) -> None:
        """The call failed and the worker lives to retry it: `queued` again, so the retry is not taken
        for a call cut short by a crash. (A job already answered or failed is left as it is.)"""
        self._update_if(
            job_id,
            UpdateExpression="SET #s = :queued REMOVE #c",
            ConditionExpression="#s = :calling",
            ExpressionAttributeNames={"#s": "status", "#c": CALL_STARTED_ATTRIBUTE},
            ExpressionAttributeValues={":queued": {"S": QUEUED}, ":calling": {"S": CALLING}},
        )

    def _update_if(self, job_id: str, **update) -> bool:
        """One conditional update of the job's row; False if its condition did not hold."""
        try:
            self._db.update_item(TableName=self._table, Key={JOBS_PARTITION_KEY: {"S": job_id}}, **update)
            return True
        except self._db.exceptions.ConditionalCheckFailedException:
            return False
