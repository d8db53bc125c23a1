"""The SQS consumer: long polling, bounded concurrency, breaker-aware intake, graceful shutdown.

Concurrency model: one asyncio event loop. LLM calls go through the providers' official async SDK
clients, so `worker_concurrency` calls (each seconds long, nearly all waiting on the network) share
one thread and one connection pool at little CPU and memory cost. boto3 and redis-py are blocking, and
their calls are short and bounded by timeouts (DynamoDB 1 s, Redis 500 ms), so they run in a small
thread pool (`concurrency + 4` threads) rather than on the loop. The long poll runs in a daemon thread
of its own, so a pending 20 s receive never delays shutdown.

While the primary's circuit is open (and no fallback is configured) the worker takes nothing from the
queue: a waiting job must not spend its receives (5 receives send it to the DLQ). When the circuit is
half-open it takes one message per probe slot it holds, so only the jobs the breaker lets through
leave the queue.
"""
from __future__ import annotations

import asyncio
import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

from cloudia.breaker import CLOSED, HALF_OPEN, OPEN, Permit
from cloudia.settings import Settings
from worker import dead_letters
from worker.decisions import GiveBack, Outcome
from worker.healthcheck import touch
from worker.processor import JobProcessor
from worker.telemetry import WorkerMetrics, logger

# SQS long polling: the longest wait SQS allows (the default of `Settings.worker_poll_wait_s`).
LONG_POLL_WAIT_S = 20
# A probe slot is held while polling for its job: poll briefly so the slot is soon used or returned.
PROBE_POLL_WAIT_S = 2
# SQS hands out at most 10 messages per receive.
MAX_MESSAGES_PER_RECEIVE = 10
# While the circuit is open, look again at least this often (shutdown and heartbeat stay responsive).
CIRCUIT_OPEN_RECHECK_S = 1.0
# When every slot is busy, wake up this often to touch the heartbeat.
SLOT_WAIT_S = 1.0
# Handed-back jobs at the end of a shutdown get this long to reset their visibility.
HAND_BACK_S = 3.0
METRICS_FLUSH_S = 10.0


