"""Conversation history in DynamoDB: every user message and every answer, in time order.

It is the durable record behind `resume`: an answer whose connection was gone stays here.
"""
from __future__ import annotations

from dataclasses import dataclass

from cloudia.jobs import now_ms
from cloudia.schema import HISTORY_PARTITION_KEY, HISTORY_SORT_KEY, HISTORY_TTL_ATTRIBUTE, conversation_key
from cloudia.settings import Resilience

USER, ASSISTANT, ERROR = "user", "assistant", "error"


@dataclass(frozen=True)
class Entry:
    job_id: str
    role: str
    message: str
    created_at_ms: int

    def as_frame(self) -> dict:
        return {"jobId": self.job_id, "role": self.role, "message": self.message, "at": self.created_at_ms}


class HistoryStore:
    def __init__(self, dynamodb, table_name: str, resilience: Resilience):
        self._db = dynamodb
        self._table = table_name
        self._ttl_s = resilience.history_ttl_days * 86400

    def append(self, user_id: str, conversation_id: str, job_id: str, role: str, message: str,
               created_at_ms: int | None = None) -> Entry:
        """Idempotent: the same (job, role) at the same time writes the same item."""
        at = created_at_ms if created_at_ms is not None else now_ms()
        self._db.put_item(
            TableName=self._table,
            Item={
                HISTORY_PARTITION_KEY: {"S": conversation_key(user_id, conversation_id)},
                HISTORY_SORT_KEY: {"S": _sort_key(at, job_id, role)},
                "jobId": {"S": job_id},
                "role": {"S": role},
                "message": {"S": message},
                "createdAtMs": {"N": str(at)},
                HISTORY_TTL_ATTRIBUTE: {"N": str(at // 1000 + self._ttl_s)},
            },
        )
        return Entry(job_id, role, message, at)

    def remove(self, user_id: str, conversation_id: str, entry: Entry) -> None:
        """Take back an entry whose work never started (its job could not be queued)."""
        self._db.delete_item(
            TableName=self._table,
            Key={
                HISTORY_PARTITION_KEY: {"S": conversation_key(user_id, conversation_id)},
                HISTORY_SORT_KEY: {"S": _sort_key(entry.created_at_ms, entry.job_id, entry.role)},
            },
        )

    def since(self, user_id: str, conversation_id: str, since_ms: int = 0, limit: int = 100) -> list[Entry]:
        """Entries after `since_ms`, oldest first."""
        response = self._db.query(
            TableName=self._table,
            KeyConditionExpression="#pk = :pk AND #sk > :since",
            ExpressionAttributeNames={"#pk": HISTORY_PARTITION_KEY, "#sk": HISTORY_SORT_KEY},
            ExpressionAttributeValues={
                ":pk": {"S": conversation_key(user_id, conversation_id)},
                ":since": {"S": f"{since_ms:013d}#~"},
            },
            Limit=limit,
        )
        return [_entry(item) for item in response.get("Items", [])]

    def latest(self, user_id: str, conversation_id: str, count: int) -> list[Entry]:
        """The last `count` entries, oldest first (the LLM context when the cache is cold)."""
        response = self._db.query(
            TableName=self._table,
            KeyConditionExpression="#pk = :pk",
            ExpressionAttributeNames={"#pk": HISTORY_PARTITION_KEY},
            ExpressionAttributeValues={":pk": {"S": conversation_key(user_id, conversation_id)}},
            ScanIndexForward=False,
            Limit=count,
        )
        return [_entry(item) for item in reversed(response.get("Items", []))]


def _sort_key(created_at_ms: int, job_id: str, role: str) -> str:
    return f"{created_at_ms:013d}#{job_id}#{role}"


def _entry(item: dict) -> Entry:
    return Entry(
        job_id=item["jobId"]["S"],
        role=item["role"]["S"],
        message=item["message"]["S"],
        created_at_ms=int(item["createdAtMs"]["N"]),
    )
