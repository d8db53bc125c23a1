"""One job, from its SQS message to the user's connections: the worker's domain logic.

Every path ends with the message deleted (answered, or moved to the DLQ with the user told) or made
visible again later (retry with backoff, circuit open, shutdown); nothing is dropped silently.
"""
from __future__ import annotations

import asyncio
import math
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from cloudia import protocol
from cloudia.backoff import visibility_timeout_s
from cloudia.breaker import OPEN, CircuitBreaker, Permit
from cloudia.context_cache import ContextCache
from cloudia.dlq import sendable_attributes
from cloudia.history import ASSISTANT, ERROR, USER, HistoryStore
from cloudia.job_lease import JobLeases
from cloudia.jobs import (ANSWERED, CALL_STARTED_ATTRIBUTE, CALLING, FAILED, FAILURE_CLASS_ATTRIBUTE,
                          FAILURE_REASON_ATTRIBUTE, RECEIVE_COUNT_ATTRIBUTE, Job, JobStore, now_ms)
from cloudia.limits import UsageLimits, estimate_tokens
from cloudia.llm import LlmProvider, PermanentLlmError, TransientLlmError
from cloudia.push import Pusher
from cloudia.settings import Settings
from worker.telemetry import WorkerMetrics, logger

# Outcomes of `JobProcessor.handle`, for logs and tests.
ANSWERED_OUTCOME, DUPLICATE, RETRY, DEAD_LETTERED, DELAYED_CIRCUIT_OPEN, BUSY_ELSEWHERE = (
    "answered", "duplicate", "retry", "dead_lettered", "delayed_circuit_open", "busy_elsewhere")

# What the user reads when a job fails for good (the reason code says why, for machines).
FAILED_TRANSIENT_MESSAGE = "A API LLM falhou repetidamente; sua mensagem não pôde ser respondida."
FAILED_PERMANENT_MESSAGE = "A API LLM recusou esta mensagem; ela não pôde ser respondida."
INTERRUPTED_MESSAGE = ("A resposta foi interrompida por uma falha do serviço e não foi repetida para não ser "
                       "cobrada duas vezes; envie a mensagem novamente.")


# SQS's longest DelaySeconds.
SQS_MAX_DELAY_S = 900
# How long the last streamed tokens may take to go out once the LLM has finished.
TOKEN_DRAIN_BOUND_S = 2.0
# A live LLM call ends within llm_timeout_s; its answer's writes need a few DynamoDB round trips more.
# A `calling` mark older than that was left by a worker that died.
CALL_WRITES_MARGIN_S = 5.0


class TokenForwarder:
    """Forwards streamed tokens without ever slowing the LLM stream (a slow or unreachable gateway
    must not make the LLM call time out): one push at a time, tokens that arrive meanwhile go out
    together in the next push, and forwarding stops once no connection takes them. The `answer`
    event and the history carry the whole text regardless."""

    def __init__(self, push: Callable[[str], Awaitable[int]]):
        self._push = push
        self._buffer: list[str] = []
        self._task: asyncio.Task | None = None
        self._stopped = False

    async def __call__(self, text: str) -> None:
        if self._stopped:
            return
        self._buffer.append(text)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        while self._buffer and not self._stopped:
            text = "".join(self._buffer)
            self._buffer.clear()
            try:
                delivered = await self._push(text)
            except Exception:  # noqa: BLE001 - a token is a courtesy; the answer follows
                delivered = 0
            if not delivered:
                self._stopped = True

    async def finish(self, bound_s: float) -> None:
        """Let the last tokens go out, for at most `bound_s`."""
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), bound_s)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            self.cancel()

    def cancel(self) -> None:
        """No more tokens: the call failed, or the drain ran out of time."""
        self._stopped = True
        if self._task is not None:
            self._task.cancel()


@dataclass(frozen=True)
class Route:
    """The provider a job goes to, and the breaker that guards it."""

    provider: LlmProvider
    breaker: CircuitBreaker


