"""One job, from its SQS message to the user's connections: the worker's domain logic.

`JobProcessor.handle` decides what becomes of each message (a `Decision`, see `worker.decisions`) and
has `JobQueue.carry_out` do it: the message ends deleted (answered, or moved to the DLQ with the user
told) or visible again later (retry with backoff, circuit open, busy elsewhere, shutdown); nothing is
dropped silently. While a job is in hand its heartbeat keeps it alive (`worker.heartbeat`), however
long the answer takes.
"""
from __future__ import annotations

import asyncio
import contextlib
import math
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from cloudia import protocol
from cloudia.backoff import visibility_timeout_s
from cloudia.breaker import OPEN, CircuitBreaker, Permit
from cloudia.completed_answers import CompletedAnswers
from cloudia.context_cache import ContextCache, job_context
from cloudia.dlq_format import failure_attributes, sendable_attributes
from cloudia.history import ASSISTANT, ERROR, HistoryStore
from cloudia.job_lease import JobLeases
from cloudia.jobs import (ANSWER_COMPLETE_LOG, ANSWERED, CALL_HEARTBEAT_ATTRIBUTE, CALL_STARTED_ATTRIBUTE,
                          CALLING, CUT_IN_A_ROW_ATTRIBUTE, FAILED, RECOVERED_DETAIL, RETRIES_ATTRIBUTE, CallMark,
                          CallStart, Job, JobStore, now_ms)
from cloudia.limits import UsageLimits, within_reservation
from cloudia.llm import LlmProvider, PermanentLlmError, TransientLlmError
from cloudia.push import Pusher
from cloudia.settings import Settings
from worker.decisions import (DeadLetter, Decision, Delete, GiveBack, JobQueue, Outcome, Requeue, RetryAfter,
                              receive_count)
from worker.heartbeat import JobHeartbeat
from worker.telemetry import WorkerMetrics, logger
from worker.tokens import TokenForwarder

# How long the last streamed tokens may take to go out once the LLM has finished.
TOKEN_DRAIN_BOUND_S = 2.0


@dataclass(frozen=True)
class Route:
    """The provider a job goes to, and the breaker that guards it."""

    provider: LlmProvider
    breaker: CircuitBreaker


