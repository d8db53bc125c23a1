"""Key schemas of the DynamoDB tables and Redis keys: one place, read by the stacks that create the
tables, by the code that uses them and by the tests that stand them up in the emulator."""
from __future__ import annotations

# History: one item per message of a conversation, ordered by time, so `resume` is one Query.
#   pk = "{userId}#{conversationId}"   sk = "{createdAtMs:013d}#{jobId}#{role}"
HISTORY_PARTITION_KEY = "pk"
HISTORY_SORT_KEY = "sk"
HISTORY_TTL_ATTRIBUTE = "expiresAt"

# Jobs: one item per job, its state machine guarded by conditional writes.
JOBS_PARTITION_KEY = "jobId"
JOBS_TTL_ATTRIBUTE = "expiresAt"

TABLES = {
    # logical name: (partition key, sort key or None, TTL attribute)
    "history": (HISTORY_PARTITION_KEY, HISTORY_SORT_KEY, HISTORY_TTL_ATTRIBUTE),
    "jobs": (JOBS_PARTITION_KEY, None, JOBS_TTL_ATTRIBUTE),
}


def conversation_key(user_id: str, conversation_id: str) -> str:
    return f"{user_id}#{conversation_id}"


# Redis keys
def connection_key(connection_id: str) -> str:
    return f"conn:{connection_id}"


def user_connections_key(user_id: str) -> str:
    return f"user:{user_id}:conns"


def connection_tombstone_key(connection_id: str) -> str:
    """Left by `$disconnect` for a while: the connection may not be registered again."""
    return f"gone:{connection_id}"


def context_key(user_id: str, conversation_id: str) -> str:
    return f"ctx:{conversation_key(user_id, conversation_id)}"


def rate_key(user_id: str, minute: int) -> str:
    return f"rate:{user_id}:{minute}"


def frame_rate_key(user_id: str, minute: int) -> str:
    """The user's `ping` and `history` frames in one UTC minute."""
    return f"frames:{user_id}:{minute}"


def budget_key(user_id: str, day: str) -> str:
    return f"budget:{user_id}:{day}"


def budget_hold_key(job_id: str) -> str:
    """What a job holds of its user's budget from its admission until the worker settles it."""
    return f"hold:job:{job_id}"


def breaker_key(name: str) -> str:
    return f"breaker:{name}"


def job_lease_key(job_id: str) -> str:
    return f"lease:job:{job_id}"


# Powertools idempotency records of accepted messages, in Redis: "{prefix}#{hash of the key}", one key
# space whichever function accepts the message (Powertools would otherwise put its name there).
IDEMPOTENCY_KEY_PREFIX = "idem:sendMessage"


def completed_answer_key(job_id: str) -> str:
    return f"answer:job:{job_id}"
