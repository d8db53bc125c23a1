"""Forwarding an answer's tokens to the user's connections while the LLM streams it."""
from __future__ import annotations

import asyncio
from typing import Awaitable, Callable


class TokenForwarder:
    """Forwards streamed tokens without ever slowing the LLM stream (a slow or unreachable gateway
    must not make the call miss its stall bound): one push at a time, tokens that arrive meanwhile go
    out together in the next push, and forwarding stops once no connection takes them. The `answer`
    event and the history carry the whole text regardless.

    `push(text)` sends one `token` event (it carries the call's attempt, so a client drops the partial
    text of an earlier attempt) and returns how many connections took it."""

    def __init__(self, push: Callable[[str], Awaitable[int]], interval_s: float = 0.0):
        """At most one push every `interval_s`: the tokens that arrive meanwhile go out together."""
        self._push = push
        self._interval_s = interval_s
        self._buffer: list[str] = []
        self._task: asyncio.Task | None = None
        self._stopped = False
        self._finishing = asyncio.Event()  # the call is over: the last tokens go out without waiting

    async def __call__(self, text: str) -> None:
        if self._stopped:
            return
        self._buffer.append(text)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._buffer and not self._stopped:
            text = "".join(self._buffer)
            self._buffer.clear()
            started = loop.time()
            try:
                delivered = await self._push(text)
            except Exception:  # noqa: BLE001 - a token is a courtesy; the answer follows
                delivered = 0
            if not delivered:
                self._stopped = True
            elif self._interval_s and not self._finishing.is_set():
                try:  # `asyncio.timeout`, not `wait_for`: no task made for every wait
                    async with asyncio.timeout(max(0.0, started + self._interval_s - loop.time())):
                        await self._finishing.wait()
                except TimeoutError:
                    pass

    async def finish(self, bound_s: float) -> None:
        """Let the last tokens go out, for at most `bound_s`."""
        self._finishing.set()
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
