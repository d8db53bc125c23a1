"""`$connect`: authenticate the caller and register connectionId <-> user in Redis with a TTL.

On AWS the authorizer has already checked the token and passes the user; the local gateway has no
authorizer, so the same token check runs here. A refused caller gets 401 and the connection closes;
a user who has `max_connections_per_user` connections open already gets 429 (`too_many_connections`).
"""
from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

from cloudia import chat, protocol, ws_events
from cloudia.limits import TooManyConnections

logger = Logger()
tracer = Tracer()
metrics = Metrics(namespace=ws_events.metrics_namespace())


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event, context):
    try:
        connection_id = ws_events.require_connection_id(event)
        logger.append_keys(connectionId=connection_id)
        service = chat.service()
        user_id = ws_events.authorized_user(event) or _verified_user(event, service.settings)
        logger.append_keys(userId=user_id)
        service.connect(connection_id, user_id)
    except Exception as exc:  # noqa: BLE001 - every failure is answered with its error event (ws_events.failure)
        refused = ws_events.failure(exc, logger)
        metrics.add_metric(name="ConnectionsRefused", unit=MetricUnit.Count, value=1)
        if isinstance(exc, TooManyConnections):
            metrics.add_metric(name="ConnectionsOverUserCap", unit=MetricUnit.Count, value=1)
        return refused.response()
    metrics.add_metric(name="ConnectionsOpened", unit=MetricUnit.Count, value=1)
    return ws_events.respond(200, protocol.connected(user_id))


def _verified_user(event, settings) -> str:
    """The token's user, where no authorizer ran (locally)."""
    # Imported here: on AWS the authorizer has checked the token, and PyJWT with cryptography would
    # only lengthen this function's cold start.
    from cloudia import auth

    return auth.verify_token(ws_events.query_parameter(event, "token"), auth.user_pool(settings))
