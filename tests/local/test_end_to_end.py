"""End to end through the real local runtime: a WebSocket client, the gateway with the deployed
functions, SQS and DynamoDB in the emulator, Redis, the worker and the fake LLM."""
from __future__ import annotations

import json
import time
import uuid

import pytest
from websockets.sync.client import connect

from cloudia.protocol import CIRCUIT_OPEN_MESSAGE

pytestmark = pytest.mark.timeout(120)


def send_message(ws, conversation_id: str, text: str) -> str:
    client_message_id = str(uuid.uuid4())
    ws.send(json.dumps({"action": "sendMessage", "conversationId": conversation_id,
                        "clientMessageId": client_message_id, "message": text}))
    return client_message_id


def frames_until(ws, done, timeout_s: float = 30.0) -> list[dict]:
    """Every frame received until `done(frame)` is true (or the bound passes)."""
    frames: list[dict] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        frame = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
        frames.append(frame)
        if done(frame):
            return frames
    raise AssertionError(f"not seen within {timeout_s} s; got {frames}")


def test_a_message_is_queued_then_answered(local_stack):
    # GIVEN a client connected with a dev token
    with connect(f"{local_stack.ws}?token={local_stack.token('alice')}") as ws:
        # WHEN it sends a message
        client_message_id = send_message(ws, "conv-1", "hello there")
        frames = frames_until(ws, lambda f: f["event"] in ("answer", "error"))
    # THEN it hears `queued` first, then the answer for the same job
    events = [f["event"] for f in frames]
    assert events[0] == "queued", frames
    assert frames[0]["clientMessageId"] == client_message_id
    assert frames[-1]["event"] == "answer", frames
    assert frames[-1]["jobId"] == frames[0]["jobId"]
    assert "hello there" in frames[-1]["message"]
    assert set(events[1:-1]) <= {"token"}


def test_a_refused_token_never_connects(local_stack):
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus) as refused:
        connect(f"{local_stack.ws}?token=forged")
    assert refused.value.response.status_code == 401


def test_llm_down_opens_the_circuit_and_the_kept_job_is_answered_when_it_is_back(local_stack):
    # GIVEN the LLM is down
    local_stack.faults(down=True)
    with connect(f"{local_stack.ws}?token={local_stack.token('bob')}") as ws:
        # WHEN a message is sent
        send_message(ws, "conv-2", "are you there?")
        queued = frames_until(ws, lambda f: f["event"] == "queued")[-1]
        # THEN the client hears the circuit breaker's error for its job
        opened = frames_until(ws, lambda f: f["event"] == "error", timeout_s=45)[-1]
        assert opened["message"] == CIRCUIT_OPEN_MESSAGE
        assert opened["jobId"] == queued["jobId"]
        # WHEN the LLM is back THEN the kept job is answered
        local_stack.faults()
        answer = frames_until(ws, lambda f: f["event"] == "answer", timeout_s=60)[-1]
    assert answer["jobId"] == queued["jobId"]
    assert "are you there?" in answer["message"]
