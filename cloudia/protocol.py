"""The JSON frames between a client and the backend (architecture: "Client <-> backend protocol").

Inbound frames are validated into typed models; outbound events are built only here, so every part
of the system speaks the same shapes.
"""
from __future__ import annotations

import json
from typing import Any

# The event while the LLM circuit is open, in the architecture's words (clients match on it, so it
# stays word for word, in Portuguese).
CIRCUIT_OPEN_MESSAGE = "Circuit Breaker ativado: API LLM indisponível."
# What a person reads when their message fails for good (the event's `reason` says why, for machines).
LLM_FAILED_MESSAGE = "The LLM failed repeatedly; your message could not be answered."
LLM_REFUSED_MESSAGE = "The LLM refused this message; it could not be answered."
INTERRUPTED_MESSAGE = ("The answer was cut short by service failures and not tried again, so that it is not "
                       "paid for twice; please send your message again.")

# Per-user bounds beyond messages (the `error` event's reason says which).
TOO_MANY_CONNECTIONS_MESSAGE = ("too many open connections: at most {limit} at a time; close another tab "
                                "or device, then connect again")
FRAMES_RATE_LIMITED_MESSAGE = ("too many ping and history requests: at most {limit} a minute; "
                               "try again in {retry_after_s} s")
CONNECTION_CLOSED_MESSAGE = "this connection was closed: reconnect"
# A message whose call could cost more than what is left of the day's budget.
BUDGET_EXCEEDED_MESSAGE = ("daily token budget reached: this message could cost up to {needed} tokens and "
                           "{remaining} of {limit} are left today; the budget resets at {resets_at} UTC")

# A `retry` refused (the `error` event's reason says which; it carries the jobId and `action: "retry"`).
RETRY_NOT_FOUND_MESSAGE = "no such message of yours to retry"
RETRY_NOT_FAILED_MESSAGE = "only a failed message can be retried: this one is {status}"
RETRY_NOT_RETRIABLE_MESSAGE = "this message never reached the queue and cannot be retried: please send it again"

# A frame refused (cloudia/frames.py; the `error` event's reason says which, for machines).
FRAME_EMPTY_MESSAGE = "the frame is empty: send a JSON object with an 'action'"
FRAME_NOT_UTF8_MESSAGE = "the frame is not UTF-8 text"
FRAME_TOO_LARGE_MESSAGE = "the frame is larger than {limit} bytes"
FRAME_MALFORMED_MESSAGE = "the frame is not valid JSON"
FRAME_NOT_AN_OBJECT_MESSAGE = "the frame must be a JSON object with an 'action'"
FRAME_NO_ACTION_MESSAGE = "the frame has no 'action'"
FRAME_UNKNOWN_ACTION_MESSAGE = "unknown action {action}: expected one of {actions}"
MESSAGE_BLANK_MESSAGE = "'message' is blank"
MESSAGE_TOO_LONG_MESSAGE = "'message' is longer than {limit} characters"
MESSAGE_CONTROL_CHARS_MESSAGE = "'message' contains control characters: text only"
MESSAGE_NOT_UNICODE_MESSAGE = "'message' is not valid Unicode text"
FIELD_MISSING_MESSAGE = "'{field}' is required"
CURSOR_INVALID_MESSAGE = "'cursor' must be the 'next' of a history page, passed back as is"
ID_INVALID_MESSAGE = "'{field}' must be 1-128 characters of letters, digits and _ . : -"
FIELD_INVALID_MESSAGE = "'{field}' is invalid: {why}"


def event(name: str, **fields: Any) -> dict[str, Any]:
    return {"event": name, **{k: v for k, v in fields.items() if v is not None}}


def budget(remaining: int, limit: int, resets_at_s: int) -> dict[str, int]:
    """The user's daily token budget: what is left (reservations of jobs in flight counted as spent
    until they are settled), the limit, and when it resets (epoch seconds, the next UTC midnight)."""
    return {"remaining": remaining, "limit": limit, "resetsAt": resets_at_s}


def queued(job_id: str, client_message_id: str | None = None,
           budget: dict[str, int] | None = None) -> dict[str, Any]:
    """`budget` (see `budget`): what is left once this message's reservation is taken."""
    return event("queued", jobId=job_id, clientMessageId=client_message_id, budget=budget)


def budget_exceeded(message: str, budget: dict[str, int], retry_after_s: int, job_id: str | None = None,
                    **extra: Any) -> dict[str, Any]:
    """A message (or a retry) refused by the daily budget: what is left, when it resets, and in how
    many seconds."""
    return error(message, job_id=job_id, reason="budget_exceeded", budget=budget, retryAfter=retry_after_s,
                 **extra)


def token(job_id: str, text: str, attempt: int) -> dict[str, Any]:
    """A piece of an answer as the LLM writes it. `attempt` numbers the job's LLM calls: tokens of a
    higher attempt replace the partial text of a lower one (that call was cut and made again)."""
    return event("token", jobId=job_id, token=text, attempt=attempt)


def answer(job_id: str, message: str, conversation_id: str | None = None) -> dict[str, Any]:
    return event("answer", jobId=job_id, message=message, conversationId=conversation_id)


def error(message: str, job_id: str | None = None, reason: str | None = None, **extra: Any) -> dict[str, Any]:
    """`reason` is a stable machine-readable code; `message` says why, for a person."""
    return event("error", message=message, jobId=job_id, reason=reason, **extra)


def circuit_open(job_id: str, client_message_id: str | None = None) -> dict[str, Any]:
    return error(CIRCUIT_OPEN_MESSAGE, job_id=job_id, reason="circuit_open", clientMessageId=client_message_id)


def pong(resume: bool = False) -> dict[str, Any]:
    """`resume`: the connection had lost its registration (Redis lost it, or it expired) and was
    registered again; answers pushed meanwhile missed it, so the client asks for the history."""
    return event("pong", resume=resume or None)


def connected(user_id: str) -> dict[str, Any]:
    return event("connected", userId=user_id)


def disconnected() -> dict[str, Any]:
    return event("disconnected")


def history(conversation_id: str, messages: list[dict[str, Any]], next_cursor: str | None = None) -> dict[str, Any]:
    """A page of a conversation's entries since a point (`resume`), oldest first, each `Entry.as_frame()`.
    `next`, while more entries follow: the client asks for them with `{"action": "history",
    "conversationId": ..., "cursor": next}`; a page without `next` is the last."""
    frame = {"event": "history", "conversationId": conversation_id, "messages": messages}
    if next_cursor is not None:
        frame["next"] = next_cursor
    return frame


def dumps(frame: dict[str, Any]) -> str:
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"))
