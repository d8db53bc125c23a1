"""Shared fixtures: a real redis-server and a real moto server for the whole session, and a fresh set
of queue + DLQ + tables per test, so tests never see each other's data."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.aws_resources import create_resources  # noqa: E402
from tests.support.servers import MotoServer, RedisServer  # noqa: E402


@pytest.fixture(scope="session")
def moto_server():
    server = MotoServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def aws_env(moto_server):
    """Point boto3 at the emulator with dummy credentials; never at a real account."""
    saved = dict(os.environ)
    os.environ.update({
        "AWS_ENDPOINT_URL": moto_server.endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    })
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        os.environ.pop(key, None)
    yield moto_server.endpoint
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def redis_server():
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def own_redis():
    """A redis-server of the test's own, which it may stop and restart."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def resources(aws_env, redis_server):
    """A fresh queue, DLQ and tables in the emulator, and a flushed Redis, for one test."""
    import redis as redis_lib

    redis_lib.Redis.from_url(redis_server.url).flushall()
    return create_resources(redis_url=redis_server.url, auth_secret="test-signing-secret")


@pytest.fixture
def settings(resources):
    return resources.settings
