"""The Redis client with the architecture's 500 ms bound on connecting and on every command.

No retries on a timeout: a caller that hears nothing within the bound answers with a controlled
error (functions) or falls back (worker), so nothing hangs behind Redis.
"""
from __future__ import annotations

import functools

import redis
import redis.asyncio

from cloudia import aws
from cloudia.settings import Settings


@functools.lru_cache(maxsize=8)
def _client(url: str, password: str | None, timeout_ms: int) -> redis.Redis:
    return redis.Redis.from_url(url, **_options_for(password, timeout_ms))


def _options_for(password: str | None, timeout_ms: int) -> dict:
    """One set of options for both clients."""
    seconds = timeout_ms / 1000
    return dict(password=password, socket_timeout=seconds, socket_connect_timeout=seconds,
                retry_on_timeout=False, health_check_interval=30, decode_responses=True)


def client(settings: Settings) -> redis.Redis:
    # The AUTH token (ElastiCache on AWS); a local redis-server has none.
    password = aws.given_or_secret("", settings.redis_auth_secret_arn)
    return _client(settings.redis_url, password, settings.resilience.redis_timeout_ms)


def async_client(settings: Settings) -> redis.asyncio.Redis:
    """The same client for an event loop (not cached: its connections belong to the loop that uses it)."""
    password = aws.given_or_secret("", settings.redis_auth_secret_arn)
    return redis.asyncio.Redis.from_url(settings.redis_url,
                                        **_options_for(password, settings.resilience.redis_timeout_ms))
