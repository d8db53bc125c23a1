"""API Gateway WebSocket events in, route responses out: the part of the functions that knows
Lambda event shapes (the same shapes on AWS and from the local gateway).

Every handler returns `{"statusCode": int, "body": <one event frame as JSON>}`; with route
responses enabled the body is what the client receives. `rejection` maps each known failure to
the status, the stable reason and the message the client gets; anything else is an internal fault.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

from cloudia import protocol
from cloudia.settings import Settings

BAD_REQUEST, UNAUTHORIZED, CONFLICT, TOO_MANY_REQUESTS = 400, 401, 409, 429
INTERNAL_ERROR, UNAVAILABLE = 500, 503


def metrics_namespace() -> str:
    """Powertools' own variable first, then the deployment's setting."""
    return os.getenv("POWERTOOLS_METRICS_NAMESPACE") or Settings.from_env().metrics_namespace


def respond(status_code: int, frame: dict[str, Any]) -> dict[str, Any]:
    return {"statusCode": status_code, "body": protocol.dumps(frame)}


def _request_context(event: Any) -> dict[str, Any]:
    context = event.get("requestContext") if isinstance(event, dict) else None
    return context if isinstance(context, dict) else {}


def connection_id(event: Any) -> str:
    return str(_request_context(event).get("connectionId") or "")


def authorized_user(event: Any) -> str | None:
    """The user the `$connect` authorizer put in its context, if this event passed one."""
    authorizer = _request_context(event).get("authorizer")
    if isinstance(authorizer, dict) and authorizer.get("userId"):
        return str(authorizer["userId"])
    return None


def query_parameter(event: Any, name: str) -> str | None:
    params = event.get("queryStringParameters") if isinstance(event, dict) else None
    return params.get(name) if isinstance(params, dict) else None


def frame_body(event: Any) -> str | None:
    if not isinstance(event, dict):
        return None
    if event.get("isBase64Encoded"):
        from cloudia.frames import FrameError  # only for this refusal: a route without frames needs no pydantic

        raise FrameError("not_text", "binary frames are not accepted: send JSON text")
    body = event.get("body")
    return body if isinstance(body, str) or body is None else str(body)


@dataclass(frozen=True)
class Rejection:
    status_code: int
    reason: str
    message: str

    def response(self, job_id: str | None = None, client_message_id: str | None = None) -> dict[str, Any]:
        """`client_message_id`, when the frame named one, lets the client match the refusal exactly."""
        return respond(self.status_code, protocol.error(self.message, job_id=job_id, reason=self.reason,
                                                        clientMessageId=client_message_id))


IDEMPOTENCY_ERRORS = "aws_lambda_powertools.utilities.idempotency.exceptions"


def _imported(module: str, *names: str) -> tuple[type, ...]:
    """The classes `names` of `module` if this process has imported it, else none: an exception of a
    module never imported cannot have been raised. So telling failures apart imports nothing, and each
    function's cold start loads only what its own route uses (e.g. no pydantic for `$disconnect`, no
    PyJWT for `sendMessage`)."""
    loaded = sys.modules.get(module)
    return tuple(getattr(loaded, name) for name in names) if loaded is not None else ()


def _reason(exc: BaseException) -> str:
    """The stable code each of our refusals carries (FrameError, AuthError, LimitExceeded, ...)."""
    return getattr(exc, "reason")


def rejection(exc: BaseException) -> Rejection | None:
    """How a known failure is told to the client; None for an unexpected fault."""
    if isinstance(exc, _imported("cloudia.frames", "FrameError")):
        return Rejection(BAD_REQUEST, _reason(exc), str(exc))
    if isinstance(exc, _imported("cloudia.auth", "AuthError") + _imported("cloudia.chat", "NotConnected")):
        return Rejection(UNAUTHORIZED, _reason(exc), str(exc))
    if isinstance(exc, _imported("cloudia.limits", "LimitExceeded")):
        return Rejection(TOO_MANY_REQUESTS, _reason(exc), str(exc))
    if isinstance(exc, _imported(IDEMPOTENCY_ERRORS, "IdempotencyValidationError")):
        return Rejection(CONFLICT, "client_message_id_reused",
                         "this clientMessageId was already used for another message: use a new one")
    if isinstance(exc, _imported(IDEMPOTENCY_ERRORS, "IdempotencyAlreadyInProgressError")):
        return Rejection(CONFLICT, "in_progress", "this message is still being accepted: send it again shortly")
    if isinstance(exc, _imported("cloudia.chat", "EnqueueFailed")):
        return Rejection(UNAVAILABLE, _reason(exc), str(exc))
    if isinstance(exc, _imported("redis.exceptions", "RedisError")):
        return Rejection(UNAVAILABLE, "session_store_unavailable",
                         "the session store is unavailable: try again shortly")
    if isinstance(exc, _imported(IDEMPOTENCY_ERRORS, "IdempotencyPersistenceLayerError")
                  + _imported("botocore.exceptions", "BotoCoreError", "ClientError")):
        return Rejection(UNAVAILABLE, "storage_unavailable", "storage is unavailable: try again shortly")
    return None


INTERNAL = Rejection(INTERNAL_ERROR, "internal_error", "internal error: try again shortly")


def require_connection_id(event: Any) -> str:
    found = connection_id(event)
    if not found:
        from cloudia.frames import FrameError  # only for this refusal: a route without frames needs no pydantic

        raise FrameError("missing_connection_id", "the event has no requestContext.connectionId")
    return found


def failure(exc: BaseException, logger) -> Rejection:
    """The rejection for `exc`, logged: a client's mistake at info, a fault with its traceback."""
    known = rejection(exc)
    if known is None:
        logger.exception("unexpected fault, answered as an internal error")
        return INTERNAL
    if known.status_code >= INTERNAL_ERROR:
        logger.warning("dependency failure", extra={"reason": known.reason}, exc_info=exc)
    else:
        logger.info("request rejected", extra={"reason": known.reason, "detail": known.message})
    return known