class JobProcessor:
    def __init__(self, settings: Settings, *, sqs, jobs: JobStore, history: HistoryStore, cache: ContextCache,
                 pusher: Pusher, primary: Route, fallback: Route | None, metrics: WorkerMetrics,
                 leases: JobLeases, completed: CompletedAnswers, limits: UsageLimits,
                 executor: Executor | None = None,
                 heartbeat_executor: Executor | None = None):
        """`executor` runs the jobs' blocking I/O; `heartbeat_executor` the heartbeats', apart, so that
        jobs busy pushing tokens can never starve the beats that keep them alive."""
        self._settings = settings
        self._res = settings.resilience
        self._sqs = sqs
        self._jobs = jobs
        self._history = history
        self._cache = cache
        self._pusher = pusher
        self._leases = leases
        self._completed = completed
        self._limits = limits
        self.primary = primary
        self.fallback = fallback
        self._metrics = metrics
        self._executor = executor
        self.queue = JobQueue(sqs, settings.jobs_queue_url, settings.jobs_dlq_url, self._res.max_receives, self.io)
        self._heartbeat_executor = heartbeat_executor
        self._heartbeat_queue = JobQueue(sqs, settings.jobs_queue_url, settings.jobs_dlq_url, self._res.max_receives,
                                         self._heartbeat_io)

    async def io(self, fn: Callable[..., Any], *args, **kwargs) -> Any:
        """Run a blocking call (boto3, redis-py) off the event loop, in the worker's I/O threads."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    async def _heartbeat_io(self, fn: Callable[..., Any], *args, **kwargs) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._heartbeat_executor, lambda: fn(*args, **kwargs))

    async def aclose(self) -> None:
        """Close the providers' HTTP clients and the asyncio Redis client on the loop that opened them."""
        await self._completed.aclose()
        await self._pusher.aclose()
        for route in (self.primary, self.fallback):
            close = getattr(route.provider, "aclose", None) if route else None
            if close is not None:
                await close()

    async def release(self, breaker: CircuitBreaker, permit: Permit | None) -> None:
        """Hand back a probe slot not spent on a call; a no-op for any other permit, or once settled."""
        if permit is not None and permit.probe and not permit.settled:
            await self.io(breaker.release, permit)

    @contextlib.asynccontextmanager
    async def holding(self, breaker: CircuitBreaker, permit: Permit | None):
        """The owner of a permit: whatever happens in the block, a probe slot left unsettled is handed
        back at its end (`record` settles it when a call is made)."""
        try:
            yield permit
        finally:
            await self.release(breaker, permit)

    # -- the job ------------------------------------------------------------------------------
    async def handle(self, message: dict, permit: Permit | None = None) -> Outcome:
        """Process one received message. `permit` is a half-open probe slot the consumer took for it:
        from here on this job owns it, and releases it unless a call settled it."""
        attributes = message.get("Attributes", {})
        if "SentTimestamp" in attributes:
            self._metrics.queue_lag_ms(now_ms() - int(attributes["SentTimestamp"]))
        try:
            async with self.holding(self.primary.breaker, permit):
                decision = await self._decide(message, permit)
        except asyncio.CancelledError:
            # Shutdown ran out of time: the job goes back to the queue now rather than after its
            # visibility timeout, and is called again (no answer came).
            await self.queue.carry_out(message, GiveBack(0, Outcome.HANDED_BACK))
            logger.warning("job handed back to the queue at shutdown", extra={"message_id": message.get("MessageId")})
            raise
        # Decided: a shutdown that runs out of time now must not cut the decision half done (a DLQ
        # copy sent but the original not deleted, say).
        await asyncio.shield(self.queue.carry_out(message, decision))
        return decision.outcome

    async def _decide(self, message: dict, permit: Permit | None) -> Decision:
        try:
            job = Job.from_json(message["Body"])
        except (ValueError, TypeError, KeyError) as error:
            self._metrics.job_failed("malformed")
            return DeadLetter(f"malformed job: {error}", "malformed")
        log = {"job_id": job.job_id, "receive_count": receive_count(message)}
        try:
            return await self._process(job, message, permit, log)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - DynamoDB/SQS/Redis trouble: retry through the queue
            logger.exception("job failed on infrastructure, will retry", extra=log)
            return await self._transient(job, message, "infrastructure", str(error), None, log)

    async def _process(self, job: Job, message: dict, permit: Permit | None, log: dict) -> Decision:
        # The lease first, then the state: a worker that finishes and lets go has already marked the
        # job answered, so whoever takes the lease next sees it.
        token, busy_s = await self.io(self._leases.acquire, job.job_id)
        if token is None:  # look again when the other worker's lease ends
            return self._busy_elsewhere(busy_s, log)
        try:
            async with JobHeartbeat(self._res, self._heartbeat_io, self._heartbeat_queue, self._leases, self._jobs,
                                    message, job.job_id, token) as heartbeat:
                # Independent reads at once: each is a network round trip, and the job waits on all of them.
                context, connections = await asyncio.gather(
                    self._context(job), self.io(self._pusher.connections_of, job.user_id))
                # The call's mark first: the same write reads the job's state, so a job that may be
                # called (nearly every one) costs no read of its own. The rest look at what it found.
                start = await self._start_call(job, None)
                if start.mark is None:
                    decision = await self._not_callable(job, start.record, context, log)
                    if decision is not None:
                        return decision
                    start = await self._start_call(job, self._res.llm_recalls_after_crash)
                    if start.mark is None:  # another worker's recall came first
                        return self._busy_elsewhere(self._res.job_liveness_s, log)
                    self._metrics.llm_recalled()
                    logger.warning("a worker died during this job's LLM call: calling again",
                                   extra={**log, "attempt": start.mark.attempt})
                heartbeat.mark = start.mark
                return await self._attempt(job, message, permit, log, context, connections, heartbeat, start.mark)
        finally:
            await self.io(self._leases.release, job.job_id, token)

    async def _start_call(self, job: Job, recall_of: int | None) -> CallStart:
        stale_before_ms = now_ms() - int(self._res.job_liveness_s * 1000)
        return await self.io(self._jobs.start_call, job.job_id, stale_before_ms, recall_of, job.retry)

    async def _not_callable(self, job: Job, record: dict | None, context: list[dict[str, str]],
                            log: dict) -> Decision | None:
        """The job's state refused the call's mark: what becomes of the message, or None when a worker
        died during the job's call and it may be called again (a recall)."""
        record = record or {}
        if job.retry < int(record.get(RETRIES_ATTRIBUTE) or 0):
            # A copy from before its user's retry (a DLQ redrive, a console move): the retry's own
            # message carries the job now.
            logger.info("a copy superseded by its user's retry: dropped", extra=log)
            return Delete(Outcome.DUPLICATE)
        if record.get("status") == ANSWERED:
            await self._repush_answer(job)
            logger.info("job already answered: not calling the LLM again", extra=log)
            return Delete(Outcome.DUPLICATE)
        if record.get("status") == CALLING:
            if await self._answer_stored_before_a_crash(job, context):
                logger.warning("job answered just before its worker died: not calling the LLM again", extra=log)
                return Delete(Outcome.DUPLICATE)
            return await self._after_cut_call(job, record, log)
        # Changed between the write and now (answered or retried meanwhile): look again shortly.
        return self._busy_elsewhere(1, log)

    async def _attempt(self, job: Job, message: dict, permit: Permit | None, log: dict,
                       context: list[dict[str, str]], connections: list[str], heartbeat: JobHeartbeat,
                       mark: CallMark) -> Decision:
        route, permit = await self._route(permit)
        if route is None:
            # Marked for a call that cannot be made now: `queued` again, as after a failed call.
            heartbeat.mark = None
            await self.io(self._jobs.end_failed_call, job.job_id)
            return await self._circuit_open(job, message, permit, log)
        async with self.holding(route.breaker, permit):
            return await self._call(job, message, route, permit, log, context, connections, heartbeat, mark)

    async def _call(self, job: Job, message: dict, route: Route, permit: Permit, log: dict,
                    context: list[dict[str, str]], connections: list[str], heartbeat: JobHeartbeat,
                    mark: CallMark) -> Decision:
        async def push_token(text: str) -> int:
            return await self._pusher.push(job.user_id, protocol.token(job.job_id, text, mark.attempt),
                                            connections)

        tokens = TokenForwarder(push_token, self._res.token_push_interval_ms / 1000) if connections else None
        on_token = self._probe_reported_at_first_token(route.breaker, permit, tokens) if permit.probe else tokens
        completion = None
        started = time.monotonic()

        async def keep_finished(text: str) -> None:  # paid for from now on: see cloudia/completed_answers.py
            # The log line once the text is kept: from then on a kill costs no second call (the
            # recall finds it); a kill before, like one during the stream, pays the call again.
            await self._completed.keep(job.job_id, text)
            logger.info(ANSWER_COMPLETE_LOG, extra={**log, "attempt": mark.attempt})

        sent = await self._within_reservation(job, context)
        try:
            completion = await route.provider.complete(
                [{"role": m["role"], "content": m["content"]} for m in sent], on_token, keep_finished)
        except TransientLlmError as error:
            heartbeat.mark = None
            state = await self.io(route.breaker.record, permit, False, error.timing)
            await self.io(self._jobs.end_failed_call, job.job_id)
            logger.warning("LLM call failed (transient)", extra={**log, "kind": error.kind, "error": str(error),
                                                                   "provider": route.provider.name})
            return await self._transient(job, message, error.kind, str(error), error.retry_after_s, log,
                                         circuit_opened=state == OPEN, breaker=route.breaker)
        except PermanentLlmError as error:
            # The provider answered: it is healthy, the request is what is wrong.
            heartbeat.mark = None
            await self.io(route.breaker.record, permit, True, error.timing)
            logger.error("LLM refused the job (permanent)", extra={**log, "kind": error.kind, "error": str(error)})
            return await self._fail_for_good(job, protocol.LLM_REFUSED_MESSAGE, error.kind, str(error), "permanent")
        except asyncio.CancelledError:
            # Shutdown gave up on the call and no answer came: the hand-back is meant to be called again.
            heartbeat.mark = None
            await self.io(self._jobs.end_failed_call, job.job_id)
            raise
        finally:
            if tokens is not None and completion is None:
                tokens.cancel()
        elapsed_s = time.monotonic() - started

        # The answer is made durable before anything else (a worker killed before it leaves the job
        # `calling`, see `_after_cut_call`): the answer and the ANSWERED state in one transaction, so
        # a job that reads ANSWERED has its answer stored for a redelivery to re-push.
        heartbeat.mark = None
        await self.io(self._store_answer, job, completion.text)
        if tokens is not None:  # the last tokens go out before the answer, within a bound
            await tokens.finish(TOKEN_DRAIN_BOUND_S)
        await self.io(route.breaker.record, permit, True, completion.timing)
        self._metrics.llm_call(elapsed_s, completion.timing)
        _, delivered = await asyncio.gather(
            self.io(self._cache.put, job.user_id, job.conversation_id,
                    context + [{"role": ASSISTANT, "content": completion.text, "jobId": job.job_id}]),
            self._pusher.push(job.user_id, protocol.answer(job.job_id, completion.text, job.conversation_id)))
        await self._charge_answer(job, completion)
        self._metrics.job_succeeded()
        logger.info("job answered", extra={**log, "provider": route.provider.name, "delivered_to": delivered,
                                           "attempt": mark.attempt, "llm_ms": round(elapsed_s * 1000),
                                           "output_tokens": completion.output_tokens})
        return Delete(Outcome.ANSWERED)

    def _probe_reported_at_first_token(self, breaker: CircuitBreaker, permit: Permit,
                                       tokens: TokenForwarder | None) -> Callable[[str], Awaitable[None]]:
        """A half-open probe asks "is the provider back?", and a first token within its bound answers
        it: the probe is recorded then, not after an answer that may take a minute, so a healthy
        provider closes the circuit within seconds. (What the rest of that call does is not counted.)"""
        async def on_token(text: str) -> None:
            if not permit.settled:
                await self.io(breaker.record, permit, True, None)
            if tokens is not None:
                await tokens(text)
        return on_token

    def _busy_elsewhere(self, busy_s: float, log: dict) -> Decision:
        """Another worker is answering this job right now (a duplicate delivery): look again when it
        is done, by which time the job is answered (-> re-push) or free to call."""
        delay_s = max(1, math.ceil(busy_s))
        logger.info("job is being answered by another worker", extra={**log, "retry_in_s": delay_s})
        return GiveBack(delay_s)

    async def _after_cut_call(self, job: Job, record: dict, log: dict) -> Decision | None:
        """The job reads `calling`: another worker's call is still alive (its heartbeat is fresh), or a
        worker died during the call. None means call again (a recall, while recalls are left)."""
        beat_ms = int(record.get(CALL_HEARTBEAT_ATTRIBUTE) or record.get(CALL_STARTED_ATTRIBUTE) or 0)
        silent_s = (now_ms() - beat_ms) / 1000
        if silent_s < self._res.job_liveness_s:
            return self._busy_elsewhere(self._res.job_liveness_s - silent_s + 1, log)
        cut_in_a_row = int(record.get(CUT_IN_A_ROW_ATTRIBUTE) or 0)
        if cut_in_a_row < self._res.llm_recalls_after_crash:
            return None
        return await self._fail_for_good(
            job, protocol.INTERRUPTED_MESSAGE, "interrupted_call",
            f"a worker stopped during the LLM call ({silent_s:.0f} s without a heartbeat), the call having been "
            f"cut {cut_in_a_row + 1} times in a row; not called again so it is not paid once more", "interrupted")

    async def _charge_answer(self, job: Job, completion) -> None:
        """Settle the job's reservation with what the provider reports the call used (in and out); a
        provider that reports no usage leaves the reservation charged, the most the call could cost."""
        used = completion.input_tokens + completion.output_tokens
        await self._settle(job, used if used > 0 else None)

    async def _settle(self, job: Job, real_tokens: int | None) -> None:
        """End the reservation its admission made for the job, once (`UsageLimits.settle`): the real
        cost replaces it when answered, 0 releases it when the job failed for good (the user got no
        answer; what a provider billed for calls cut short is the operator's). A redelivered job finds
        it settled and changes nothing. Best effort: the job's outcome stands whatever Redis says."""
        try:
            settled = await self.io(self._limits.settle, job.user_id, job.job_id, real_tokens)
        except Exception:  # noqa: BLE001 - Redis trouble: the reservation stays charged until the reset
            logger.warning("could not settle the job's budget reservation", extra={"job_id": job.job_id})
            return
        if settled is not None and settled.charged_tokens > settled.reserved_tokens:
            logger.warning("the call cost more than its reservation", extra={
                "job_id": job.job_id, "reserved_tokens": settled.reserved_tokens,
                "charged_tokens": settled.charged_tokens})

    async def _within_reservation(self, job: Job, context: list[dict[str, str]]) -> list[dict[str, str]]:
        """The context to send, within what the job's admission reserved: answers that came in since
        (an earlier message's, in a burst) can have made it longer, and the oldest messages give way.
        A job that holds nothing (settled, past its day's reset, Redis lost it) sends it whole."""
        try:
            hold = await self.io(self._limits.held, job.job_id)
        except Exception:  # noqa: BLE001 - Redis trouble: nothing to hold the call to
            return context
        if hold is None:
            return context
        sent = within_reservation(context, hold.tokens, self._res.llm_max_tokens)
        if len(sent) < len(context):
            logger.info("context trimmed to the budget reservation", extra={
                "job_id": job.job_id, "messages": len(context), "sent": len(sent)})
        return sent

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
        return await self.io(job_context, job, self._cache, self._history, self._res.context_max_messages)

    def _store_answer(self, job: Job, text: str, detail: str = "") -> bool:
        """The answer in the history and the job ANSWERED, in one request; False (and nothing
        written) if the job was answered already."""
        entry = self._history.put_request(job.user_id, job.conversation_id, job.job_id, ASSISTANT, text)
        return self._jobs.finish(job.job_id, ANSWERED, detail, entry=entry)

    async def _stored_answer(self, job: Job) -> str | None:
        entries = await self.io(self._history.latest, job.user_id, job.conversation_id,
                                self._res.context_max_messages * 2)
        return next((e.message for e in reversed(entries) if e.job_id == job.job_id and e.role == ASSISTANT), None)

    async def _repush_answer(self, job: Job) -> bool:
        """Push the stored answer again; False if there is none."""
        answer = await self._stored_answer(job)
        if answer is not None:
            await self._pusher.push(job.user_id, protocol.answer(job.job_id, answer, job.conversation_id))
        return answer is not None

    async def _answer_stored_before_a_crash(self, job: Job, context: list[dict[str, str]]) -> bool:
        """A worker that died after the provider finished the answer but before marking the job
        answered left it `calling`: the answer is whole and paid for (in the history, or kept in
        Redis the moment it was complete), so it is stored, finished and pushed, not called again."""
        if await self._repush_answer(job):
            await self.io(self._jobs.finish, job.job_id, ANSWERED)
            return True
        text = await self._completed.get(job.job_id)
        if text is None:
            return False
        await self.io(self._store_answer, job, text, RECOVERED_DETAIL)
        await asyncio.gather(
            self.io(self._cache.put, job.user_id, job.conversation_id,
                    context + [{"role": ASSISTANT, "content": text, "jobId": job.job_id}]),
            self._pusher.push(job.user_id, protocol.answer(job.job_id, text, job.conversation_id)))
        return True

    # -- failure paths ------------------------------------------------------------------------
    async def _transient(self, job: Job, message: dict, kind: str, detail: str, retry_after_s: float | None,
                         log: dict, circuit_opened: bool = False, breaker: CircuitBreaker | None = None) -> Decision:
        has_other_route = self.fallback is not None and breaker is self.primary.breaker
        if circuit_opened and breaker is not None and not has_other_route:
            # The circuit is open after this failure (it opened, or a half-open probe failed): the
            # provider is down, not this job. The job waits it out and its user hears why now.
            # (With a fallback provider it simply retries on the usual schedule, on the fallback.)
            await self._pusher.push(job.user_id, protocol.circuit_open(job.job_id))
            return await self._hold(job, await self.io(breaker.open_remaining_s), log)
        receives = receive_count(message)
        if receives >= self._res.max_receives:
            return await self._fail_for_good(job, protocol.LLM_FAILED_MESSAGE, f"exhausted_{kind}",
                                             f"{receives} attempts; last: {detail}", "exhausted")
        delay_s = visibility_timeout_s(receives, self._res, retry_after_s)
        self._metrics.job_retried(kind)
        logger.info("job will be retried", extra={**log, "kind": kind, "retry_in_s": delay_s})
        return RetryAfter(delay_s)

    async def _circuit_open(self, job: Job, message: dict, permit: Permit, log: dict) -> Decision:
        """Fail fast without touching the provider; keep the job in the queue until the circuit lets it."""
        await self._pusher.push(job.user_id, protocol.circuit_open(job.job_id))
        if permit.state == OPEN:
            delay_s = permit.retry_after_s
        else:  # half-open and every probe slot taken: come back on the usual schedule
            delay_s = visibility_timeout_s(receive_count(message), self._res)
        return await self._hold(job, delay_s, log)

    async def _hold(self, job: Job, delay_s: float, log: dict) -> Decision:
        """Keep a job in the queue while the circuit is open, as a fresh message delayed by `delay_s`.

        A fresh message starts again at zero receives: holding it by visibility would spend one of
        its 5 receives at each look, and a long outage would send healthy jobs to the DLQ. Past
        `circuit_hold_max_s` the job goes to the DLQ, its user told, instead."""
        held_s = (now_ms() - job.created_at_ms) / 1000
        if held_s > self._res.circuit_hold_max_s:
            return await self._fail_for_good(job, protocol.CIRCUIT_OPEN_MESSAGE, "circuit_open",
                                             f"kept {held_s:.0f} s while the circuit was open", "circuit_open")
        logger.info("circuit open: job kept in the queue", extra={**log, "retry_in_s": max(1, delay_s)})
        return Requeue(max(1, delay_s))

    async def _fail_for_good(self, job: Job, user_message: str, reason_code: str, detail: str,
                             failure_class: str) -> Decision:
        """Tell the user and record it, and give the job's budget reservation back; the decision then
        moves the message to the DLQ (one copy)."""
        await self._tell_failure(job, user_message, reason_code, detail)
        await self._settle(job, 0)
        self._metrics.job_failed(failure_class)
        logger.error("job failed for good, moved to the DLQ",
                     extra={"job_id": job.job_id, "reason": reason_code, "detail": detail})
        return DeadLetter(f"{reason_code}: {detail}", failure_class)

    async def _tell_failure(self, job: Job, user_message: str, reason_code: str, detail: str) -> None:
        told = self._history.put_request(job.user_id, job.conversation_id, job.job_id, ERROR, user_message)
        for step in (
            lambda: self._pusher.push(job.user_id, protocol.error(user_message, job.job_id, reason=reason_code)),
            # What its user was told, in the history, and the job's final state: one request.
            lambda: self.io(self._jobs.finish, job.job_id, FAILED, f"{reason_code}: {detail}", entry=told),
        ):
            try:  # best effort: the DLQ copy below is what must not be missed
                await step()
            except Exception:  # noqa: BLE001
                logger.exception("could not record the failure of a job", extra={"job_id": job.job_id})

    async def settle_dead_letter(self, message: dict) -> None:
        """A message SQS moved to the DLQ by itself, after its last receive was lost (a worker died
        during the job's last attempt): the job fails and its user is told, as when the worker
        dead-letters a job, and the DLQ copy is replaced by one that says why. The late copy of an
        answered job is dropped."""
        receives = receive_count(message) - 1  # this look was a receive too
        detail = f"SQS moved it after {receives} receives; the last attempt ended with its worker"
        try:
            job = Job.from_json(message["Body"])
        except (ValueError, TypeError, KeyError):
            job = None
        record = await self.io(self._jobs.get, job.job_id) if job else None
        status = (record or {}).get("status")
        dlq_url = self._settings.jobs_dlq_url
        if job is not None and status == ANSWERED:
            # Answered and stored, its delete too late (a Redis outage held the job past its
            # visibility): nothing failed and nothing is left to redrive.
            await self.io(self._sqs.delete_message, QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"])
            logger.info("an answered job's late copy, moved by SQS: dropped from the DLQ",
                        extra={"job_id": job.job_id, "receive_count": receives})
            return
        if job is not None and status != FAILED:
            await self._tell_failure(job, protocol.INTERRUPTED_MESSAGE, "max_receives", detail)
            await self._settle(job, 0)
            self._metrics.job_failed("max_receives")
        attributes = {**sendable_attributes(message.get("MessageAttributes", {})),
                      **failure_attributes(f"max_receives: {detail}", "max_receives", receives)}
        await self.io(self._sqs.send_message, QueueUrl=dlq_url, MessageBody=message["Body"],
                      MessageAttributes=attributes)
        await self.io(self._sqs.delete_message, QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"])
        logger.error("job moved to the DLQ by SQS: failed, user told",
                     extra={"job_id": job.job_id if job else None, "receive_count": receives})
