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
        await self._io(self._sqs.delete_message, QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])

    async def set_visibility(self, message: dict, seconds: float) -> None:
        await self._io(self._sqs.change_message_visibility, QueueUrl=self.queue_url,
                       ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=int(seconds))


async def _inline(fn, *args, **kwargs):
    result = fn(*args, **kwargs)
    return await result if asyncio.iscoroutine(result) else result
