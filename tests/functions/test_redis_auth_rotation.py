"""The Redis AUTH token is read from Secrets Manager for each new connection, through an hour's cache:
after a rotation, a new connection of a long-lived process uses the new token."""
from __future__ import annotations

import asyncio
import dataclasses
import uuid

import boto3
import redis as redis_lib

from cloudia import aws, redis_client


def test_a_connection_made_after_a_rotation_uses_the_new_token(settings, own_redis):
    # GIVEN a Redis that wants token-1, and the secret holding it
    admin = redis_lib.Redis.from_url(own_redis.url)
    admin.config_set("requirepass", "token-1")
    secrets = boto3.client("secretsmanager")
    arn = secrets.create_secret(Name=f"redis-auth-{uuid.uuid4().hex[:8]}", SecretString="token-1")["ARN"]
    deployment = dataclasses.replace(settings, redis_url=own_redis.url, redis_auth_secret_arn=arn)
    client = redis_client.client(deployment)
    assert client.ping()

    # WHEN the token rotates (Redis wants token-2), and the cached secret has aged out
    secrets.put_secret_value(SecretId=arn, SecretString="token-2")
    redis_lib.Redis.from_url(own_redis.url, password="token-1").config_set("requirepass", "token-2")
    aws._secrets(2000).clear_cache()
    client.connection_pool.disconnect()

    # THEN the same client's new connections authenticate with the new token, sync and asyncio alike
    assert client.ping()

    async def ping_async() -> bool:
        async_client = redis_client.async_client(deployment)
        try:
            return await async_client.ping()
        finally:
            await async_client.aclose()

    assert asyncio.run(ping_async())
