"""Shared fixtures: a real redis-server and a real moto server for the whole session, and a fresh set
of queue + DLQ + tables per test, so tests never see each other's data."""
from __future__ import annotations

import os

import pytest

from tests.support.aws_resources import create_resources
from tests.support.servers import MotoServer, RedisServer


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
    """A fresh queue, DLQ and tables in the emulator (and its user pool), and a flushed Redis, for one test."""
    import redis as redis_lib

    redis_lib.Redis.from_url(redis_server.url).flushall()
    return create_resources(redis_url=redis_server.url)


@pytest.fixture
def settings(resources):
    return resources.settings


@pytest.fixture(scope="session")
def local_deployment():
    """The `local` target really deployed with cdklocal to a fresh moto server (localhost:4566, or a
    free port when something already listens there), shared by every test that needs it."""
    from local_runtime.discovery import runtime_environment
    from local_runtime.emulator import deploy_local, ensure_emulator, is_answering, endpoint_for
    from tests.support.servers import free_port

    port = 4566 if not is_answering(endpoint_for(4566)) else free_port()
    endpoint, stop = ensure_emulator(port)
    try:
        deploy_local(endpoint, "dev", log=lambda line: None)
        yield LocalDeployment(endpoint=endpoint, environment=runtime_environment(endpoint, "dev"))
    finally:
        stop()


class LocalDeployment:
    def __init__(self, endpoint: str, environment: dict[str, str]):
        self.endpoint = endpoint
        # The environment the deployed functions run with (queue URLs, table names, settings).
        self.environment = environment

    def client(self, service: str):
        import boto3

        from local_runtime.emulator import aws_environment

        env = aws_environment(self.endpoint)
        return boto3.client(service, endpoint_url=self.endpoint, region_name=env["AWS_REGION"],
                            aws_access_key_id="test", aws_secret_access_key="test")
