"""Routes `ping`, `history` (alias `resume`) and `$default`.

`ping` renews the connection's TTL and answers `pong` (with `resume: true` when the registration had
been lost and was made again, so the client reads what it missed); `history` answers the conversation's entries
since a point, so a client that reconnects loses no answer; any other frame gets an `error` event
that says why. `ping` and `history` frames count against the user's frame rate limit: past it the
client gets an `error` event (reason `rate_limited`, `action` the refused frame's) with `retryAfter`
in seconds. A `history` reply is one page, within API Gateway's 128 KB per message: its `next`
cursor, when present, asks for the following page. `retry` queues the sender's own failed job again
(the same job and text, within the message rate limit and the daily budget, as `sendMessage`) and
answers `queued` (or `circuit_open`), or an `error` event with the jobId that says why not.
"""
from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

from cloudia import chat, protocol, ws_events
from cloudia.frames import FrameError, History, Ping, Retry, SendMessage, parse_frame
from cloudia.limits import RateLimited

logger = Logger()
tracer = Tracer()
metrics = Metrics(namespace=ws_events.metrics_namespace())


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event, context):
    frame = None
    try:
        connection_id = ws_events.require_connection_id(event)
        logger.append_keys(connectionId=connection_id)
        service = chat.service()
        frame = parse_frame(ws_events.frame_body(event), service.settings.resilience.max_message_chars)
        if isinstance(frame, (SendMessage, Retry)):
            # Their own route and function (with the grants to queue a job) take these frames.
            raise FrameError("unexpected_action", f"{frame.action} frames go to the {frame.action} route")
        if isinstance(frame, Ping):
            authorized = ws_events.authorized_user(event)
            service.admit_frame(service.frame_user(connection_id, authorized))
            registered_again = service.heartbeat(connection_id, authorized)
            metrics.add_metric(name="Heartbeats", unit=MetricUnit.Count, value=1)
            return ws_events.respond(200, protocol.pong(resume=registered_again))
        return _history(service, connection_id, event, frame)
    except RateLimited as exc:
        logger.info("frame rate limited", extra={"reason": exc.reason, "retryAfterS": exc.retry_after_s})
        metrics.add_metric(name="FramesRateLimited", unit=MetricUnit.Count, value=1)
        # `action` tells the client which of its frames was refused (it names no message of theirs).
        action = "ping" if isinstance(frame, Ping) else "history"
        return ws_events.respond(ws_events.TOO_MANY_REQUESTS, protocol.error(
            str(exc), reason=exc.reason, retryAfter=exc.retry_after_s, action=action))
    except Exception as exc:  # noqa: BLE001 - every failure is answered with its error event (ws_events.failure)
        refused = ws_events.failure(exc, logger)
        metrics.add_metric(name="FramesRejected", unit=MetricUnit.Count, value=1)
        return refused.response()


def _history(service: chat.ChatService, connection_id: str, event, frame: History) -> dict:
    user_id = service.current_user(connection_id, ws_events.authorized_user(event))
    service.admit_frame(user_id)
    page = service.history_page(user_id, frame)
    metrics.add_metric(name="HistoryRequests", unit=MetricUnit.Count, value=1)
    return ws_events.respond(200, page)
