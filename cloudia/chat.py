"""What the WebSocket functions do, free of Lambda event shapes: register connections, answer a
heartbeat, accept a user's message as a job exactly once, and replay a conversation since a point.

`ChatService.from_settings` builds every dependency from `Settings` with the architecture's
timeouts (Redis 500 ms, DynamoDB 1 s, SQS bounded); `service()` does it once per process.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger

from cloudia import aws, protocol, redis_client
from cloudia.breaker import circuit_is_open
from cloudia.connections import AT_CAPACITY, CLOSED, ConnectionRegistry
from cloudia.context_cache import ContextCache, job_context
from cloudia.history import HISTORY_PAGE_SIZE, USER, Entry, HistoryStore, fit_page
from cloudia.jobs import ANSWERED, FAILED, QUEUED, RETRIES_ATTRIBUTE, Job, JobStore, job_id_for, now_ms
from cloudia.limits import TooManyConnections, Usage, UsageLimits, call_tokens
from cloudia.once import built_once
from cloudia.schema import IDEMPOTENCY_KEY_PREFIX
from cloudia.settings import Settings

if TYPE_CHECKING:  # the frames' models (pydantic) are loaded by the functions that parse frames
    from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig

    from cloudia.frames import History, Retry, SendMessage

logger = Logger(child=True)

# The idempotency key: a user's own message id. A resend with the same id but another text or
# conversation is refused rather than silently answered with the first job.
IDEMPOTENCY_KEY_JMESPATH = "[userId, clientMessageId]"
IDEMPOTENCY_PAYLOAD_JMESPATH = "[conversationId, message]"


class NotConnected(Exception):
    """The connection is unknown (never registered, or its registration expired)."""

    reason = "unauthenticated"


class ConnectionClosed(NotConnected):
    """The connection's `$disconnect` already ran: a frame of it that was still in flight is refused
    rather than registering the connection again (nobody reads the reply; a page resends on reconnect)."""

    reason = "connection_closed"


class EnqueueFailed(Exception):
    reason = "enqueue_failed"


class RetryRefused(Exception):
    """A `retry` of a job that is not the sender's own failed job; `reason` a stable code."""

    def __init__(self, reason: str, message: str, status_code: int):
        super().__init__(message)
        self.reason = reason
        self.status_code = status_code


@dataclass(frozen=True)
class Accepted:
    job_id: str
    client_message_id: str
    conversation_id: str
    # True when this is a resend answered from the idempotency record, not a new job.
    replayed: bool = False
    # The user's daily budget once this message's reservation was taken (`protocol.budget`).
    budget: dict | None = None


def _mark_replayed(response: Any, idempotent_data: Any) -> Any:  # noqa: ARG001 - Powertools' hook signature
    return {**response, "replayed": True}


