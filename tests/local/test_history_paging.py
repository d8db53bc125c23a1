"""A long conversation's resume through the real local gateway, which delivers no message over API
Gateway's 128 KB (a route reply over it becomes AWS's "Internal server error" frame): the reply comes
in pages, every frame within the limit, and following `next` brings every entry."""
from __future__ import annotations

import json
import time
import urllib.request

import boto3
import pytest
from websockets.sync.client import connect

from cloudia.history import ASSISTANT, USER, HistoryStore
from cloudia.settings import Resilience

pytestmark = pytest.mark.timeout(120)

API_GATEWAY_MAX_MESSAGE_BYTES = 128 * 1024
# The largest entry a conversation can hold: `max_message_chars` (8,000) characters of 4 bytes.
LONGEST_MESSAGE = "🙂" * 8000


def dev_user(local_stack, name: str) -> tuple[str, str]:
    """A token of the local pool for `name`, and the user id the functions see."""
    with urllib.request.urlopen(f"{local_stack.page}dev/token?user={name}", timeout=5) as response:
        answer = json.load(response)
    return answer["token"], answer["userId"]


def recv_frame(ws, timeout_s: float = 15.0) -> tuple[int, dict]:
    raw = ws.recv(timeout=timeout_s)
    data = raw.encode("utf-8") if isinstance(raw, str) else raw
    return len(data), json.loads(data)


@pytest.mark.parametrize("action", ["resume", "history"])
def test_a_long_conversations_resume_comes_in_frames_within_128_kb_with_every_entry(local_stack, settings, action):
    # GIVEN a conversation of 12 entries of the largest size (32,000 bytes each: 384 KB in all)
    token, user_id = dev_user(local_stack, "paula")
    history = HistoryStore(boto3.client("dynamodb"), settings.history_table, Resilience())
    written = []
    base_ms = int(time.time() * 1000) - 60_000
    for i in range(12):
        role = USER if i % 2 == 0 else ASSISTANT
        history.append(user_id, "conv-long", f"job-{i // 2}", role, LONGEST_MESSAGE, created_at_ms=base_ms + i)
        written.append((f"job-{i // 2}", role, base_ms + i))
    # WHEN a client resumes it through the gateway and follows each page's `next`
    sizes, entries = [], []
    with connect(f"{local_stack.ws}?token={token}", max_size=None) as ws:
        frame = {"action": action, "conversationId": "conv-long", "since": 0}
        for _ in range(50):
            ws.send(json.dumps(frame))
            size, reply = recv_frame(ws)
            sizes.append(size)
            assert reply.get("event") == "history", reply  # not API Gateway's "Internal server error"
            entries.extend(reply["messages"])
            if "next" not in reply:
                break
            frame = {"action": action, "conversationId": "conv-long", "cursor": reply["next"]}
    # THEN every frame was within API Gateway's limit, and every entry came, once, whole, in order
    assert max(sizes) <= API_GATEWAY_MAX_MESSAGE_BYTES, sizes
    assert len(sizes) > 1
    assert [(e["jobId"], e["role"], e["at"]) for e in entries] == written
    assert all(e["message"] == LONGEST_MESSAGE for e in entries)
