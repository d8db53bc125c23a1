"""An answer the LLM has finished, kept in Redis from that moment until the job reads `answered`.

A provider bills an answer when it finishes writing it. A worker killed between that moment and the
answer stored in DynamoDB (two writes, tens of milliseconds on a loaded table) would leave its job
`calling`, and the recall would pay the whole answer again. So the worker keeps the finished text in
Redis as soon as the provider says the answer is complete, and a redelivery that finds it stores it
instead of calling again.

The keep runs on the worker's event loop with Redis's asyncio client: one SET sent in the same step
that read the stream's end, so it waits on no thread pool (a queue behind busy I/O threads is a window
in which a kill pays twice). What is left: an answer whose end the provider wrote but the worker never
read (still in its socket when it was killed) is, for the worker, a cut call, recalled once; and a
Redis lost at that very moment.
"""
from __future__ import annotations

import logging
from typing import cast

import redis
import redis.asyncio

from cloudia.schema import completed_answer_key

logger = logging.getLogger(__name__)
# Longer than any job waits between a crash and its redelivery (a liveness window, a backoff).
KEEP_S = 24 * 3600


class CompletedAnswers:
    def __init__(self, client: redis.asyncio.Redis, ttl_s: int = KEEP_S):
        self._redis = client
        self._ttl_s = ttl_s

    async def keep(self, job_id: str, text: str) -> None:
        try:
            await self._redis.set(completed_answer_key(job_id), text, ex=self._ttl_s)
        except (redis.RedisError, OSError) as error:
            logger.warning("could not keep a completed answer (Redis): %s", error)

    async def get(self, job_id: str) -> str | None:
        try:
            # The client decodes responses (cloudia/redis_client.py): a str or None.
            return cast("str | None", await self._redis.get(completed_answer_key(job_id)))
        except (redis.RedisError, OSError):
            return None

    async def aclose(self) -> None:
        await self._redis.aclose()