class ChatService:
    def __init__(self, settings: Settings, redis, dynamodb, sqs):
        resilience = settings.resilience
        self.settings = settings
        self._redis = redis
        self.connections = ConnectionRegistry(redis, resilience.connection_ttl_s, resilience.connection_tombstone_s)
        self.history = HistoryStore.of(settings, dynamodb)
        self.jobs = JobStore.of(settings, dynamodb)
        self.limits = UsageLimits(redis, resilience.rate_limit_per_minute, resilience.daily_token_budget,
                                  resilience.frame_rate_limit_per_minute)
        # The context the worker will send, read the way it reads it, to reserve what a call can cost.
        self._context = ContextCache(redis, resilience.context_ttl_s, resilience.context_max_messages)
        self._sqs = sqs

    # Built on first use: only the function that accepts messages needs Powertools' idempotency
    # utility, a large import for the other functions' cold start.
    @functools.cached_property
    def _idempotency(self) -> IdempotencyConfig:
        from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig

        return IdempotencyConfig(
            event_key_jmespath=IDEMPOTENCY_KEY_JMESPATH,
            payload_validation_jmespath=IDEMPOTENCY_PAYLOAD_JMESPATH,
            raise_on_no_idempotency_key=True,
            expires_after_seconds=self.settings.resilience.idempotency_ttl_s,
            response_hook=_mark_replayed,
        )

    @functools.cached_property
    def _accept_once(self):
        from aws_lambda_powertools.utilities.idempotency import idempotent_function

        from cloudia.idempotency import RedisIdempotencyRecords

        # The records live in Redis beside the rest of a message's admission (rate limit, budget):
        # no AWS request of their own. Should Redis lose one, the resend still meets its job's row
        # (the job id is the message's, `job_id_for`), so no second job is made.
        persistence = RedisIdempotencyRecords(client=self._redis)  # carries the 500 ms bound
        # Powertools deletes the record when `_accept` raises, so a failure is never replayed.
        return idempotent_function(
            self._accept,
            data_keyword_argument="request",
            persistence_store=persistence,
            config=self._idempotency,
            key_prefix=IDEMPOTENCY_KEY_PREFIX,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> "ChatService":
        resilience = settings.resilience
        return cls(settings, redis_client.client(settings), aws.dynamodb(resilience), aws.sqs(resilience))

    def bind_invocation(self, lambda_context) -> None:
        """Lets idempotency expire an in-progress record when this invocation would time out."""
        self._idempotency.register_lambda_context(lambda_context)

    # Connections
    def connect(self, connection_id: str, user_id: str) -> None:
        """Register a new connection of the user, within `max_connections_per_user`."""
        cap = self.settings.resilience.max_connections_per_user
        outcome = self.connections.register(connection_id, user_id, max_per_user=cap)
        if outcome == AT_CAPACITY:
            raise TooManyConnections(protocol.TOO_MANY_CONNECTIONS_MESSAGE.format(limit=cap))
        if outcome == CLOSED:
            raise ConnectionClosed(protocol.CONNECTION_CLOSED_MESSAGE)

    def disconnect(self, connection_id: str) -> None:
        self.connections.unregister(connection_id)

    def _register_again(self, connection_id: str, user_id: str) -> None:
        """A connection API Gateway still holds open (it was admitted at `$connect`, so the cap is not
        counted again) whose registration was lost; refused once its `$disconnect` ran."""
        if self.connections.register(connection_id, user_id) == CLOSED:
            logger.info("frame of a closed connection: not registered again")
            raise ConnectionClosed(protocol.CONNECTION_CLOSED_MESSAGE)

    def current_user(self, connection_id: str, authorized_user: str | None = None) -> str:
        """The connection's user. On AWS the authorizer's user rides on every event: a connection
        whose registration expired is registered again so answers still find it (unless it closed)."""
        user_id = self.connections.user_of(connection_id)
        if authorized_user and user_id != authorized_user:
            self._register_again(connection_id, authorized_user)
            return authorized_user
        if user_id is None:
            raise NotConnected("this connection is not registered (expired or unknown): reconnect")
        return user_id

    def frame_user(self, connection_id: str, authorized_user: str | None = None) -> str:
        """Whose frame this is, registering nothing: the authorizer's user, else the registration's."""
        user_id = authorized_user or self.connections.user_of(connection_id)
        if user_id is None:
            raise NotConnected("this connection is not registered (expired or unknown): reconnect")
        return user_id

    def admit_frame(self, user_id: str) -> None:
        """Count a `ping` or `history` frame against the user's rate limit, or raise `RateLimited`."""
        self.limits.admit_frame(user_id)

    def heartbeat(self, connection_id: str, authorized_user: str | None = None) -> bool:
        """Renew the connection's TTL (the client's periodic ping). True if its registration was lost
        and made again: answers pushed meanwhile missed the connection."""
        if self.connections.refresh(connection_id) is not None:
            return False
        if not authorized_user:
            raise NotConnected("this connection is not registered (expired or unknown): reconnect")
        self._register_again(connection_id, authorized_user)
        return True

    # Messages
    def send_message(self, user_id: str, frame: SendMessage) -> Accepted:
        """Accept the message once per (user, clientMessageId); a resend gets the same job back."""
        result = self._accept_once(request={
            "userId": user_id,
            "conversationId": frame.conversation_id,
            "clientMessageId": frame.client_message_id,
            "message": frame.message,
        })
        return Accepted(
            job_id=result["jobId"],
            client_message_id=result["clientMessageId"],
            conversation_id=result["conversationId"],
            replayed=bool(result.get("replayed")),
            budget=result.get("budget"),
        )

    def _accept(self, request: dict[str, str]) -> dict[str, Any]:
        user_id = request["userId"]
        job = Job(
            job_id=job_id_for(user_id, request["clientMessageId"]),
            user_id=user_id,
            conversation_id=request["conversationId"],
            client_message_id=request["clientMessageId"],
            message=request["message"],
            created_at_ms=now_ms(),
        )
        usage = self._reserve(job)
        entry = self.history.put_request(user_id, job.conversation_id, job.job_id, USER, job.message,
                                         job.created_at_ms)
        try:
            existing = self.jobs.create(job, entry)
        except Exception:
            # One transaction: nothing was written (or, timed out, it landed and a resend finds the
            # row queued, below). The reservation goes back either way.
            self._release_reservation(job)
            raise
        created = existing is None
        if existing is None:
            try:
                self._enqueue(job)
            except Exception as exc:
                self._take_back(job, exc)
                raise
        elif existing.get("status") == QUEUED:
            # The resend of a message whose sender stopped between the job's row and the queue (no
            # worker has taken it): a second copy is harmless (the job's lease and state keep it from
            # being answered twice), a missing one would be a lost message.
            self._enqueue(replace(job, created_at_ms=int(existing.get("createdAtMs") or job.created_at_ms)))
        if not created:
            logger.info("a resend of a message already accepted", extra={"jobId": job.job_id})
        return {"jobId": job.job_id, "clientMessageId": job.client_message_id,
                "conversationId": job.conversation_id, "budget": usage.budget.told() if usage.budget else None,
                **({} if created else {"replayed": True})}

    # Budget
    def _reserve(self, job: Job) -> Usage:
        """Admit the job within its user's rate limit and reserve the most its LLM call can cost
        (`call_cost`), held for the job until the worker settles it with the real usage
        (`UsageLimits.settle`); raises `RateLimited` or `BudgetExceeded`. A job that holds a
        reservation already is not charged twice."""
        return self.limits.admit(job.user_id, self.call_cost(job), job_id=job.job_id)

    def call_cost(self, job: Job) -> int:
        """The most the job's LLM call can cost: the messages the worker will send, built as it
        builds them (`job_context`), and `llm_max_tokens` back. What comes in meanwhile (an earlier
        job's answer) the worker trims to fit."""
        res = self.settings.resilience
        context = job_context(job, self._context, self.history, res.context_max_messages)
        return call_tokens([m["content"] for m in context], res.llm_max_tokens)

    def _enqueue(self, job: Job) -> None:
        try:
            self._sqs.send_message(
                QueueUrl=self.settings.jobs_queue_url,
                MessageBody=job.to_json(),
                MessageAttributes={"jobId": {"DataType": "String", "StringValue": job.job_id}},
            )
        except Exception as exc:
            raise EnqueueFailed("the message could not be queued: please send it again") from exc

    def _take_back(self, job: Job, cause: Exception) -> None:
        """Undo what was written for a job that never reached the queue, best effort: the job's row
        and the user's entry go (a resend writes them again, under the same job id) and its
        reservation goes back to the budget. A send that timed out may still have landed: a worker
        that took the job keeps its row (the removal is conditional on `queued`)."""
        logger.warning("job not queued, taking it back", extra={"jobId": job.job_id, "cause": repr(cause)})
        entry = Entry(job.job_id, USER, job.message, job.created_at_ms)
        undo = (
            lambda: self.jobs.remove_queued(job.job_id),
            lambda: self.history.remove(job.user_id, job.conversation_id, entry),
            lambda: self.limits.release(job.user_id, job.job_id),
        )
        for step in undo:
            try:
                step()
            except Exception:
                logger.exception("could not undo part of a job that was not queued", extra={"jobId": job.job_id})

    def _release_reservation(self, job: Job) -> None:
        try:
            self.limits.release(job.user_id, job.job_id)
        except Exception:
            logger.exception("could not give back the reservation of a job not queued", extra={"jobId": job.job_id})

    # History
    def llm_circuit_is_open(self) -> bool:
        """The worker fleet's shared breaker state: a sender hears at once that its job must wait."""
        return circuit_is_open(self._redis)

    def history_since(self, user_id: str, frame: History) -> list[Entry]:
        return self.history.since(user_id, frame.conversation_id, frame.since, limit=HISTORY_PAGE_SIZE)

    def history_page(self, user_id: str, frame: History) -> dict[str, Any]:
        """The `history` event answering `frame`: one page of the conversation since its point, or
        after its cursor, within the count and the bytes a reply may take; `next` while more follow."""
        entries, more = self.history.page(user_id, frame.conversation_id, frame.since, after=frame.cursor,
                                          limit=HISTORY_PAGE_SIZE)
        return fit_page(frame.conversation_id, entries, more)

    # Retry
    def retry(self, user_id: str, frame: Retry) -> Accepted:
        """Queue the user's own failed job again: the same job and text, admitted as a new message is
        (rate limit and budget). Idempotent: of two retries (a double click, a resend) one queues it,
        the other is answered the same; a job that is not failed, or not theirs, is refused."""
        record = self._own_job(user_id, frame.job_id)
        if record.get("status") != FAILED:
            return self._retried_already(record)
        conversation_id, created_at_ms = record["conversationId"], int(record["createdAtMs"])
        entry = self.history.entry(user_id, conversation_id, created_at_ms, frame.job_id, USER)
        if entry is None:  # taken back when it could not be queued (see `_take_back`): never a job to retry
            raise RetryRefused("job_not_retriable", protocol.RETRY_NOT_RETRIABLE_MESSAGE, 409)
        job = Job(job_id=frame.job_id, user_id=user_id, conversation_id=conversation_id,
                  client_message_id=record.get("clientMessageId") or "", message=entry.message,
                  created_at_ms=created_at_ms)
        # The admission a new message gets (`_accept`): the rate limit, and the most its call can
        # cost reserved for the job. (Its failure released the last reservation.)
        usage = self._reserve(job)
        retries = self.jobs.retry_failed(job.job_id, user_id)
        if retries is None:
            # Another retry of it moved it first and queued it. The job's reservation is one, held
            # for the job (a second admission reserves nothing more), and that retry's: kept.
            return self._retried_already(self._own_job(user_id, job.job_id))
        job = replace(job, retry=retries)
        try:
            self._enqueue(job)
        except Exception as exc:
            self._take_back_retry(job, exc)
            raise
        logger.info("failed job queued again", extra={"jobId": job.job_id, "retry": retries})
        return Accepted(job_id=job.job_id, client_message_id=job.client_message_id,
                        conversation_id=job.conversation_id,
                        budget=usage.budget.told() if usage.budget else None)

    def _own_job(self, user_id: str, job_id: str) -> dict:
        """The job's row if it is the user's; another user's job is answered as an unknown one."""
        record = self.jobs.get(job_id)
        if not record or record.get("userId") != user_id:
            raise RetryRefused("job_not_found", protocol.RETRY_NOT_FOUND_MESSAGE, 404)
        return record

    @staticmethod
    def _retried_already(record: dict) -> Accepted:
        """A retry of a job that is not failed: answered as the retry that queued it was, if one did
        and it is not answered yet; refused otherwise."""
        status = record.get("status") or "unknown"
        if int(record.get(RETRIES_ATTRIBUTE) or 0) and status != ANSWERED:
            return Accepted(job_id=record["jobId"], client_message_id=record.get("clientMessageId") or "",
                            conversation_id=record.get("conversationId") or "", replayed=True)
        raise RetryRefused("job_not_failed", protocol.RETRY_NOT_FAILED_MESSAGE.format(status=status), 409)

    def _take_back_retry(self, job: Job, cause: Exception) -> None:
        """A retry that did not reach the queue: the job failed again (its state, never left queued)
        and its reservation back to the budget, best effort, as `_take_back` does for a new message."""
        logger.warning("retry not queued, taking it back", extra={"jobId": job.job_id, "cause": repr(cause)})
        for step in (lambda: self.jobs.finish(job.job_id, FAILED, f"retry not queued: {cause}"[:500]),
                     lambda: self.limits.release(job.user_id, job.job_id)):
            try:
                step()
            except Exception:
                logger.exception("could not undo part of a retry that was not queued", extra={"jobId": job.job_id})


@built_once(maxsize=1)
def settings() -> Settings:
    """The process's settings, read from the environment once (a Lambda cold start)."""
    return Settings.from_env()


@built_once(maxsize=1)
def service() -> ChatService:
    return ChatService.from_settings(settings())


def reload() -> None:
    """Forget the settings and service read so far, as a new cold start would (tests, local runs)."""
    service.cache_clear()
    settings.cache_clear()
