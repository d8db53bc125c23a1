"""Malformed frames for the gateway: every one must be answered with an `error` event.

Each generator makes a frame that no route may accept (not JSON, not an object, no or an unknown
action, a sendMessage or history with a missing, mistyped, blank, oversized or control-character field,
deep nesting, binary). Oversized frames (above API Gateway's 32 KB) are sent apart: they close the
connection after the error, as on API Gateway.
"""
from __future__ import annotations

import json
import random
import string

from local_runtime.gateway import MAX_FRAME_BYTES  # noqa: F401 - the fuzzer's oversized frames are sized from it
from cloudia.settings import Resilience

MAX_MESSAGE_CHARS = Resilience().max_message_chars
GOOD = {"action": "sendMessage", "conversationId": "fuzz", "clientMessageId": "fuzz-1", "message": "hello"}


def _junk(rng: random.Random, size: int) -> str:
    alphabet = string.printable + "ãçé中文🙂\u200b{}[]\":,"
    return "".join(rng.choice(alphabet) for _ in range(size))


def _bad_send(rng: random.Random) -> dict:
    frame: dict[str, object] = dict(GOOD, clientMessageId=f"fuzz-{rng.randrange(10**9)}")
    field = rng.choice(["conversationId", "clientMessageId", "message"])
    kind = rng.choice(["missing", "number", "null", "list", "object", "blank", "bad"])
    if kind == "missing":
        del frame[field]
    elif kind == "number":
        frame[field] = rng.randrange(-10**6, 10**6)
    elif kind == "null":
        frame[field] = None
    elif kind == "list":
        frame[field] = [_junk(rng, 3)]
    elif kind == "object":
        frame[field] = {"x": 1}
    elif kind == "blank":
        frame[field] = rng.choice(["", "   ", "\t\n"])
    elif field == "message":
        frame[field] = rng.choice(["a" * (MAX_MESSAGE_CHARS + 1 + rng.randrange(100)),
                                   "bell \x07 control", "nul \x00 char", "c1 \x85 control"])
    else:
        frame[field] = rng.choice(["x" * 129, "has space", "slash/no", "ünïcode", "semi;colon"])
    return frame


def _deep(rng: random.Random) -> str:
    depth = rng.choice([50, 1000, 5000])
    return "[" * depth + "]" * depth if rng.random() < 0.5 else '{"a":' * depth + "1" + "}" * depth


def malformed_frame(rng: random.Random) -> str | bytes:
    kind = rng.randrange(12)
    if kind == 0:
        return rng.randbytes(rng.randrange(1, 512))  # binary
    if kind == 1:
        return _junk(rng, rng.randrange(0, 300))  # not JSON (or, rarely, a bare number: not an object)
    if kind == 2:
        return json.dumps(rng.choice([1, "sendMessage", None, True, [GOOD], 3.5]))  # JSON, not an object
    if kind == 3:
        return json.dumps({k: v for k, v in GOOD.items() if k != "action"})  # no action
    if kind == 4:
        return json.dumps(dict(GOOD, action=rng.choice(["", "SENDMESSAGE", "delete", "sendMessage ", _junk(rng, 20)])))
    if kind == 5:
        return json.dumps(dict(GOOD, action=rng.choice([1, None, ["sendMessage"], {"a": 1}])))
    if kind == 6:
        return json.dumps(_bad_send(rng))
    if kind == 7:
        return json.dumps({"action": "history", "since": _junk(rng, 5)})  # history without its conversation
    if kind == 8:
        return json.dumps(GOOD)[: rng.randrange(1, len(json.dumps(GOOD)) - 1)]  # truncated
    if kind == 9:
        return _deep(rng)
    if kind == 10:
        return rng.choice(["", " ", "\n", "null", "{}", "[]", '""'])
    return json.dumps(_bad_send(rng), ensure_ascii=False).replace('"', "'", 1)  # almost JSON
