"""`$disconnect`: forget the connection's registration, and leave a short-lived tombstone so that a
frame of it still being handled cannot register it again. Idempotent: an unknown one is fine."""
from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

from cloudia import chat, protocol, ws_events

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
        chat.service().disconnect(connection_id)
    except Exception as exc:  # noqa: BLE001 - every failure is answered with its error event (ws_events.failure)
        # The connection is gone either way; its registration expires with its TTL.
        metrics.add_metric(name="DisconnectsNotRecorded", unit=MetricUnit.Count, value=1)
        return ws_events.failure(exc, logger).response()
    metrics.add_metric(name="ConnectionsClosed", unit=MetricUnit.Count, value=1)
    return ws_events.respond(200, protocol.disconnected())
