"""The liveness of a job being answered: a heartbeat for as long as its worker works on it.

A long answer is normal (a minute and more), so nothing about a job may assume a fixed age. Every
`job_heartbeat_s`, while a job is in hand, its worker
- extends the message's visibility (`ChangeMessageVisibility`) to `job_liveness_s + job_heartbeat_s`,
  so SQS does not hand it to another worker;
- renews the job's lease in Redis (`job_liveness_s`), so a duplicate copy stays away;
- refreshes its `calling` mark in the jobs table while the LLM call runs, so a redelivery tells a live
  call (fresh mark: wait) from one a dead worker cut (a mark older than `job_liveness_s`: recall).
When the worker dies, all three stop together: the message reappears within one liveness window and
finds a stale mark.
"""
from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

from cloudia.job_lease import JobLeases
from cloudia.jobs import CallMark, JobStore
from cloudia.settings import Resilience
from worker.decisions import JobQueue
from worker.telemetry import logger


class JobHeartbeat:
    """`async with JobHeartbeat(...) as beat:` beats until the block ends; `beat.mark` is set while
    the LLM call runs. Leaving the block waits for a beat in progress, so no late extension can land
    after what the job decided (a retry's visibility, a hand-back)."""

    def __init__(self, res: Resilience, io: Callable[..., Awaitable[Any]], queue: JobQueue, leases: JobLeases,
                 jobs: JobStore, message: dict, job_id: str, lease_token: str):
        self._every_s = res.job_heartbeat_s
        self._visibility_s = res.job_visibility_s
        self._io = io
        self._queue = queue
        self._leases = leases
        self._jobs = jobs
        self._message = message
        self._job_id = job_id
        self._lease_token = lease_token
        self.mark: CallMark | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> "JobHeartbeat":
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc_info) -> None:
        self._stop.set()
        if self._task is not None:
            try:
                await asyncio.shield(self._task)
            except asyncio.CancelledError:  # the job is being cancelled: the beat ends on its own
                pass

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._stop.wait(), self._every_s)
                return
            except asyncio.TimeoutError:
                pass
            await self.beat()

    async def beat(self) -> None:
        mark = self.mark
        steps = [self._queue.set_visibility(self._message, self._visibility_s),
                 self._io(self._leases.renew, self._job_id, self._lease_token)]
        if mark is not None:
            steps.append(self._io(self._jobs.beat, self._job_id, mark))
        results = await asyncio.gather(*steps, return_exceptions=True)
        failures = [r for r in results if isinstance(r, Exception)]
        if failures:  # the next beat tries again; three missed beats make the job look dead
            logger.warning("job heartbeat failed", extra={"job_id": self._job_id, "error": str(failures[0])})
        if mark is not None and self.mark is mark and results[-1] is False:
            logger.warning("the job's calling mark is no longer this worker's", extra={"job_id": self._job_id})