def _in_daemon_thread(fn, *args, **kwargs) -> asyncio.Future:
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def settle(result=None, error: BaseException | None = None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def run():
        try:
            result = fn(*args, **kwargs)
        except BaseException as error:  # noqa: BLE001 - handed to the awaiting coroutine
            # Bound now: `error` is unbound when the except block ends, before the loop runs this.
            loop.call_soon_threadsafe(settle, None, error)
        else:
            loop.call_soon_threadsafe(settle, result)

    threading.Thread(target=run, name="sqs-receive", daemon=True).start()
    return future


class Worker:
    def __init__(self, settings: Settings, processor: JobProcessor, receiver_sqs, metrics: WorkerMetrics,
                 executor: ThreadPoolExecutor, health_file: str):
        self._settings = settings
        self._res = settings.resilience
        self._processor = processor
        self._receiver = receiver_sqs
        self._metrics = metrics
        self._executor = executor
        self._health_file = health_file
        self._in_flight: set[asyncio.Task] = set()
        self._poll_wait_s = max(0, min(LONG_POLL_WAIT_S, settings.worker_poll_wait_s))
        self._open_poll: asyncio.Future | None = None
        self._hand_backs: set[asyncio.Future] = set()
        self._stop = asyncio.Event()  # made again by `run`, on the loop that runs it
        self._signals = 0
        self.outcomes: dict[str, int] = {}  # Outcome values, "handed_back" and "crashed"

    # -- lifecycle ----------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig)

    def request_stop(self, sig: int = signal.SIGTERM) -> None:
        """First signal: stop taking jobs and finish the ones in flight. Second: exit at once (the
        jobs in flight are not deleted, so SQS hands them out again after their visibility timeout)."""
        self._signals += 1
        if self._signals > 1:
            logger.warning("second stop signal: exiting now", extra={"in_flight": len(self._in_flight)})
            self._metrics.flush()
            os._exit(128 + int(sig))
        logger.info("stop signal: finishing in-flight jobs", extra={"in_flight": len(self._in_flight),
                                                                   "grace_s": self._res.worker_shutdown_grace_s})
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def run(self) -> None:
        self._stop = asyncio.Event()  # on this loop
        if self._signals:
            self._stop.set()
        flusher = asyncio.create_task(self._flush_metrics_periodically())
        sweeper = asyncio.create_task(dead_letters.sweep_periodically(
            self._processor, self._receiver, self._settings.jobs_dlq_url, self._res.dlq_sweep_s))
        logger.info("worker started", extra={"queue": self._settings.jobs_queue_url,
                                             "concurrency": self._res.worker_concurrency,
                                             "provider": self._processor.primary.provider.name,
                                             "fallback": self._processor.fallback.provider.name
                                             if self._processor.fallback else None})
        try:
            while not self.stopping:
                await self._iteration()
        finally:
            await self._drain()
            await self._processor.aclose()
            flusher.cancel()
            sweeper.cancel()
            self._metrics.flush()
            logger.info("worker stopped", extra={"outcomes": self.outcomes})

    async def _iteration(self) -> None:
        touch(self._health_file)
        free = self._res.worker_concurrency - len(self._in_flight)
        if free <= 0:
            await asyncio.wait(self._in_flight, timeout=SLOT_WAIT_S, return_when=asyncio.FIRST_COMPLETED)
            return
        permit = await self._processor.io(self._processor.primary.breaker.acquire)
        if permit.allowed and permit.state == CLOSED:
            await self._receive_and_start(min(free, MAX_MESSAGES_PER_RECEIVE), self._poll_wait_s, None)
        elif permit.allowed and permit.state == HALF_OPEN:
            await self._receive_and_start(1, min(PROBE_POLL_WAIT_S, self._poll_wait_s), permit)
        elif self._processor.fallback is not None:
            # The fallback provider answers while the primary is open: keep taking jobs.
            await self._receive_and_start(min(free, MAX_MESSAGES_PER_RECEIVE), self._poll_wait_s, None)
        else:
            wait_s = min(CIRCUIT_OPEN_RECHECK_S, permit.retry_after_s or CIRCUIT_OPEN_RECHECK_S)
            if permit.state == OPEN:
                logger.debug("circuit open: not taking jobs", extra={"retry_after_s": permit.retry_after_s})
            await self._sleep_unless_stopped(max(0.05, wait_s))

    async def _receive_and_start(self, count: int, wait_s: int, probe: Permit | None) -> None:
        receive = _in_daemon_thread(
            self._receiver.receive_message, QueueUrl=self._settings.jobs_queue_url,
            MaxNumberOfMessages=count, WaitTimeSeconds=wait_s,
            AttributeNames=["ApproximateReceiveCount", "SentTimestamp"])
        stop_wait = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({receive, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_wait.cancel()
        if not receive.done():
            # Stopping mid-poll: whatever the poll still returns goes straight back to the queue.
            self._open_poll = receive
            receive.add_done_callback(lambda f: self._hand_back_later(f, probe))
            return
        try:
            messages = receive.result().get("Messages", [])
        except Exception:  # noqa: BLE001 - SQS unreachable: log, back off a little, try again
            logger.exception("receiving from the jobs queue failed")
            await self._release(probe)
            await self._sleep_unless_stopped(1.0)
            return
        if self.stopping or not messages:
            for message in messages:
                await self._hand_back(message)
            await self._release(probe)
            return
        # From here the job owns the probe slot (`JobProcessor.holding`).
        for message in messages:
            task = asyncio.create_task(self._run_job(message, probe))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _run_job(self, message: dict, probe: Permit | None) -> None:
        try:
            outcome = (await self._processor.handle(message, probe)).value
        except asyncio.CancelledError:
            self.outcomes[Outcome.HANDED_BACK.value] = self.outcomes.get(Outcome.HANDED_BACK.value, 0) + 1
            raise
        except Exception:  # noqa: BLE001 - never kill the loop; the message reappears after its timeout
            logger.exception("job crashed", extra={"message_id": message.get("MessageId")})
            outcome = "crashed"
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    async def _drain(self) -> None:
        """Give in-flight jobs the grace period, then hand the rest back to the queue."""
        # A long poll still open would leave with what it catches (invisible until the visibility
        # timeout), and could even catch jobs handed back below: let it end within the grace too;
        # its catch is handed back by its done-callback.
        waiting: set[asyncio.Future] = set(self._in_flight)
        if self._open_poll is not None and not self._open_poll.done():
            waiting.add(self._open_poll)
        if waiting:
            await asyncio.wait(waiting, timeout=self._res.worker_shutdown_grace_s)
            await asyncio.sleep(0)
        pending = {task for task in self._in_flight if not task.done()}
        if pending:
            logger.warning("shutdown grace over: handing jobs back to the queue", extra={"jobs": len(pending)})
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=HAND_BACK_S)
        if self._hand_backs:
            await asyncio.wait(set(self._hand_backs), timeout=HAND_BACK_S)

    def _hand_back_later(self, receive: asyncio.Future, probe: Permit | None) -> None:
        if receive.cancelled() or receive.exception() is not None:
            return
        for message in receive.result().get("Messages", []):
            task = asyncio.ensure_future(self._hand_back(message))
            self._hand_backs.add(task)
            task.add_done_callback(self._hand_backs.discard)
        asyncio.ensure_future(self._release(probe))

    async def _release(self, probe: Permit | None) -> None:
        """A probe slot no job took is the consumer's to hand back."""
        await self._processor.release(self._processor.primary.breaker, probe)

    async def _hand_back(self, message: dict) -> None:
        try:
            await self._processor.queue.carry_out(message, GiveBack(0, Outcome.HANDED_BACK))
        except Exception:  # noqa: BLE001 - it reappears after its visibility timeout anyway
            logger.exception("could not hand a message back")

    async def _sleep_unless_stopped(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            pass

    async def _flush_metrics_periodically(self) -> None:
        while True:
            await asyncio.sleep(METRICS_FLUSH_S)
            self._metrics.slots_in_use(len(self._in_flight), self._res.worker_concurrency)
            await asyncio.get_running_loop().run_in_executor(self._executor, self._metrics.flush)
