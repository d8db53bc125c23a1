"""Inbound client frames, validated into typed models (architecture: "Client <-> backend protocol").

`parse_frame` turns the raw text of a WebSocket frame into one of the models below or raises a
`FrameError` whose `reason` is a stable code and whose message says why, for a person. It never
raises anything else, whatever the input.
"""
from __future__ import annotations

import json
import re
from typing import Annotated, Literal, Union, get_args

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

from cloudia import protocol

# API Gateway refuses WebSocket frames above 32 KB; a larger one cannot have come through it.
MAX_FRAME_BYTES = 32 * 1024
# Ids go into DynamoDB keys joined with '#', and into Redis keys: a safe charset without '#'.
SAFE_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
# Text only: control characters (C0, DEL, C1) other than tab and newlines are refused.
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")

SafeId = Annotated[str, StringConstraints(pattern=SAFE_ID_PATTERN)]
# A history page's `next` cursor, passed back as is: the position (the history's sort key) of the last
# entry the page held. It can only point inside the asker's own conversation (the key's other half).
HISTORY_CURSOR_PATTERN = r"^[0-9]{13}#[A-Za-z0-9_.:-]{1,128}#[a-z]{1,16}$"


class _Frame(BaseModel):
    # strict: a number is not a text, a string is not a number; extra fields are ignored.
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class SendMessage(_Frame):
    action: Literal["sendMessage"]
    conversation_id: SafeId = Field(alias="conversationId")
    client_message_id: SafeId = Field(alias="clientMessageId")
    message: Annotated[str, StringConstraints(min_length=1)]


class Ping(_Frame):
    action: Literal["ping"]


class History(_Frame):
    action: Literal["history", "resume"]
    conversation_id: SafeId = Field(alias="conversationId")
    since: Annotated[int, Field(ge=0)] = 0
    # The `next` of the previous page: the entries after it (`since` is then not used).
    cursor: Annotated[str, StringConstraints(pattern=HISTORY_CURSOR_PATTERN)] | None = None


class Retry(_Frame):
    """Queue the sender's own failed job again: the same job, the same text."""

    action: Literal["retry"]
    job_id: SafeId = Field(alias="jobId")


Frame = Annotated[Union[SendMessage, Ping, History, Retry], Field(discriminator="action")]
_FRAME = TypeAdapter(Frame)
# Every action a frame may name, as the models declare them (their `action` literals).
ACTIONS = tuple(action for model in get_args(get_args(Frame)[0])
                for action in get_args(model.model_fields["action"].annotation))


class FrameError(ValueError):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


def parse_frame(body: str | bytes | None, max_message_chars: int) -> SendMessage | Ping | History | Retry:
    if body is None or body == "" or body == b"":
        raise FrameError("empty_frame", protocol.FRAME_EMPTY_MESSAGE)
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError:
            raise FrameError("not_text", protocol.FRAME_NOT_UTF8_MESSAGE) from None
    if len(body.encode("utf-8", "surrogatepass")) > MAX_FRAME_BYTES:
        raise FrameError("frame_too_large", protocol.FRAME_TOO_LARGE_MESSAGE.format(limit=MAX_FRAME_BYTES))
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise FrameError("malformed_json", protocol.FRAME_MALFORMED_MESSAGE) from None
    if not isinstance(data, dict):
        raise FrameError("not_an_object", protocol.FRAME_NOT_AN_OBJECT_MESSAGE)
    action = data.get("action")
    if action is None:
        raise FrameError("missing_action", protocol.FRAME_NO_ACTION_MESSAGE)
    if action not in ACTIONS:
        shown = action if isinstance(action, str) else json.dumps(action)
        raise FrameError("unknown_action", protocol.FRAME_UNKNOWN_ACTION_MESSAGE.format(
            action=repr(shown[:64]), actions=", ".join(ACTIONS)))
    try:
        frame = _FRAME.validate_python(data)
    except ValidationError as exc:
        raise _field_error(exc) from None
    if isinstance(frame, SendMessage):
        _check_text(frame.message, max_message_chars)
    return frame


def _check_text(message: str, max_message_chars: int) -> None:
    if not message.strip():
        raise FrameError("empty_message", protocol.MESSAGE_BLANK_MESSAGE)
    if len(message) > max_message_chars:
        raise FrameError("message_too_long", protocol.MESSAGE_TOO_LONG_MESSAGE.format(limit=max_message_chars))
    if _CONTROL_CHARS.search(message):
        raise FrameError("not_text", protocol.MESSAGE_CONTROL_CHARS_MESSAGE)
    try:
        message.encode("utf-8")
    except UnicodeEncodeError:
        raise FrameError("not_text", protocol.MESSAGE_NOT_UNICODE_MESSAGE) from None


def _field_error(exc: ValidationError) -> FrameError:
    first = exc.errors(include_url=False, include_input=False)[0]
    # loc is (action tag, field) under the discriminated union
    field = str(first["loc"][-1]) if first["loc"] else "frame"
    if first["type"] == "missing":
        return FrameError("missing_field", protocol.FIELD_MISSING_MESSAGE.format(field=field))
    if first["type"] == "string_pattern_mismatch" and field == "cursor":
        return FrameError("invalid_field", protocol.CURSOR_INVALID_MESSAGE)
    if first["type"] == "string_pattern_mismatch":
        return FrameError("invalid_field", protocol.ID_INVALID_MESSAGE.format(field=field))
    return FrameError("invalid_field", protocol.FIELD_INVALID_MESSAGE.format(field=field, why=first["msg"]))
