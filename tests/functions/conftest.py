"""Harness for the WebSocket functions: API Gateway WebSocket events as AWS sends them, a fake
Lambda context, and the handler modules loaded against a test's own settings (real Redis, moto)."""
from __future__ import annotations

import dataclasses
import itertools
import json
import os
import time
import uuid

import boto3
import pytest

from cloudia import chat, redis_client
from cloudia.settings import Settings, resilience_env
from cloudia.routes import HANDLERS, ROUTES
from local_runtime.lambda_runtime import LambdaContext, load_function
from local_runtime.identity import LocalUserPool
from tests.support.cognito_tokens import mint

# Powertools outside Lambda: a metrics namespace for the EMF flush, no X-Ray daemon to talk to.
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "CloudIaTest")
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "cloudia-functions")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("LOG_LEVEL", "INFO")

API_ID, STAGE, REGION, ACCOUNT = "a1b2c3d4e5", "test", "us-east-1", "123456789012"
_request_ids = itertools.count(1)


def lambda_context() -> LambdaContext:
    """The context of a test's invocation: one function, Lambda's timeout and memory."""
    return LambdaContext(function_name="cloudia-websocket-test")


def request_context(route_key: str, connection_id: str, event_type: str, authorizer: dict | None) -> dict:
    now_ms = int(time.time() * 1000)
    context = {
        "routeKey": route_key,
        "eventType": event_type,
        "messageDirection": "IN",
        "connectionId": connection_id,
        "connectedAt": now_ms,
        "requestTimeEpoch": now_ms,
        "requestId": f"req-{next(_request_ids)}",
        "extendedRequestId": f"ext-{uuid.uuid4().hex[:12]}",
        "messageId": f"msg-{uuid.uuid4().hex[:12]}" if event_type == "MESSAGE" else None,
        "domainName": f"{API_ID}.execute-api.{REGION}.amazonaws.com",
        "stage": STAGE,
        "apiId": API_ID,
        "identity": {"sourceIp": "127.0.0.1", "userAgent": "pytest"},
    }
    if authorizer is not None:
        context["authorizer"] = {"principalId": authorizer.get("userId"), **authorizer}
    return {k: v for k, v in context.items() if v is not None}


def connect_event(connection_id: str, token: str | None = None, authorizer: dict | None = None) -> dict:
    return {
        "headers": {"Host": f"{API_ID}.execute-api.{REGION}.amazonaws.com", "Sec-WebSocket-Version": "13"},
        "multiValueHeaders": {},
        "queryStringParameters": {"token": token} if token is not None else None,
        "requestContext": request_context("$connect", connection_id, "CONNECT", authorizer),
        "isBase64Encoded": False,
    }


def authorizer_event(connection_id: str, token: str | None) -> dict:
    return {
        "type": "REQUEST",
        "methodArn": f"arn:aws:execute-api:{REGION}:{ACCOUNT}:{API_ID}/{STAGE}/$connect",
        **connect_event(connection_id, token),
    }


def disconnect_event(connection_id: str) -> dict:
    return {
        "headers": {"Host": f"{API_ID}.execute-api.{REGION}.amazonaws.com"},
        "requestContext": {**request_context("$disconnect", connection_id, "DISCONNECT", None),
                           "disconnectStatusCode": 1001, "disconnectReason": "Going away"},
        "isBase64Encoded": False,
    }


def message_event(route_key: str, connection_id: str, body, authorizer: dict | None = None,
                  base64: bool = False) -> dict:
    if not isinstance(body, (str, type(None))):
        body = json.dumps(body)
    return {
        "requestContext": request_context(route_key, connection_id, "MESSAGE", authorizer),
        "body": body,
        "isBase64Encoded": base64,
    }


def settings_env(settings: Settings) -> dict[str, str]:
    env = {f.name.upper(): str(getattr(settings, f.name))
           for f in dataclasses.fields(settings) if f.name != "resilience"}
    return {**env, **resilience_env(settings.resilience)}


def body_of(response: dict) -> dict:
    assert isinstance(response["statusCode"], int)
    return json.loads(response["body"])


class Functions:
    """The handler modules as one deployment with `settings` sees them, plus ways to look inside."""

    def __init__(self, settings: Settings, modules: dict):
        self.settings = settings
        self.modules = modules
        self.redis = redis_client.client(settings)
        self.sqs = boto3.client("sqs")
        self.dynamodb = boto3.client("dynamodb")

    def __getattr__(self, name):
        try:
            return self.modules[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def service(self):
        return chat.service()

    @property
    def user_pool(self) -> LocalUserPool:
        return LocalUserPool(self.sqs.meta.endpoint_url, self.settings.user_pool_id, self.settings.user_pool_client_id)

    def token(self, user_id: str, ttl_s: int = 3600) -> str:
        """An access token of the deployment's pool for `user_id` (its `sub`)."""
        return mint(self.user_pool, user_id, ttl_s=ttl_s)

    def open_connection(self, user_id: str, connection_id: str | None = None) -> str:
        connection_id = connection_id or f"conn-{uuid.uuid4().hex[:12]}="
        response = self.modules["connect"].handler(connect_event(connection_id, self.token(user_id)),
                                                   lambda_context())
        assert response["statusCode"] == 200, response
        return connection_id

    def send(self, connection_id: str, frame, route_key: str = "sendMessage", **kwargs) -> dict:
        module = self.modules[ROUTES.get(route_key, "default")]
        return module.handler(message_event(route_key, connection_id, frame, **kwargs), lambda_context())

    def queued_jobs(self) -> list[dict]:
        """Every message on the jobs queue (received and left to reappear after the test)."""
        bodies = []
        while True:
            got = self.sqs.receive_message(QueueUrl=self.settings.jobs_queue_url, MaxNumberOfMessages=10,
                                           VisibilityTimeout=30, WaitTimeSeconds=0).get("Messages", [])
            if not got:
                return bodies
            bodies.extend(json.loads(m["Body"]) for m in got)

    def job_rows(self) -> list[dict]:
        items = self.dynamodb.scan(TableName=self.settings.jobs_table)["Items"]
        return [{k: next(iter(v.values())) for k, v in item.items()} for item in items]

    def history_rows(self) -> list[dict]:
        items = self.dynamodb.scan(TableName=self.settings.history_table)["Items"]
        return [{k: next(iter(v.values())) for k, v in item.items()} for item in items]


def load_functions(settings: Settings, monkeypatch) -> Functions:
    """Set the deployment's environment, then (re)load every handler as a cold start would."""
    for key, value in settings_env(settings).items():
        monkeypatch.setenv(key, value)
    chat.reload()
    modules = {name: load_function(name, fresh=True) for name in HANDLERS}
    return Functions(settings, modules)


@pytest.fixture
def functions(settings, monkeypatch) -> Functions:
    loaded = load_functions(settings, monkeypatch)
    yield loaded
    chat.reload()


@pytest.fixture
def functions_with(settings, monkeypatch):
    """Handlers loaded with some settings changed: `functions_with(redis_url=..., resilience=...)`."""
    def load(**changes) -> Functions:
        return load_functions(dataclasses.replace(settings, **changes), monkeypatch)
    yield load
    chat.reload()
