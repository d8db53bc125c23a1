"""The JSON frames between a client and the backend (architecture: "Client <-> backend protocol").

Inbound frames are validated into typed models; outbound events are built only here, so every part
of the system speaks the same shapes.
"""
from __future__ import annotations

import json
from typing import Any

# The seed's event while the LLM circuit is open (kept word for word: clients match on it).
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


def event(name: str, **fields: Any) -> dict[str, Any]:
    return {"event": name, **{k: v for k, v in fields.items() if v is not None}}


def queued(job_id: str, client_message_id: str | None = None) -> dict[str, Any]:
    return event("queued", jobId=job_id, clientMessageId=client_message_id)


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


def history(conversation_id: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The entries of a conversation since a point (`resume`), oldest first, each `Entry.as_frame()`."""
    return {"event": "history", "conversationId": conversation_id, "messages": messages}


def dumps(frame: dict[str, Any]) -> str:
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"))
