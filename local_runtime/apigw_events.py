"""What API Gateway's WebSocket API hands a Lambda function and reads back, as the local gateway
plays it: a route's event (its `requestContext` with the connection, the authorizer's context, the
request's headers and query on `$connect`), the route selection (`$request.body.action`), a route
reply's status and body, and ids and times in API Gateway's shapes."""
from __future__ import annotations

import base64
import datetime
import json
import secrets
import time
import uuid
from typing import Any

from aiohttp import web

from cloudia.routes import DEFAULT, MESSAGE_ROUTES

# What an invocation returns when the handler raised: API Gateway answers it as a 500.
INVOCATION_FAILED = object()


def new_connection_id() -> str:
    # API Gateway's ids look like "L0SM9cOFvHcCIhw=": 11 random bytes in base64 (URL-safe here).
    return base64.urlsafe_b64encode(secrets.token_bytes(11)).decode()


def iso_time(epoch_s: float) -> str:
    return datetime.datetime.fromtimestamp(epoch_s, datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def _request_time(epoch_s: float) -> str:
    return datetime.datetime.fromtimestamp(epoch_s, datetime.timezone.utc).strftime("%d/%b/%Y:%H:%M:%S +0000")


def websocket_event(route: str, event_type: str, ctx: dict, domain_name: str, stage: str,
                    request: web.Request | None = None, body: str | None = None, is_base64: bool = False) -> dict:
    """The event of `route` for the connection `ctx` (its id, connectedAt, source and, once authorized,
    the authorizer's context); `request` is the upgrade request on `$connect`, `body` a frame."""
    now = time.time()
    request_context = {
        "routeKey": route,
        "eventType": event_type,
        "messageDirection": "IN",
        "connectionId": ctx["connectionId"],
        "connectedAt": ctx["connectedAt"],
        "requestId": base64.urlsafe_b64encode(secrets.token_bytes(12)).decode(),
        "extendedRequestId": str(uuid.uuid4()),
        "requestTime": _request_time(now),
        "requestTimeEpoch": int(now * 1000),
        "domainName": domain_name,
        "stage": stage,
        "apiId": "local",
        "identity": {"sourceIp": ctx["sourceIp"], "userAgent": ctx["userAgent"]},
    }
    if ctx.get("authorizer"):
        request_context["authorizer"] = ctx["authorizer"]
    event: dict[str, Any] = {"requestContext": request_context, "isBase64Encoded": is_base64}
    if event_type == "MESSAGE":
        request_context["messageId"] = base64.urlsafe_b64encode(secrets.token_bytes(12)).decode()
        event["body"] = body
    if request is not None:
        event["headers"] = dict(request.headers)
        event["multiValueHeaders"] = {k: request.headers.getall(k) for k in request.headers.keys()}
        query = request.query
        event["queryStringParameters"] = {k: query[k] for k in query.keys()} or None
        event["multiValueQueryStringParameters"] = {k: query.getall(k) for k in query.keys()} or None
    return event


def route_of(body: str) -> str:
    """API Gateway's route selection expression `$request.body.action`."""
    try:
        frame = json.loads(body)
    except (ValueError, RecursionError):  # not JSON, or nested too deep to read: `$default` says why
        return DEFAULT
    action = frame.get("action") if isinstance(frame, dict) else None
    return action if isinstance(action, str) and action in MESSAGE_ROUTES else DEFAULT


def status_of(response) -> int:
    """A route reply's status code, as API Gateway reads it (200 unless the handler says otherwise)."""
    if response is INVOCATION_FAILED:
        return 500
    if isinstance(response, dict):
        try:
            return int(response.get("statusCode", 200))
        except (TypeError, ValueError):
            return 500
    return 200


def body_of(response) -> str:
    """A route reply's body, as API Gateway sends it back to the client."""
    if response is INVOCATION_FAILED or response is None:
        return ""
    if isinstance(response, dict):
        body = response.get("body")
        if body is None:
            return ""
        return body if isinstance(body, str) else json.dumps(body)
    return response if isinstance(response, str) else json.dumps(response)
