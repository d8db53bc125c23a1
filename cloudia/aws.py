"""boto3 clients with the architecture's timeouts and bounded, backed-off retries.

botocore's `standard` retry mode retries throttling and transient errors with exponential backoff
and jitter; `max_attempts` keeps the total inside the caller's own deadline. The endpoint comes from
`AWS_ENDPOINT_URL` when set (the local emulator), which boto3 reads by itself.
"""
from __future__ import annotations

from typing import cast

import boto3
from aws_lambda_powertools.utilities import parameters
from botocore.config import Config

from cloudia.once import built_once
from cloudia.settings import Resilience

# Attempts per call, first try included: 2 keeps a DynamoDB call within ~2 x 1 s plus backoff.
MAX_ATTEMPTS = 2
# HTTP connections a client keeps for reuse: botocore's default, enough for a function's one thread.
# A caller with more threads calling at once (the worker) asks for one each; past the pool, every call
# opens a TCP connection of its own and drops it.
POOL_CONNECTIONS = 10
# A secret is fetched again after an hour: well inside the Redis AUTH token's 30-day rotation.
SECRET_MAX_AGE_S = 3600


def client_config(timeout_ms: int, max_attempts: int = MAX_ATTEMPTS,
                  max_connections: int = POOL_CONNECTIONS) -> Config:
    seconds = timeout_ms / 1000
    return Config(
        connect_timeout=seconds,
        read_timeout=seconds,
        retries={"mode": "standard", "max_attempts": max_attempts},
        max_pool_connections=max_connections,
    )


@built_once(maxsize=None)
def _client(service: str, timeout_ms: int, max_connections: int = POOL_CONNECTIONS):
    return boto3.session.Session().client(
        service, config=client_config(timeout_ms, max_connections=max_connections)
    )


def dynamodb(resilience: Resilience, max_connections: int = POOL_CONNECTIONS):
    return _client("dynamodb", resilience.dynamodb_timeout_ms, max_connections)


def sqs(resilience: Resilience, max_connections: int = POOL_CONNECTIONS):
    return _client("sqs", resilience.sqs_timeout_ms, max_connections)


def given_or_secret(value: str, arn: str) -> str | None:
    """A secret given directly (local configuration), else read by ARN (AWS), else None."""
    if value:
        return value
    return secret_value(arn) if arn else None


@built_once(maxsize=None)
def _secrets(timeout_ms: int) -> parameters.SecretsProvider:
    return parameters.SecretsProvider(boto3_client=_client("secretsmanager", timeout_ms))


def secret_value(arn: str, timeout_ms: int = 2000) -> str:
    """A Secrets Manager secret, cached for `SECRET_MAX_AGE_S` (Powertools' parameters): one fetch per
    cold start and per hour, so a long-lived process picks up a rotated secret."""
    # The SecretString as it is (no transform asked): Powertools types every shape a transform can give.
    return cast(str, _secrets(timeout_ms).get(arn, max_age=SECRET_MAX_AGE_S))


def sqs_long_poll(resilience: Resilience, wait_s: int = 20):
    """SQS client for long-polling receives: its read timeout must outlast the poll's wait."""
    return _client("sqs", wait_s * 1000 + resilience.sqs_timeout_ms)
