"""A moto server of this folder's own (its pools never meet other tests'), reset before each test,
holding the pool the CLI finds by name and a public app client as the stacks create it."""
from __future__ import annotations

from dataclasses import dataclass

import boto3
import pytest

from cloudia.auth import user_pool_name
from tests.support.servers import MotoServer

REGION = "us-east-1"


@pytest.fixture(scope="package")
def cognito_server():
    server = MotoServer().start()
    yield server
    server.stop()


@dataclass
class LocalPool:
    endpoint: str
    pool_id: str
    client_id: str
    cognito: object  # a cognito-idp client on the emulator


def make_pool(cognito) -> str:
    return cognito.create_user_pool(PoolName=user_pool_name("local", "dev"), Policies={"PasswordPolicy": {
        "MinimumLength": 12, "RequireUppercase": True, "RequireLowercase": True,
        "RequireNumbers": True, "RequireSymbols": True}})["UserPool"]["Id"]


@pytest.fixture
def pool(cognito_server, monkeypatch) -> LocalPool:
    cognito_server.reset()
    # Dummy credentials only, and nothing that could point the CLI at a real account or another pool.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_ENDPOINT_URL",
                 "AWS_ENDPOINT_URL_COGNITO_IDP", "USER_POOL_ID"):
        monkeypatch.delenv(name, raising=False)
    cognito = boto3.client("cognito-idp", endpoint_url=cognito_server.endpoint, region_name=REGION)
    pool_id = make_pool(cognito)
    client_id = cognito.create_user_pool_client(
        UserPoolId=pool_id, ClientName="cloudia-web", GenerateSecret=False,
        ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
    )["UserPoolClient"]["ClientId"]
    return LocalPool(cognito_server.endpoint, pool_id, client_id, cognito)
