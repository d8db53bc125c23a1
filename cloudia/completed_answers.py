"""An answer the LLM has finished, kept in Redis from that moment until the job reads `answered`.

A provider bills an answer when it finishes writing it. A worker killed between that moment and the
answer stored in DynamoDB (two writes, tens of milliseconds on a loaded table) would leave its job
`calling`, and the recall would pay the whole answer again. So the worker keeps the finished text in
Redis as soon as the provider says the answer is complete (one SET, under a millisecond), and a
redelivery that finds it stores it instead of calling again. Best effort: with Redis lost at that
very moment, the recall pays again, the one case left.
"""
from __future__ import annotations

import logging

import redis

from cloudia.schema import completed_answer_key

logger = logging.getLogger(__name__)
# Longer than any job waits between a crash and its redelivery (a liveness window, a backoff).
KEEP_S = 24 * 3600


class CompletedAnswers:
    def __init__(self, client: redis.Redis, ttl_s: int = KEEP_S):
        self._redis = client
        self._ttl_s = ttl_s

    def keep(self, job_id: str, text: str) -> None:
        try:
            self._redis.set(completed_answer_key(job_id), text, ex=self._ttl_s)
        except (redis.RedisError, OSError) as error:
            logger.warning("could not keep a completed answer (Redis): %s", error)

    def get(self, job_id: str) -> str | None:
        try:
            return self._redis.get(completed_answer_key(job_id))
        except (redis.RedisError, OSError):
            return None
