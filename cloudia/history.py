"""Conversation history in DynamoDB: every user message and every answer, in time order.

It is the durable record behind `resume`: an answer whose connection was gone stays here. A
`history`/`resume` reply is one page of it (`fit_page`): at most `HISTORY_PAGE_SIZE` entries and
`HISTORY_PAGE_MAX_BYTES` as sent, with a `next` cursor (the last entry's position) while more follow.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from cloudia import protocol
from cloudia.jobs import now_ms
from cloudia.schema import HISTORY_PARTITION_KEY, HISTORY_SORT_KEY, HISTORY_TTL_ATTRIBUTE, conversation_key
from cloudia.settings import Resilience, Settings

USER, ASSISTANT, ERROR = "user", "assistant", "error"

# A page of the history holds at most this many entries ...
HISTORY_PAGE_SIZE = 100
# ... and at most this many bytes as sent (UTF-8 JSON, the envelope and its `next` included). API
# Gateway delivers no message over 128 KB (a route reply over it becomes an "Internal server error"
# frame): 96 KiB keeps a quarter of it spare. Every entry fits alone: a message is at most
# `max_message_chars` (8,000 characters, 32 KB), an answer `llm_max_tokens` (1,024 tokens: a few KB);
# one that does not (a setting raised far) is cut to fit, and says so (`truncated`).
HISTORY_PAGE_MAX_BYTES = 96 * 1024
# The longest position a cursor can name: 13 digits, '#', a job id of 128, '#', a role.
_LONGEST_CURSOR = "0" * 13 + "#" + "j" * 128 + "#" + "r" * 16


@dataclass(frozen=True)
class Entry:
    job_id: str
    role: str
    message: str
    created_at_ms: int
    # Cut to fit a history page (see HISTORY_PAGE_MAX_BYTES); the stored entry is whole.
    truncated: bool = False

    @property
    def position(self) -> str:
        """Where the entry is in its conversation (its sort key): the cursor of a page ending with it."""
        return _sort_key(self.created_at_ms, self.job_id, self.role)

    def as_frame(self) -> dict:
        frame = {"jobId": self.job_id, "role": self.role, "message": self.message, "at": self.created_at_ms}
        if self.truncated:
            frame["truncated"] = True
        return frame


class HistoryStore:
    def __init__(self, dynamodb, table_name: str, resilience: Resilience):
        self._db = dynamodb
        self._table = table_name
        self._ttl_s = resilience.history_ttl_days * 86400

    @classmethod
    def of(cls, settings: Settings, dynamodb) -> "HistoryStore":
        """The history table the settings name, through this DynamoDB client."""
        return cls(dynamodb, settings.history_table, settings.resilience)

    def append(self, user_id: str, conversation_id: str, job_id: str, role: str, message: str,
               created_at_ms: int | None = None) -> Entry:
        """Idempotent: the same (job, role) at the same time writes the same item."""
        at = created_at_ms if created_at_ms is not None else now_ms()
        self._db.put_item(**self.put_request(user_id, conversation_id, job_id, role, message, at))
        return Entry(job_id, role, message, at)

    def put_request(self, user_id: str, conversation_id: str, job_id: str, role: str, message: str,
                    created_at_ms: int | None = None) -> dict:
        """The `PutItem` of an entry, as `append` sends it and as a transaction with the job's state
        takes it (`JobStore.create`, `JobStore.finish`)."""
        at = created_at_ms if created_at_ms is not None else now_ms()
        return {
            "TableName": self._table,
            "Item": {
                HISTORY_PARTITION_KEY: {"S": conversation_key(user_id, conversation_id)},
                HISTORY_SORT_KEY: {"S": _sort_key(at, job_id, role)},
                "jobId": {"S": job_id},
                "role": {"S": role},
                "message": {"S": message},
                "createdAtMs": {"N": str(at)},
                HISTORY_TTL_ATTRIBUTE: {"N": str(at // 1000 + self._ttl_s)},
            },
        }

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

    def page(self, user_id: str, conversation_id: str, since_ms: int = 0, after: str | None = None,
             limit: int = HISTORY_PAGE_SIZE) -> tuple[list[Entry], bool]:
        """Up to `limit` entries after the position `after` (a page's cursor), else after `since_ms`,
        oldest first; and whether more may follow (DynamoDB stopped at `limit` or at its 1 MB)."""
        response = self._db.query(
            TableName=self._table,
            KeyConditionExpression="#pk = :pk AND #sk > :after",
            ExpressionAttributeNames={"#pk": HISTORY_PARTITION_KEY, "#sk": HISTORY_SORT_KEY},
            ExpressionAttributeValues={
                ":pk": {"S": conversation_key(user_id, conversation_id)},
                ":after": {"S": after if after is not None else f"{since_ms:013d}#~"},
            },
            Limit=limit,
        )
        return [_entry(item) for item in response.get("Items", [])], "LastEvaluatedKey" in response

    def entry(self, user_id: str, conversation_id: str, created_at_ms: int, job_id: str, role: str) -> Entry | None:
        """One entry by its exact position (a Query, like every read of this table), or None."""
        response = self._db.query(
            TableName=self._table,
            KeyConditionExpression="#pk = :pk AND #sk = :sk",
            ExpressionAttributeNames={"#pk": HISTORY_PARTITION_KEY, "#sk": HISTORY_SORT_KEY},
            ExpressionAttributeValues={
                ":pk": {"S": conversation_key(user_id, conversation_id)},
                ":sk": {"S": _sort_key(created_at_ms, job_id, role)},
            },
            ConsistentRead=True,
        )
        items = response.get("Items", [])
        return _entry(items[0]) if items else None

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


def fit_page(conversation_id: str, entries: list[Entry], more: bool,
             max_bytes: int = HISTORY_PAGE_MAX_BYTES) -> dict:
    """The `history` event of the first of `entries` (oldest first) that fit in `max_bytes` as sent,
    with `next` (the last one's position) when some were left out or `more` may follow. The first
    entry is always in: cut to fit (`truncated`) if it could not be sent whole even alone."""
    envelope = _size(protocol.history(conversation_id, [], next_cursor=_LONGEST_CURSOR))
    messages: list[dict] = []
    used = envelope
    for entry in entries:
        frame = entry.as_frame()
        size = _size(frame) + 1  # and the comma before it
        if used + size > max_bytes:
            if messages:
                break
            frame = _cut_to_fit(entry, max_bytes - envelope - 1).as_frame()
            size = _size(frame) + 1
        messages.append(frame)
        used += size
    left_out = len(messages) < len(entries)
    cursor = entries[len(messages) - 1].position if messages and (left_out or more) else None
    return protocol.history(conversation_id, messages, next_cursor=cursor)


def _size(frame: dict) -> int:
    """Bytes as sent: the protocol's JSON, in UTF-8."""
    return len(protocol.dumps(frame).encode("utf-8", "surrogatepass"))


def _cut_to_fit(entry: Entry, max_bytes: int) -> Entry:
    """The entry with the longest start of its message whose frame takes at most `max_bytes`."""
    keep_lo, keep_hi = 0, len(entry.message)
    while keep_lo < keep_hi:
        middle = (keep_lo + keep_hi + 1) // 2
        if _size(replace(entry, message=entry.message[:middle], truncated=True).as_frame()) <= max_bytes:
            keep_lo = middle
        else:
            keep_hi = middle - 1
    return replace(entry, message=entry.message[:keep_lo], truncated=True)


def _sort_key(created_at_ms: int, job_id: str, role: str) -> str:
    return f"{created_at_ms:013d}#{job_id}#{role}"


def _entry(item: dict) -> Entry:
    return Entry(
        job_id=item["jobId"]["S"],
        role=item["role"]["S"],
        message=item["message"]["S"],
        created_at_ms=int(item["createdAtMs"]["N"]),
    )
