"""The unit of work carried by the jobs queue, and its state in the jobs table."""
from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import asdict, dataclass

from cloudia.schema import JOBS_PARTITION_KEY, JOBS_TTL_ATTRIBUTE
from cloudia.settings import Resilience, Settings

# Job states. A job moves queued -> calling -> answered | failed, back to queued when a call fails
# and is retried. `answered` is final and stops a redelivery from calling the LLM. While `calling`,
# the worker refreshes the mark's heartbeat; a mark whose heartbeat stopped was left by a worker that
# died mid-call, and the job may be called again (a recall) a bounded number of times.
QUEUED, CALLING, ANSWERED, FAILED = "queued", "calling", "answered", "failed"
CALL_STARTED_ATTRIBUTE = "callStartedAtMs"
CALL_HEARTBEAT_ATTRIBUTE = "callHeartbeatAtMs"
CALL_TOKEN_ATTRIBUTE = "callToken"
# LLM calls started for the job (its `token` events carry it), how many of them were recalls, and how
# many calls in a row a crash cut (reset when a call ends with its worker alive: a job that keeps
# killing its workers is told apart from one that met two unrelated crashes).
ATTEMPTS_ATTRIBUTE = "attempts"
RECALLS_ATTRIBUTE = "recalls"
CUT_IN_A_ROW_ATTRIBUTE = "cutInARow"
# The `detail` of a job answered from the text its dead worker had kept (see cloudia/completed_answers.py).
RECOVERED_DETAIL = "recovered after a crash: the finished answer was kept, not paid again"
# The worker's log line once it has kept a whole answer (a recall will not pay for it): the chaos tally's proof.
ANSWER_COMPLETE_LOG = "LLM answer complete"
# A person's retry of their failed job (the `retry` action) moves it failed -> queued again, counting
# the retries; the message it queues carries that count (`Job.retry`), and so does the DLQ copy made
# if it fails again. A DLQ copy of an earlier count is superseded: the redrive leaves it out.
RETRIES_ATTRIBUTE = "retries"
RETRIED_AT_ATTRIBUTE = "retriedAtMs"
# The token of the retry that last moved the job: a retry of that very write tells itself by it.
RETRY_TOKEN_ATTRIBUTE = "retryToken"


@dataclass(frozen=True)
class CallMark:
    """This worker's `calling` mark on a job: its token (to refresh it) and the call's attempt number."""

    token: str
    attempt: int


@dataclass(frozen=True)
class CallStart:
    """What `JobStore.start_call` found: this worker's mark if the call may start, and the job's row
    as it was (read by the same conditional write, so a started call costs no read of its own)."""

    mark: CallMark | None
    record: dict | None


def now_ms() -> int:
    return int(time.time() * 1000)


def job_id_for(user_id: str, client_message_id: str) -> str:
    """A message's job id, the same for every send of it: a resend whose idempotency record is gone
    (Redis lost it) still meets the job's row, and never makes a second job."""
    digest = hashlib.sha256(f"{user_id}\0{client_message_id}".encode()).hexdigest()[:32]
    return f"job-{digest}"


def plain(item: dict) -> dict:
    """A DynamoDB item as plain values ({"S": "x"} -> "x")."""
    return {k: next(iter(v.values())) for k, v in item.items()}


@dataclass(frozen=True)
class Job:
    job_id: str
    user_id: str
    conversation_id: str
    client_message_id: str
    message: str
    created_at_ms: int
    # How many times its user had retried the job when this message was queued (0: the first send,
    # left out of the JSON so that the body stays what it always was).
    retry: int = 0

    def to_json(self) -> str:
        body = asdict(self)
        if not self.retry:
            del body["retry"]
        return json.dumps(body, ensure_ascii=False)

    @classmethod
    def from_json(cls, body: str) -> "Job":
        return cls(**json.loads(body))