class JobProcessor:
    def __init__(self, settings: Settings, *, sqs, jobs: JobStore, history: HistoryStore, cache: ContextCache,
                 pusher: Pusher, primary: Route, fallback: Route | None, metrics: WorkerMetrics,
                 leases: JobLeases, limits: UsageLimits, executor: Executor | None = None):
        self._settings = settings
        self._res = settings.resilience
        self._sqs = sqs
        self._jobs = jobs
        self._history = history
        self._cache = cache
        self._pusher = pusher
        self._leases = leases
        self._limits = limits
        self.primary = primary
        self.fallback = fallback
        self._metrics = metrics
        self._executor = executor
        self._call_bound_s = self._res.llm_timeout_s + CALL_WRITES_MARGIN_S

    async def io(self, fn: Callable[..., Any], *args, **kwargs) -> Any:
        """Run a blocking call (boto3, redis-py) off the event loop, in the worker's I/O threads."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    async def aclose(self) -> None:
        """Close the providers' HTTP clients on the loop that opened them."""
        for route in (self.primary, self.fallback):
            close = getattr(route.provider, "aclose", None) if route else None
            if close is not None:
                await close()

    # -- the job ------------------------------------------------------------------------------
    async def handle(self, message: dict, permit: Permit | None = None) -> str:
        """Process one received message. `permit` is a half-open probe slot the consumer took for it."""
        attributes = message.get("Attributes", {})
        receive_count = _receive_count(message)
        if "SentTimestamp" in attributes:
            self._metrics.queue_lag_ms(now_ms() - int(attributes["SentTimestamp"]))
        try:
            return await self._handle_job(message, receive_count, permit)
        finally:
            if permit is not None and permit.probe:
                # A probe slot not spent on a provider call (duplicate, failure elsewhere, shutdown)
                # is handed back; after `record` this is a no-op.
                await self.io(self.primary.breaker.release, permit)

    async def _handle_job(self, message: dict, receive_count: int, permit: Permit | None) -> str:
        try:
            job = Job.from_json(message["Body"])
        except (ValueError, TypeError, KeyError) as error:
            await self._dead_letter(message, f"malformed job: {error}", "malformed")
            self._metrics.job_failed("malformed")
            return DEAD_LETTERED
        log = {"job_id": job.job_id, "receive_count": receive_count}
        try:
            return await self._process(job, message, receive_count, permit, log)
        except asyncio.CancelledError:
            # Shutdown ran out of time: the job goes back to the queue now rather than after the
            # visibility timeout.
            await self.give_back(message, 0)
            logger.warning("job handed back to the queue at shutdown", extra=log)
            raise
        except Exception as error:  # noqa: BLE001 - DynamoDB/SQS/Redis trouble: retry through the queue
            logger.exception("job failed on infrastructure, will retry", extra=log)
            return await self._transient(job, message, receive_count, "infrastructure", str(error), None, log)

    async def _process(self, job: Job, message: dict, receive_count: int, permit: Permit | None, log: dict) -> str:
        # The lease first, then the state: a worker that finishes and lets go has already marked the
        # job answered, so whoever takes the lease next sees it.
        token, busy_s = await self.io(self._leases.acquire, job.job_id)
        if token is None:  # look again when the other worker's lease ends
            return await self._busy_elsewhere(message, busy_s, log)
        try:
            # Independent reads at once: each is a network round trip, and the job waits on all of them.
            record, context, connections = await asyncio.gather(
                self.io(self._jobs.get, job.job_id), self._context(job),
                self.io(self._pusher.connections_of, job.user_id))
            if record and record.get("status") == ANSWERED:
                await self._repush_answer(job)
                await self._delete(message)
                logger.info("job already answered: not calling the LLM again", extra=log)
                return DUPLICATE
            if record and record.get("status") == CALLING:
                outcome = await self._after_cut_call(job, message, record, log)
                if outcome is not None:
                    return outcome
            return await self._attempt(job, message, receive_count, permit, log, context, connections)
        finally:
            await self.io(self._leases.release, job.job_id, token)

    async def _attempt(self, job: Job, message: dict, receive_count: int, permit: Permit | None, log: dict,
                       context: list[dict[str, str]], connections: list[str]) -> str:
        route, permit = await self._route(permit)
        if route is None:
            return await self._circuit_open(job, message, receive_count, permit, log)
        stale_before_ms = now_ms() - int(self._call_bound_s * 1000)
        if not await self.io(self._jobs.start_call, job.job_id, stale_before_ms):
            # Answered meanwhile, or another worker is calling (its lease went with a Redis restart).
            await self.io(route.breaker.release, permit)
            return await self._busy_elsewhere(message, self._call_bound_s, log)

        async def push_token(text: str) -> int:
            return await self.io(self._pusher.push, job.user_id, protocol.token(job.job_id, text), connections)

        tokens = TokenForwarder(push_token) if connections else None
        completion = None
        started = time.monotonic()
        try:
            completion = await route.provider.complete(
                [{"role": m["role"], "content": m["content"]} for m in context], tokens)
            elapsed_s = time.monotonic() - started
        except TransientLlmError as error:
            state = await self.io(route.breaker.record, permit, False, time.monotonic() - started)
            await self.io(self._jobs.end_failed_call, job.job_id)
            logger.warning("LLM call failed (transient)", extra={**log, "kind": error.kind, "error": str(error),
                                                                   "provider": route.provider.name})
            return await self._transient(job, message, receive_count, error.kind, str(error),
                                         error.retry_after_s, log, circuit_opened=state == OPEN,
                                         breaker=route.breaker)
        except PermanentLlmError as error:
            # The provider answered: it is healthy, the request is what is wrong.
            await self.io(route.breaker.record, permit, True, time.monotonic() - started)
            logger.error("LLM refused the job (permanent)", extra={**log, "kind": error.kind, "error": str(error)})
            await self._fail_for_good(job, message, FAILED_PERMANENT_MESSAGE, error.kind, str(error), "permanent")
            return DEAD_LETTERED
        except asyncio.CancelledError:
            # Shutdown gave up on the call and no answer came: the hand-back is meant to be called again.
            await self.io(route.breaker.release, permit)
            await self.io(self._jobs.end_failed_call, job.job_id)
            raise
        finally:
            if tokens is not None and completion is None:
                tokens.cancel()

        # The answer is made durable before anything else (a worker killed before the ANSWERED mark
        # leaves the job `calling`, see `_after_cut_call`). The answer is stored first: once the job
        # reads ANSWERED, a redelivery re-pushes it.
        await self.io(self._history.append, job.user_id, job.conversation_id, job.job_id, ASSISTANT,
                      completion.text)
        await self.io(self._jobs.finish, job.job_id, ANSWERED)
        if tokens is not None:  # the last tokens go out before the answer, within a bound
            await tokens.finish(TOKEN_DRAIN_BOUND_S)
        await self.io(route.breaker.record, permit, True, elapsed_s)
        self._metrics.llm_latency_ms(elapsed_s * 1000)
        _, delivered = await asyncio.gather(
            self.io(self._cache.put, job.user_id, job.conversation_id,
                    context + [{"role": ASSISTANT, "content": completion.text, "jobId": job.job_id}]),
            self.io(self._pusher.push, job.user_id, protocol.answer(job.job_id, completion.text, job.conversation_id)))
        await self._delete(message)
        await self._charge_answer(job, completion)
        self._metrics.job_succeeded()
        logger.info("job answered", extra={**log, "provider": route.provider.name, "delivered_to": delivered,
                                           "llm_ms": round(elapsed_s * 1000), "output_tokens": completion.output_tokens})
        return ANSWERED_OUTCOME

    async def _busy_elsewhere(self, message: dict, busy_s: float, log: dict) -> str:
        """Another worker is answering this job right now (a duplicate delivery): look again when it
        is done, by which time the job is answered (-> re-push) or free to retry."""
        delay_s = max(1, math.ceil(busy_s))
        await self.give_back(message, delay_s)
        logger.info("job is being answered by another worker", extra={**log, "retry_in_s": delay_s})
        return BUSY_ELSEWHERE

    async def _after_cut_call(self, job: Job, message: dict, record: dict, log: dict) -> str | None:
        """The job reads `calling`: another worker's call is still running, or a worker died during
        the call and the LLM may have been paid. None means call again (`recall_llm_after_crash`)."""
        running_s = (now_ms() - int(record.get(CALL_STARTED_ATTRIBUTE, 0))) / 1000
        if running_s < self._call_bound_s:
            return await self._busy_elsewhere(message, self._call_bound_s - running_s, log)
        if self._res.recall_llm_after_crash:
            logger.warning("a worker died during this job's LLM call: calling again", extra=log)
            return None
        await self._fail_for_good(job, message, INTERRUPTED_MESSAGE, "interrupted_call",
                                  f"a worker stopped during the LLM call started {running_s:.0f} s ago; "
                                  "not called again so it is not paid twice", "interrupted")
        return DEAD_LETTERED

    async def _charge_answer(self, job: Job, completion) -> None:
        """Add what the LLM really used to the user's daily budget, beyond the estimate the sender
        charged at the door. Best effort: the answer is already delivered and must not be retried."""
        extra = completion.input_tokens + completion.output_tokens - estimate_tokens(job.message)
        if extra <= 0:
            return
        try:
            await self.io(self._limits.charge_tokens, job.user_id, extra)
        except Exception:  # noqa: BLE001 - Redis trouble: the budget undercounts, nothing is lost
            logger.warning("could not charge the answer's tokens", extra={"job_id": job.job_id, "tokens": extra})

    async def _route(self, permit: Permit | None) -> tuple[Route | None, Permit]:
        """The primary while its breaker lets the call through, else the fallback's, else None."""
        if permit is None:
            permit = await self.io(self.primary.breaker.acquire)
        if permit.allowed:
            return self.primary, permit
        if self.fallback is not None:
            fallback_permit = await self.io(self.fallback.breaker.acquire)
            if fallback_permit.allowed:
                return self.fallback, fallback_permit
        return None, permit

    async def _context(self, job: Job) -> list[dict[str, str]]:
        """The conversation so far (Redis, else DynamoDB), ending with this job's user message."""
        max_messages = self._res.context_max_messages
        messages = await self.io(self._cache.get, job.user_id, job.conversation_id)
        if messages is None:
            entries = await self.io(self._history.latest, job.user_id, job.conversation_id, max_messages + 1)
            messages = [{"role": e.role, "content": e.message, "jobId": e.job_id}
                        for e in entries if e.role in (USER, ASSISTANT)]
        # The sender stored this message in the history already; keep exactly one copy, last.
        messages = [m for m in messages if not (m.get("jobId") == job.job_id and m.get("role") == USER)]
        messages = messages[-(max_messages - 1):] if max_messages > 1 else []
        while messages and messages[0]["role"] != USER:  # providers expect the user to speak first
            messages.pop(0)
        return messages + [{"role": USER, "content": job.message, "jobId": job.job_id}]

    async def _repush_answer(self, job: Job) -> None:
        entries = await self.io(self._history.latest, job.user_id, job.conversation_id,
                                self._res.context_max_messages * 2)
        answer = next((e for e in reversed(entries) if e.job_id == job.job_id and e.role == ASSISTANT), None)
        if answer is not None:
            await self.io(self._pusher.push, job.user_id,
                          protocol.answer(job.job_id, answer.message, job.conversation_id))

    # -- failure paths ------------------------------------------------------------------------
    async def _transient(self, job: Job, message: dict, receive_count: int, kind: str, detail: str,
                         retry_after_s: float | None, log: dict, circuit_opened: bool = False,
                         breaker: CircuitBreaker | None = None) -> str:
        has_other_route = self.fallback is not None and breaker is self.primary.breaker
        if circuit_opened and breaker is not None and not has_other_route:
            # The circuit is open after this failure (it opened, or a half-open probe failed): the
            # provider is down, not this job. The job waits it out and its user hears why now.
            # (With a fallback provider it simply retries on the usual schedule, on the fallback.)
            await self.io(self._pusher.push, job.user_id, protocol.circuit_open(job.job_id))
            return await self._hold(job, message, await self.io(breaker.open_remaining_s), log)
        if receive_count >= self._res.max_receives:
            await self._fail_for_good(job, message, FAILED_TRANSIENT_MESSAGE, f"exhausted_{kind}",
                                      f"{receive_count} attempts; last: {detail}", "exhausted")
            return DEAD_LETTERED
        delay_s = visibility_timeout_s(receive_count, self._res, retry_after_s)
        await self._set_visibility(message, delay_s)
        self._metrics.job_retried(kind)
        logger.info("job will be retried", extra={**log, "kind": kind, "retry_in_s": delay_s})
        return RETRY

    async def _circuit_open(self, job: Job, message: dict, receive_count: int, permit: Permit, log: dict) -> str:
        """Fail fast without touching the provider; keep the job in the queue until the circuit lets it."""
        await self.io(self._pusher.push, job.user_id, protocol.circuit_open(job.job_id))
        if permit.state == OPEN:
            delay_s = permit.retry_after_s
        else:  # half-open and every probe slot taken: come back on the usual schedule
            delay_s = visibility_timeout_s(receive_count, self._res)
        return await self._hold(job, message, delay_s, log)

    async def _hold(self, job: Job, message: dict, delay_s: float, log: dict) -> str:
        """Keep a job in the queue while the circuit is open, as a fresh message delayed by `delay_s`.

        A fresh message starts again at zero receives: holding it by visibility would spend one of
        its 5 receives at each look, and a long outage would send healthy jobs to the DLQ. Past
        `circuit_hold_max_s` the job goes to the DLQ, its user told, instead."""
        held_s = (now_ms() - job.created_at_ms) / 1000
        if held_s > self._res.circuit_hold_max_s:
            await self._fail_for_good(job, message, protocol.CIRCUIT_OPEN_MESSAGE, "circuit_open",
                                      f"kept {held_s:.0f} s while the circuit was open", "circuit_open")
            return DEAD_LETTERED
        delay_s = await self._requeue(message, max(1, delay_s))
        logger.info("circuit open: job kept in the queue", extra={**log, "retry_in_s": delay_s})
        return DELAYED_CIRCUIT_OPEN

    async def _fail_for_good(self, job: Job, message: dict, user_message: str, reason_code: str, detail: str,
                             failure_class: str) -> None:
        """Tell the user, record it, then move the message to the DLQ (exactly one copy) and delete it."""
        await self._tell_failure(job, user_message, reason_code, detail)
        await self._dead_letter(message, f"{reason_code}: {detail}", failure_class)
        self._metrics.job_failed(failure_class)
        logger.error("job failed for good, moved to the DLQ",
                     extra={"job_id": job.job_id, "reason": reason_code, "detail": detail})

    async def _tell_failure(self, job: Job, user_message: str, reason_code: str, detail: str) -> None:
        for step in (
            lambda: self._pusher.push(job.user_id, protocol.error(user_message, job.job_id, reason=reason_code)),
            lambda: self._history.append(job.user_id, job.conversation_id, job.job_id, ERROR, user_message),
            lambda: self._jobs.finish(job.job_id, FAILED, f"{reason_code}: {detail}"),
        ):
            try:  # best effort: the DLQ copy below is what must not be missed
                await self.io(step)
            except Exception:  # noqa: BLE001
                logger.exception("could not record the failure of a job", extra={"job_id": job.job_id})

    async def settle_dead_letter(self, message: dict) -> None:
        """A message SQS moved to the DLQ by itself, after its last receive was lost (a worker died
        during the job's last attempt): the job fails and its user is told, as when the worker
        dead-letters a job, and the DLQ copy is replaced by one that says why."""
        receive_count = _receive_count(message) - 1  # this look was a receive too
        detail = f"SQS moved it after {receive_count} receives; the last attempt ended with its worker"
        try:
            job = Job.from_json(message["Body"])
        except (ValueError, TypeError, KeyError):
            job = None
        record = await self.io(self._jobs.get, job.job_id) if job else None
        if job is not None and (record or {}).get("status") not in (ANSWERED, FAILED):
            await self._tell_failure(job, INTERRUPTED_MESSAGE, "max_receives", detail)
            self._metrics.job_failed("max_receives")
        attributes = {**sendable_attributes(message.get("MessageAttributes", {})),
                      **_failure_attributes(f"max_receives: {detail}", "max_receives", receive_count)}
        await self.io(self._sqs.send_message, QueueUrl=self._settings.jobs_dlq_url, MessageBody=message["Body"],
                      MessageAttributes=attributes)
        await self.io(self._sqs.delete_message, QueueUrl=self._settings.jobs_dlq_url,
                      ReceiptHandle=message["ReceiptHandle"])
        logger.error("job moved to the DLQ by SQS: failed, user told",
                     extra={"job_id": job.job_id if job else None, "receive_count": receive_count})

    # -- SQS ----------------------------------------------------------------------------------
    async def _dead_letter(self, message: dict, reason: str, failure_class: str) -> None:
        await self.io(
            self._sqs.send_message, QueueUrl=self._settings.jobs_dlq_url, MessageBody=message["Body"],
            MessageAttributes=_failure_attributes(reason, failure_class, _receive_count(message)))
        await self._delete(message)

    async def give_back(self, message: dict, delay_s: float) -> None:
        """Back to the queue, to be received again after `delay_s`. On its last receive a message made
        visible again would be moved to the DLQ by SQS at the next look, with nobody told: it goes
        back as a fresh copy instead."""
        if _receive_count(message) >= self._res.max_receives:
            await self._requeue(message, delay_s)
        else:
            await self._set_visibility(message, math.ceil(delay_s))

    async def _requeue(self, message: dict, delay_s: float) -> int:
        """A fresh copy of the message (its receive count starts again at 0) delayed by `delay_s`, then
        the original deleted. A crash in between leaves two copies, which the job lease and the job's
        state keep from calling the LLM twice. The delay used."""
        delay_s = min(SQS_MAX_DELAY_S, math.ceil(delay_s))
        await self.io(self._sqs.send_message, QueueUrl=self._settings.jobs_queue_url,
                      MessageBody=message["Body"], DelaySeconds=delay_s)
        await self._delete(message)
        return delay_s

    async def _delete(self, message: dict) -> None:
        await self.io(self._sqs.delete_message, QueueUrl=self._settings.jobs_queue_url,
                      ReceiptHandle=message["ReceiptHandle"])

    async def _set_visibility(self, message: dict, seconds: int) -> None:
        await self.io(self._sqs.change_message_visibility, QueueUrl=self._settings.jobs_queue_url,
                      ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=int(seconds))


def _receive_count(message: dict) -> int:
    return int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))


def _failure_attributes(reason: str, failure_class: str, receive_count: int) -> dict:
    """The message attributes a DLQ copy carries: why it failed, and after how many receives."""
    return {
        FAILURE_REASON_ATTRIBUTE: {"DataType": "String", "StringValue": reason[:1024]},
        FAILURE_CLASS_ATTRIBUTE: {"DataType": "String", "StringValue": failure_class},
        RECEIVE_COUNT_ATTRIBUTE: {"DataType": "Number", "StringValue": str(receive_count)},
    }
