"""Chat clients over real WebSockets, and the ledger of everything they sent and heard.

A client speaks the protocol like the chat page: one `sendMessage` at a time, each with a unique
clientMessageId, waiting for its reply (`queued`, or `error`); a refusal that says "try again" is
resent with the same clientMessageId (the backend accepts it once), a connection the backend no
longer knows is opened again. Answers and errors pushed later are filed under their jobId.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from cloudia.protocol import CIRCUIT_OPEN_MESSAGE

# Refusals worth sending again after a pause (the backend said "try again shortly").
RETRYABLE_REASONS = {"session_store_unavailable", "storage_unavailable", "enqueue_failed", "in_progress",
                     "internal_error", "handler_failed"}
# Refusals that mean "this connection is not known any more": open a new one, then resend.
RECONNECT_REASONS = {"not_connected", "unauthenticated"}
SEND_ATTEMPTS = 6
RETRY_PAUSE_S = 0.5
REPLY_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 10.0


@dataclass
class Sent:
    """One client message and what became of it."""

    user: str
    client_message_id: str
    text: str
    sent_at: float
    job_id: str | None = None
    ack: str = ""  # queued | held (accepted while the circuit is open) | refused:<reason>
    ack_at: float | None = None
    answers: list[str] = field(default_factory=list)
    answered_at: float | None = None
    answered_by_history: bool = False  # the answer came from a `history` request, not an `answer` event
    errors: list[tuple[str, float]] = field(default_factory=list)  # (reason, when)

    @property
    def accepted(self) -> bool:
        return self.job_id is not None


class Ledger:
    def __init__(self):
        self.sent: list[Sent] = []
        self.by_job: dict[str, Sent] = {}
        self._early: dict[str, list[dict]] = {}  # events that overtook their job's `queued` reply

    def accept(self, sent: Sent, job_id: str) -> None:
        sent.job_id = job_id
        self.by_job[job_id] = sent
        for frame in self._early.pop(job_id, []):
            self.file(frame)

    def file(self, frame: dict) -> bool:
        """File a pushed event under its job; False if it is not about a known job."""
        job_id = frame.get("jobId")
        sent = self.by_job.get(job_id) if job_id else None
        if sent is None:
            if frame.get("event") == "answer" and job_id:
                self._early.setdefault(job_id, []).append(frame)
                return True
            return False
        now = time.time()
        if frame["event"] == "answer":
            sent.answers.append(frame.get("message", ""))
            sent.answered_at = sent.answered_at or now
        elif frame["event"] == "error":
            sent.errors.append((frame.get("reason") or frame.get("message", ""), now))
        return True


class ChatClient:
    def __init__(self, ws_url: str, token: Callable[[], str], user: str, ledger: Ledger):
        self.ws_url = ws_url
        self.token = token
        self.user = user
        self.ledger = ledger
        self.reconnects = 0
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task | None = None
        self._replies: asyncio.Queue = asyncio.Queue()

    async def connect(self) -> None:
        token = await asyncio.get_running_loop().run_in_executor(None, self.token)
        self._ws = await websockets.connect(f"{self.ws_url}?token={token}", open_timeout=CONNECT_TIMEOUT_S,
                                            ping_interval=None, max_size=None)
        self._replies = asyncio.Queue()
        self._reader = asyncio.create_task(self._read(self._ws, self._replies))

    async def reconnect(self) -> None:
        await self.close()
        self.reconnects += 1
        for attempt in range(SEND_ATTEMPTS):
            try:
                await self.connect()
                return
            except (OSError, asyncio.TimeoutError, websockets.exceptions.InvalidStatus,
                    websockets.exceptions.InvalidHandshake):
                await asyncio.sleep(RETRY_PAUSE_S * (attempt + 1))
        await self.connect()

    async def _connection(self) -> ClientConnection:
        """The open connection, made again first if there is none."""
        if self._ws is None:
            await self.reconnect()
        if self._ws is None:  # reconnect() connects or raises
            raise ConnectionError(f"{self.user} has no connection")
        return self._ws

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        self._ws = self._reader = None

    async def _read(self, ws, replies: asyncio.Queue) -> None:
        try:
            async for raw in ws:
                try:
                    frame = json.loads(raw)
                except ValueError:
                    await replies.put({"event": "error", "reason": "client_saw_non_json", "raw": raw})
                    continue
                if not isinstance(frame, dict):
                    await replies.put({"event": "error", "reason": "client_saw_non_object", "raw": raw})
                    continue
                kind = frame.get("event")
                if kind in ("token", "connected", "disconnected"):
                    continue
                if kind in ("answer", "error") and self.ledger.file(frame):
                    continue
                await replies.put(frame)
        except ConnectionClosed:
            pass
        await replies.put(None)  # the connection ended

    async def request(self, frame: dict | str | bytes, timeout_s: float = REPLY_TIMEOUT_S) -> dict | None:
        """Send one frame and wait for its reply; None if the connection ended or nothing came back."""
        ws = await self._connection()
        try:
            await ws.send(frame if isinstance(frame, (str, bytes)) else json.dumps(frame))
            return await asyncio.wait_for(self._replies.get(), timeout_s)
        except (ConnectionClosed, asyncio.TimeoutError):
            return None

    async def pipeline(self, frames: list, timeout_s: float) -> list[dict | None]:
        """Send `frames` back to back, then collect as many replies (in arrival order, not matched to
        frames); a None for each reply that did not come within `timeout_s` of the previous one."""
        ws = await self._connection()
        replies: list[dict | None] = []
        try:
            for frame in frames:
                await ws.send(frame if isinstance(frame, (str, bytes)) else json.dumps(frame))
        except ConnectionClosed:
            pass
        for _ in frames:
            try:
                reply = await asyncio.wait_for(self._replies.get(), timeout_s)
            except asyncio.TimeoutError:
                reply = None
            replies.append(reply)
            if reply is None:  # the connection ended or went quiet: the rest are unanswered
                replies.extend([None] * (len(frames) - len(replies)))
                break
        return replies

    async def resume(self, conversation_id: str, since_s: float) -> int:
        """Ask for the conversation's history since `since_s`, as the page does after a reconnect, and
        file the answers and errors it holds for jobs still waiting; how many were filed."""
        reply = await self.request({"action": "history", "conversationId": conversation_id,
                                    "since": max(0, int(since_s * 1000))})
        if not reply or reply.get("event") != "history":
            return 0
        filed = 0
        for entry in reply.get("messages", []):
            sent = self.ledger.by_job.get(entry.get("jobId"))
            if sent is None or sent.answers or sent.errors:
                continue
            if entry.get("role") == "assistant":
                sent.answers.append(entry.get("message", ""))
                sent.answered_at, sent.answered_by_history = time.time(), True
                filed += 1
            elif entry.get("role") == "error":
                sent.errors.append(("history", time.time()))
                filed += 1
        return filed

    async def ping(self) -> bool:
        """The heartbeat; True when answers may have been missed (a reconnect, or a `pong` that says
        the registration was lost and made again): time to read the history."""
        reply = await self.request({"action": "ping"})
        if reply is None or (reply.get("event") == "error" and reply.get("reason") in RECONNECT_REASONS):
            await self.reconnect()
            return True
        return bool(reply.get("resume"))

    async def send_message(self, text: str, conversation_id: str = "chaos") -> Sent:
        sent = Sent(self.user, uuid.uuid4().hex, text, time.time())
        self.ledger.sent.append(sent)
        frame = {"action": "sendMessage", "conversationId": conversation_id,
                 "clientMessageId": sent.client_message_id, "message": text}
        for _attempt in range(SEND_ATTEMPTS):
            reply = await self.request(frame)
            if reply is None:  # connection lost or no reply: resend on a new connection (same id)
                await self.reconnect()
                continue
            if reply.get("event") == "queued" and reply.get("jobId"):
                sent.ack, sent.ack_at = "queued", time.time()
                self.ledger.accept(sent, reply["jobId"])
                return sent
            if reply.get("event") == "error" and reply.get("jobId"):
                # Accepted and kept, but the circuit is open: the user is told at once.
                sent.ack, sent.ack_at = "held", time.time()
                self.ledger.accept(sent, reply["jobId"])
                sent.errors.append((reply.get("reason") or CIRCUIT_OPEN_MESSAGE, sent.ack_at))
                return sent
            reason = reply.get("reason", "unexpected_reply") if reply.get("event") == "error" else "unexpected_reply"
            sent.ack, sent.ack_at = f"refused:{reason}", time.time()
            if reason in RECONNECT_REASONS:
                await self.reconnect()
            elif reason in RETRYABLE_REASONS:
                await asyncio.sleep(RETRY_PAUSE_S)
            else:
                return sent
        return sent
