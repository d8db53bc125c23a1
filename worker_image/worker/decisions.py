"""What becomes of a job's message, decided by the job logic and carried out here, in one place.

Every path of a job ends in one `Decision`, and `JobQueue.carry_out` turns it into SQS calls, so
"every message ends deleted, or visible again later" holds here and nowhere else:
- `Delete`: answered, or a duplicate of an answered job;
- `RetryAfter`: hidden for the backoff delay, then received again (its receive count grows);
- `Requeue`: a fresh copy delayed, the original deleted (its receive count starts again at 0);
- `DeadLetter`: a copy in the DLQ saying why, the original deleted (its user was told first);
- `GiveBack`: visible again after a delay, as a fresh copy on its last receive (a message made
  visible on its last receive would be moved to the DLQ by SQS at the next look, with nobody told).
"""
from __future__ import annotations

import asyncio
import enum
import math
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Union

from cloudia.dlq_format import failure_attributes

# SQS's longest DelaySeconds.
SQS_MAX_DELAY_S = 900
# SQS takes at most 10 entries per batch request.
SQS_MAX_BATCH = 10
# How long a delete waits for others to share its request: under load the jobs ending within this
# window cost one request instead of ten; alone, a job's message goes this much later (its answer is
# out already).
DELETE_LINGER_S = 0.05


class Outcome(str, enum.Enum):
    """How a job's turn ended, for logs, the worker's tally and tests."""

    ANSWERED = "answered"
    DUPLICATE = "duplicate"
    RETRY = "retry"
    DEAD_LETTERED = "dead_lettered"
    DELAYED_CIRCUIT_OPEN = "delayed_circuit_open"
    BUSY_ELSEWHERE = "busy_elsewhere"
    HANDED_BACK = "handed_back"


@dataclass(frozen=True)
class Delete:
    outcome: Outcome = Outcome.ANSWERED


@dataclass(frozen=True)
class RetryAfter:
    delay_s: int
    outcome: Outcome = Outcome.RETRY


@dataclass(frozen=True)
class Requeue:
    delay_s: float
    outcome: Outcome = Outcome.DELAYED_CIRCUIT_OPEN


@dataclass(frozen=True)
class DeadLetter:
    reason: str
    failure_class: str
    outcome: Outcome = Outcome.DEAD_LETTERED


@dataclass(frozen=True)
class GiveBack:
    delay_s: float
    outcome: Outcome = Outcome.BUSY_ELSEWHERE


Decision = Union[Delete, RetryAfter, Requeue, DeadLetter, GiveBack]
Io = Callable[..., Awaitable[Any]]


def receive_count(message: dict) -> int:
    return int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))


class JobQueue:
    """The jobs queue and its DLQ, as the worker acts on them. `io` runs a blocking SQS call off the
    event loop."""

    def __init__(self, sqs, queue_url: str, dlq_url: str, max_receives: int, io: Io | None = None):
        self._sqs = sqs
        self.queue_url = queue_url
        self.dlq_url = dlq_url
        self._max_receives = max_receives
        self._io = io or _inline
        self._deletes = DeleteBatcher(sqs, queue_url, self._io)

    async def carry_out(self, message: dict, decision: Decision) -> None:
        if isinstance(decision, Delete):
            await self.delete(message)
        elif isinstance(decision, RetryAfter):
            await self.set_visibility(message, decision.delay_s)
        elif isinstance(decision, Requeue):
            await self.requeue(message, decision.delay_s)
        elif isinstance(decision, DeadLetter):
            await self._io(self._sqs.send_message, QueueUrl=self.dlq_url, MessageBody=message["Body"],
                           MessageAttributes=failure_attributes(decision.reason, decision.failure_class,
                                                                receive_count(message)))
            await self.delete(message)
        elif isinstance(decision, GiveBack):
            if receive_count(message) >= self._max_receives:
                await self.requeue(message, decision.delay_s)
            else:
                await self.set_visibility(message, math.ceil(decision.delay_s))
        else:  # pragma: no cover - a new Decision without its SQS calls
            raise TypeError(f"unknown decision {decision!r}")

    async def requeue(self, message: dict, delay_s: float) -> int:
        """A fresh copy delayed by `delay_s` (at most SQS's 900 s), then the original deleted. A crash
        in between leaves two copies, which the job lease and the job's state keep from calling the
        LLM twice. The delay used."""
        delay = min(SQS_MAX_DELAY_S, math.ceil(max(0.0, delay_s)))
        await self._io(self._sqs.send_message, QueueUrl=self.queue_url, MessageBody=message["Body"],
                       DelaySeconds=delay)
        await self.delete(message)
        return delay

    async def delete(self, message: dict) -> None:
        await self._deletes.delete(message["ReceiptHandle"])

    async def set_visibility(self, message: dict, seconds: float) -> None:
        await self._io(self._sqs.change_message_visibility, QueueUrl=self.queue_url,
                       ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=int(seconds))


class DeleteBatcher:
    """Deletes of the jobs queue's messages, sent together: each `delete` waits for its batch's
    `DeleteMessageBatch` (up to 10 entries, or what came within `DELETE_LINGER_S`) and raises as a
    lone `DeleteMessage` would if its entry failed (the message then reappears after its visibility
    timeout, and its job's state makes it a duplicate)."""

    def __init__(self, sqs, queue_url: str, io: Io, linger_s: float = DELETE_LINGER_S):
        self._sqs = sqs
        self._queue_url = queue_url
        self._io = io
        self._linger_s = linger_s
        self._pending: list[tuple[str, asyncio.Future]] = []
        self._timer: asyncio.TimerHandle | None = None

    async def delete(self, receipt_handle: str) -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self._pending.append((receipt_handle, done))
        if len(self._pending) >= SQS_MAX_BATCH:
            self._send()
        elif self._timer is None:
            self._timer = loop.call_later(self._linger_s, self._send)
        await asyncio.shield(done)  # a cancelled job's delete still goes: it was decided

    def _send(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending[:SQS_MAX_BATCH], self._pending[SQS_MAX_BATCH:]
        if self._pending:
            self._timer = asyncio.get_running_loop().call_later(self._linger_s, self._send)
        if batch:
            asyncio.ensure_future(self._send_batch(batch))

    async def _send_batch(self, batch: list[tuple[str, asyncio.Future]]) -> None:
        try:
            reply = await self._io(self._sqs.delete_message_batch, QueueUrl=self._queue_url,
                                   Entries=[{"Id": str(i), "ReceiptHandle": h} for i, (h, _) in enumerate(batch)])
        except Exception as error:  # noqa: BLE001 - each waiting delete raises it
            for _, done in batch:
                if not done.done():
                    done.set_exception(error)
            return
        failed = {int(f["Id"]): f for f in reply.get("Failed", [])}
        for i, (_, done) in enumerate(batch):
            if done.done():
                continue
            if i in failed:
                done.set_exception(RuntimeError(f"delete refused: {failed[i].get('Code')} {failed[i].get('Message')}"))
            else:
                done.set_result(None)


async def _inline(fn, *args, **kwargs):
    result = fn(*args, **kwargs)
    return await result if asyncio.iscoroutine(result) else result
