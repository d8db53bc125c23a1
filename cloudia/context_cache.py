"""The conversation context the LLM sees, cached in Redis with a TTL in front of the history table.

A cache miss or an unreachable Redis is not an error: the context is rebuilt from DynamoDB
(`HistoryStore.latest`). The cache holds at most `context_max_messages` messages, oldest first.
`job_context` builds a job's context, the one way the worker sends it and `sendMessage` prices it.
"""
from __future__ import annotations

import json
import logging

import redis

from cloudia.history import ASSISTANT, USER, HistoryStore
from cloudia.jobs import Job
from cloudia.schema import context_key

logger = logging.getLogger(__name__)


class ContextCache:
    def __init__(self, client: redis.Redis, ttl_s: int, max_messages: int):
        self._redis = client
        self._ttl_s = ttl_s
        self._max = max_messages

    def get(self, user_id: str, conversation_id: str) -> list[dict[str, str]] | None:
        """The cached messages ({"role", "content", "jobId"}), or None on a miss or a Redis failure."""
        try:
            raw = self._redis.lrange(context_key(user_id, conversation_id), 0, -1)
        except (redis.RedisError, OSError) as error:
            logger.warning("context cache unreachable, reading history instead: %s", error)
            return None
        if not raw:
            return None
        return [json.loads(item) for item in raw]

    def put(self, user_id: str, conversation_id: str, messages: list[dict[str, str]]) -> bool:
        """Replace the cached context with the last `max_messages` of `messages`; False if Redis failed."""
        key = context_key(user_id, conversation_id)
        kept = messages[-self._max:]
        try:
            pipe = self._redis.pipeline(transaction=True)
            pipe.delete(key)
            if kept:
                pipe.rpush(key, *[json.dumps(m, ensure_ascii=False) for m in kept])
                pipe.expire(key, self._ttl_s)
            pipe.execute()
            return True
        except (redis.RedisError, OSError) as error:
            logger.warning("context cache not refreshed: %s", error)
            return False


def job_context(job: Job, cache: ContextCache, history: HistoryStore, max_messages: int) -> list[dict[str, str]]:
    """The messages an LLM call for the job sends: the conversation's last ones (the cache, else the
    history), at most `max_messages` with the job's own user message last, once, and the user first
    (providers expect the user to speak first)."""
    messages = cache.get(job.user_id, job.conversation_id)
    if messages is None:
        entries = history.latest(job.user_id, job.conversation_id, max_messages + 1)
        messages = [{"role": e.role, "content": e.message, "jobId": e.job_id}
                    for e in entries if e.role in (USER, ASSISTANT)]
    # The sender stored this message in the history already; keep exactly one copy, last.
    messages = [m for m in messages if not (m.get("jobId") == job.job_id and m.get("role") == USER)]
    messages = messages[-(max_messages - 1):] if max_messages > 1 else []
    while messages and messages[0]["role"] != USER:
        messages.pop(0)
    return messages + [{"role": USER, "content": job.message, "jobId": job.job_id}]