class JobStore:
    """Jobs table access. Conditional writes make every transition safe under redelivery."""

    def __init__(self, dynamodb, table_name: str, resilience: Resilience):
        self._db = dynamodb
        self._table = table_name
        self._ttl_s = resilience.job_ttl_days * 86400

    @classmethod
    def of(cls, settings: Settings, dynamodb) -> "JobStore":
        """The jobs table the settings name, through this DynamoDB client."""
        return cls(dynamodb, settings.jobs_table, settings.resilience)

    def create(self, job: Job, entry: dict) -> dict | None:
        """Record a new job as queued together with its user's history entry (`entry`, a
        `HistoryStore.put_request`), in one request; None if created, else the row the job already
        has (a resend of the same message), and then nothing was written."""
        put = {"TableName": self._table,
               "Item": {
                   JOBS_PARTITION_KEY: {"S": job.job_id},
                   "status": {"S": QUEUED},
                   "userId": {"S": job.user_id},
                   "conversationId": {"S": job.conversation_id},
                   # A retry queues the same job again: its message id (the text is in the history).
                   "clientMessageId": {"S": job.client_message_id},
                   "createdAtMs": {"N": str(job.created_at_ms)},
                   JOBS_TTL_ATTRIBUTE: {"N": str(job.created_at_ms // 1000 + self._ttl_s)},
               },
               "ConditionExpression": "attribute_not_exists(#k)",
               "ExpressionAttributeNames": {"#k": JOBS_PARTITION_KEY},
               "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}
        return self._transact([{"Put": put}, {"Put": entry}], job_index=0)

    def remove_queued(self, job_id: str) -> bool:
        """Take back the row of a job that never reached the queue (no worker has touched it): a
        resend of its message creates it again. False if a worker has it after all."""
        try:
            self._db.delete_item(TableName=self._table, Key={JOBS_PARTITION_KEY: {"S": job_id}},
                                 ConditionExpression="#s = :queued", ExpressionAttributeNames={"#s": "status"},
                                 ExpressionAttributeValues={":queued": {"S": QUEUED}})
            return True
        except self._db.exceptions.ConditionalCheckFailedException:
            return False

    def get(self, job_id: str) -> dict | None:
        item = self._db.get_item(
            TableName=self._table, Key={JOBS_PARTITION_KEY: {"S": job_id}}, ConsistentRead=True
        ).get("Item")
        return plain(item) if item else None

    def finish(self, job_id: str, status: str, detail: str = "", entry: dict | None = None) -> bool:
        """Move a job to a final state once; False if it was already answered. `entry` (a
        `HistoryStore.put_request`: the answer, or the failure its user was told) is written in the
        same request, and only if the job moves: an answer stored twice is one too many."""
        update = dict(
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
        if entry is None:
            return self._update_if(job_id, **update)
        job = {"TableName": self._table, "Key": {JOBS_PARTITION_KEY: {"S": job_id}}, **update}
        return self._transact([{"Update": job}, {"Put": entry}], job_index=0) is None

    def start_call(self, job_id: str, stale_before_ms: int, recall_of: int | None = None,
                   retry: int = 0) -> CallStart:
        """Mark the job `calling` just before the LLM call, counting the attempt; no mark if it is
        answered, another worker's call is live (its heartbeat after `stale_before_ms`), or its user
        retried it since the message `retry` was queued. Either way the row as it was comes back.

        `recall_of`: the job reads `calling` with a stopped heartbeat and this is a recall, allowed
        while fewer than `recall_of` calls in a row were cut by a crash. The mark carries a token of this call: a
        retry of this very write (botocore's, its reply lost to a timeout) is refused, and the refusal shows
        the token, so it is this call's mark, counted once, not another call's."""
        token = uuid.uuid4().hex
        if recall_of is None:
            condition = "attribute_not_exists(#s) OR (#s <> :answered AND #s <> :calling)"
            counters, names, values = "#a :one", {}, {":answered": {"S": ANSWERED}}
        else:
            condition = ("#s = :calling AND #k <> :token AND #h < :stale_before AND "
                         "(attribute_not_exists(#x) OR #x < :max_recalls)")
            counters = "#a :one, #r :one, #x :one"
            names = {"#r": RECALLS_ATTRIBUTE, "#x": CUT_IN_A_ROW_ATTRIBUTE}
            values = {":stale_before": {"N": str(stale_before_ms)}, ":max_recalls": {"N": str(recall_of)}}
        now = str(now_ms())
        try:
            reply = self._db.update_item(
                TableName=self._table, Key={JOBS_PARTITION_KEY: {"S": job_id}},
                UpdateExpression=f"SET #s = :calling, #c = :t, #h = :t, #k = :token ADD {counters}",
                # A copy queued before its user's retry is not this job's call any more.
                ConditionExpression=f"({condition}) AND (attribute_not_exists(#n) OR #n <= :retry)",
                ExpressionAttributeNames={"#s": "status", "#c": CALL_STARTED_ATTRIBUTE, "#h": CALL_HEARTBEAT_ATTRIBUTE,
                                          "#k": CALL_TOKEN_ATTRIBUTE, "#a": ATTEMPTS_ATTRIBUTE,
                                          "#n": RETRIES_ATTRIBUTE, **names},
                ExpressionAttributeValues={":calling": {"S": CALLING}, ":t": {"N": now}, ":token": {"S": token},
                                           ":one": {"N": "1"}, ":retry": {"N": str(retry)}, **values},
                ReturnValues="ALL_OLD", ReturnValuesOnConditionCheckFailure="ALL_OLD")
        except self._db.exceptions.ConditionalCheckFailedException as refused:
            record = plain(refused.response.get("Item") or {})
            if record.get(CALL_TOKEN_ATTRIBUTE) == token:  # this write, landed before its retry
                return CallStart(CallMark(token, int(record[ATTEMPTS_ATTRIBUTE])), record)
            return CallStart(None, record or None)
        before = plain(reply.get("Attributes") or {})
        return CallStart(CallMark(token, int(before.get(ATTEMPTS_ATTRIBUTE) or 0) + 1), before or None)

    def beat(self, job_id: str, mark: CallMark) -> bool:
        """Refresh the heartbeat of this worker's `calling` mark; False if the mark is no longer ours."""
        return self._update_if(
            job_id,
            UpdateExpression="SET #h = :t",
            ConditionExpression="#s = :calling AND #k = :token",
            ExpressionAttributeNames={"#s": "status", "#h": CALL_HEARTBEAT_ATTRIBUTE, "#k": CALL_TOKEN_ATTRIBUTE},
            ExpressionAttributeValues={":t": {"N": str(now_ms())}, ":calling": {"S": CALLING},
                                       ":token": {"S": mark.token}},
        )

    def end_failed_call(self, job_id: str) -> None:
        """The call failed and the worker lives to retry it: `queued` again, so the retry is not taken
        for a call cut short by a crash. (A job already answered or failed is left as it is.)"""
        self._update_if(
            job_id,
            UpdateExpression="SET #s = :queued REMOVE #c, #h, #x",
            ConditionExpression="#s = :calling",
            ExpressionAttributeNames={"#s": "status", "#c": CALL_STARTED_ATTRIBUTE, "#h": CALL_HEARTBEAT_ATTRIBUTE,
                                      "#x": CUT_IN_A_ROW_ATTRIBUTE},
            ExpressionAttributeValues={":queued": {"S": QUEUED}, ":calling": {"S": CALLING}},
        )

    def retry_failed(self, job_id: str, user_id: str) -> int | None:
        """A person's retry: their failed job `queued` again, once (of two retries at once, one moves
        it); the job's retries so far, this one included, or None if it is not that user's failed job.
        The failure's detail and the last call's marks go: the next call starts afresh (its attempt
        number goes on counting, so its tokens replace any earlier text on the page). A retry of this
        very write (botocore's, its reply lost) is refused, and tells by its token that it moved it."""
        token = uuid.uuid4().hex
        try:
            reply = self._db.update_item(
                TableName=self._table, Key={JOBS_PARTITION_KEY: {"S": job_id}},
                UpdateExpression=("SET #s = :queued, #r = :t, #k = :token REMOVE detail, finishedAtMs, #c, #h, #x "
                                  "ADD #n :one"),
                ConditionExpression="#s = :failed AND #u = :user",
                ExpressionAttributeNames={"#s": "status", "#u": "userId", "#r": RETRIED_AT_ATTRIBUTE,
                                          "#n": RETRIES_ATTRIBUTE, "#c": CALL_STARTED_ATTRIBUTE,
                                          "#h": CALL_HEARTBEAT_ATTRIBUTE, "#x": CUT_IN_A_ROW_ATTRIBUTE,
                                          "#k": RETRY_TOKEN_ATTRIBUTE},
                ExpressionAttributeValues={":queued": {"S": QUEUED}, ":failed": {"S": FAILED},
                                           ":user": {"S": user_id}, ":t": {"N": str(now_ms())},
                                           ":token": {"S": token}, ":one": {"N": "1"}},
                ReturnValues="UPDATED_NEW", ReturnValuesOnConditionCheckFailure="ALL_OLD")
        except self._db.exceptions.ConditionalCheckFailedException as refused:
            record = plain(refused.response.get("Item") or {})
            if record.get(RETRY_TOKEN_ATTRIBUTE) == token:  # this write, landed before its retry
                return int(record[RETRIES_ATTRIBUTE])
            return None
        return int(reply["Attributes"][RETRIES_ATTRIBUTE]["N"])

    def _transact(self, writes: list[dict], job_index: int) -> dict | None:
        """Write all of `writes` in one transaction; None if it went through, else the job's row as
        it was when the condition on `writes[job_index]` (the job's) refused it (an empty dict when
        the row has none to return)."""
        try:
            self._db.transact_write_items(TransactItems=writes)
            return None
        except self._db.exceptions.TransactionCanceledException as cancelled:
            reasons = cancelled.response.get("CancellationReasons") or []
            mine = reasons[job_index] if len(reasons) > job_index else {}
            if mine.get("Code") != "ConditionalCheckFailed":
                raise
            return plain(mine.get("Item") or {})

    def _update_if(self, job_id: str, **update) -> bool:
        """One conditional update of the job's row; False if its condition did not hold."""
        try:
            self._db.update_item(TableName=self._table, Key={JOBS_PARTITION_KEY: {"S": job_id}}, **update)
            return True
        except self._db.exceptions.ConditionalCheckFailedException:
            return False
