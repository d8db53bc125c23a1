"""The Redis client with the architecture's 500 ms bound on connecting and on every command.

No retries on a timeout: a caller that hears nothing within the bound answers with a controlled
error (functions) or falls back (worker), so nothing hangs behind Redis.
"""
from __future__ import annotations

import asyncio

import redis
import redis.asyncio

from cloudia import aws
from cloudia.once import built_once
from cloudia.settings import Settings


class AuthTokenFromSecret(redis.CredentialProvider):
    """The AUTH token (ElastiCache on AWS), read for each new connection through `aws.secret_value`'s
    cache: the token rotates every 30 days (the previous one stays valid one period), and a connection
    made after a rotation must use the new one, however long the process has lived."""

    def __init__(self, secret_arn: str):
        self.secret_arn = secret_arn

    def get_credentials(self) -> tuple[str]:
        return (aws.secret_value(self.secret_arn),)

    async def get_credentials_async(self) -> tuple[str]:
        # Off the event loop: a cache miss is a Secrets Manager call.
        return await asyncio.to_thread(self.get_credentials)


# Connections a client may open at once: redis-py's default, plenty for a function's one thread. A
# caller with more at once (the worker's threads and jobs) asks for as many: past the pool a call
# fails at once ("Too many connections").
POOL_CONNECTIONS = 100


@built_once(maxsize=8)
def _client(url: str, secret_arn: str, timeout_ms: int, max_connections: int) -> redis.Redis:
    return redis.Redis.from_url(url, **_options_for(secret_arn, timeout_ms, max_connections))


def _options_for(secret_arn: str, timeout_ms: int, max_connections: int) -> dict:
    """One set of options for both clients; a local redis-server has no AUTH token."""
    seconds = timeout_ms / 1000
    return dict(credential_provider=AuthTokenFromSecret(secret_arn) if secret_arn else None,
                socket_timeout=seconds, socket_connect_timeout=seconds, max_connections=max_connections,
                retry_on_timeout=False, health_check_interval=30, decode_responses=True)


def client(settings: Settings, max_connections: int = POOL_CONNECTIONS) -> redis.Redis:
    return _client(settings.redis_url, settings.redis_auth_secret_arn, settings.resilience.redis_timeout_ms,
                   max_connections)


def async_client(settings: Settings, max_connections: int = POOL_CONNECTIONS) -> redis.asyncio.Redis:
    """The same client for an event loop (not cached: its connections belong to the loop that uses it)."""
    return redis.asyncio.Redis.from_url(settings.redis_url,
                                        **_options_for(settings.redis_auth_secret_arn,
                                                       settings.resilience.redis_timeout_ms, max_connections))
