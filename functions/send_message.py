"""Routes `sendMessage` and `retry` (the function with the grants to queue a job).

`sendMessage`: validate the frame, accept it once per clientMessageId within the user's rate limit and
daily budget, store it, queue the job and answer `queued` with its jobId and what is left of the
budget; a refusal by the budget says what is left and when it resets. `retry` queues the sender's own
failed job again (the same job and text, within the same limits) and answers `queued` (or
`circuit_open`), or an `error` event with the jobId that says why not."""
from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from cloudia import chat, protocol, ws_events
from cloudia.frames import FrameError, Retry, SendMessage, parse_frame
from cloudia.limits import BudgetExceeded

logger = Logger()
tracer = Tracer()
metrics = Metrics(namespace=ws_events.metrics_namespace())


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event, context):
    client_message_id = None
    try:
        connection_id = ws_events.require_connection_id(event)
        logger.append_keys(connectionId=connection_id)
        service = chat.service()
        service.bind_invocation(context)
        frame = parse_frame(ws_events.frame_body(event), service.settings.resilience.max_message_chars)
        if isinstance(frame, Retry):
            return _retry(service, connection_id, event, frame)
        if not isinstance(frame, SendMessage):
            raise FrameError("unexpected_action", "this route takes sendMessage and retry frames only")
        client_message_id = frame.client_message_id
        logger.append_keys(clientMessageId=client_message_id)
        user_id = service.current_user(connection_id, ws_events.authorized_user(event))
        logger.append_keys(userId=user_id)
        accepted = service.send_message(user_id, frame)
    except Exception as exc:  # noqa: BLE001 - every failure is answered with its error event (ws_events.failure)
        refused = ws_events.failure(exc, logger)
        _count_rejection(refused.reason, budget=isinstance(exc, BudgetExceeded))
        if isinstance(exc, BudgetExceeded):
            return ws_events.respond(refused.status_code, protocol.budget_exceeded(
                refused.message, exc.budget.told(), exc.retry_after_s, clientMessageId=client_message_id))
        return refused.response(client_message_id=client_message_id)
    logger.append_keys(jobId=accepted.job_id)
    if service.llm_circuit_is_open():
        # The job is queued and kept; the worker takes it when the circuit closes again.
        logger.info("message queued while the LLM circuit is open")
        metrics.add_metric(name="MessagesHeldByOpenCircuit", unit=MetricUnit.Count, value=1)
        return ws_events.respond(200, protocol.circuit_open(accepted.job_id, accepted.client_message_id))
    if accepted.replayed:
        logger.info("resend answered with the job already queued")
        metrics.add_metric(name="MessagesResent", unit=MetricUnit.Count, value=1)
    else:
        logger.info("message queued")
        metrics.add_metric(name="MessagesAccepted", unit=MetricUnit.Count, value=1)
    return ws_events.respond(200, protocol.queued(accepted.job_id, accepted.client_message_id, accepted.budget))


def _count_rejection(reason: str, budget: bool) -> None:
    metrics.add_metric(name="MessagesRejected", unit=MetricUnit.Count, value=1)
    # By reason in its own EMF record, so the dimension does not spread to the invocation's other metrics.
    with single_metric(name="MessagesRejected", unit=MetricUnit.Count, value=1,
                       namespace=metrics.namespace, default_dimensions={"reason": reason}):
        pass
    if budget:
        metrics.add_metric(name="BudgetRefusals", unit=MetricUnit.Count, value=1)


def _retry(service: chat.ChatService, connection_id: str, event, frame: Retry) -> dict:
    """Every refusal names the job (the page shows it on that message) and the action."""
    logger.append_keys(jobId=frame.job_id)
    try:
        user_id = service.current_user(connection_id, ws_events.authorized_user(event))
        logger.append_keys(userId=user_id)
        accepted = service.retry(user_id, frame)
    except chat.RetryRefused as exc:
        logger.info("retry refused", extra={"reason": exc.reason})
        metrics.add_metric(name="RetriesRefused", unit=MetricUnit.Count, value=1)
        return ws_events.respond(exc.status_code, protocol.error(str(exc), job_id=frame.job_id, reason=exc.reason,
                                                                  action="retry"))
    except Exception as exc:  # noqa: BLE001 - every failure is answered with its error event (ws_events.failure)
        # What refuses a new message refuses a retry the same way (rate limit, budget, storage).
        refused = ws_events.failure(exc, logger)
        metrics.add_metric(name="RetriesRefused", unit=MetricUnit.Count, value=1)
        if isinstance(exc, BudgetExceeded):  # what is left and when it resets, as sendMessage says it
            return ws_events.respond(refused.status_code, protocol.budget_exceeded(
                refused.message, exc.budget.told(), exc.retry_after_s, job_id=frame.job_id, action="retry"))
        return refused.response(job_id=frame.job_id)
    if accepted.replayed:
        logger.info("retry answered with the job already queued again")
        metrics.add_metric(name="RetriesResent", unit=MetricUnit.Count, value=1)
    else:
        logger.info("failed job queued again")
        metrics.add_metric(name="Retries", unit=MetricUnit.Count, value=1)
    client_message_id = accepted.client_message_id or None
    if service.llm_circuit_is_open():
        return ws_events.respond(200, protocol.circuit_open(accepted.job_id, client_message_id))
    return ws_events.respond(200, protocol.queued(accepted.job_id, client_message_id, accepted.budget))
