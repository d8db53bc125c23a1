"""A short lease on a job while one worker works on it, in Redis.

SQS delivers at least once: a second copy of a message, or the same message after its visibility
timeout ran out during a slow attempt, can reach another worker while the first is still calling the
LLM. The jobs table's ANSWERED state stops a redelivery *after* the answer; this lease stops one
*during* the attempt, so the LLM is not paid twice. The lease is short (`job_liveness_s`) and its
holder renews it on every heartbeat, so it lasts as long as the answer and no longer than its worker.
If Redis is unreachable the lease is granted
(availability first: the worst case is the rare duplicate call the lease exists to avoid).
"""
from __future__ import annotations

import logging
import uuid

import redis

from cloudia import lua
from cloudia.schema import job_lease_key

logger = logging.getLogger(__name__)

_RELEASE = lua.source("job_lease_release")
_RENEW = lua.source("job_lease_renew")


class JobLeases:
    def __init__(self, client: redis.Redis, ttl_s: float):
        self._redis = client
        self._ttl_ms = int(ttl_s * 1000)
        self._release = client.register_script(_RELEASE)
        self._renew = client.register_script(_RENEW)

    def acquire(self, job_id: str) -> tuple[str | None, float]:
        """(token, 0) if this worker now holds the job; (None, seconds left) if another one does."""
        token = uuid.uuid4().hex
        try:
            if self._redis.set(job_lease_key(job_id), token, nx=True, px=self._ttl_ms):
                return token, 0.0
            remaining_ms = self._redis.pttl(job_lease_key(job_id))
            return None, max(0.0, remaining_ms / 1000)
        except (redis.RedisError, OSError) as error:
            logger.warning("job lease unavailable (Redis), going ahead: %s", error)
            return token, 0.0

    def renew(self, job_id: str, token: str) -> bool:
        """Extend the lease if it is still ours; False if it is not (or Redis cannot say)."""
        try:
            return bool(self._renew(keys=[job_lease_key(job_id)], args=[token, self._ttl_ms]))
        except (redis.RedisError, OSError):
            return False

    def release(self, job_id: str, token: str) -> None:
        """Drop the lease if it is still ours (it may have expired and been taken)."""
        try:
            self._release(keys=[job_lease_key(job_id)], args=[token])
        except (redis.RedisError, OSError):
            pass  # it expires by itself
