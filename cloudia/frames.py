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
        raise FrameError("empty_frame", "the frame is empty: send a JSON object with an 'action'")
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError:
            raise FrameError("not_text", "the frame is not UTF-8 text") from None
    if len(body.encode("utf-8", "surrogatepass")) > MAX_FRAME_BYTES:
        raise FrameError("frame_too_large", f"the frame is larger than {MAX_FRAME_BYTES} bytes")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise FrameError("malformed_json", "the frame is not valid JSON") from None
    if not isinstance(data, dict):
        raise FrameError("not_an_object", "the frame must be a JSON object with an 'action'")
    action = data.get("action")
    if action is None:
        raise FrameError("missing_action", "the frame has no 'action'")
    if action not in ACTIONS:
        shown = action if isinstance(action, str) else json.dumps(action)
        raise FrameError("unknown_action", f"unknown action {shown[:64]!r}: expected one of {', '.join(ACTIONS)}")
    try:
        frame = _FRAME.validate_python(data)
    except ValidationError as exc:
        raise _field_error(exc) from None
    if isinstance(frame, SendMessage):
        _check_text(frame.message, max_message_chars)
    return frame


def _check_text(message: str, max_message_chars: int) -> None:
    if not message.strip():
        raise FrameError("empty_message", "'message' is blank")
    if len(message) > max_message_chars:
        raise FrameError("message_too_long", f"'message' is longer than {max_message_chars} characters")
    if _CONTROL_CHARS.search(message):
        raise FrameError("not_text", "'message' contains control characters: text only")
    try:
        message.encode("utf-8")
    except UnicodeEncodeError:
        raise FrameError("not_text", "'message' is not valid Unicode text") from None


def _field_error(exc: ValidationError) -> FrameError:
    first = exc.errors(include_url=False, include_input=False)[0]
    # loc is (action tag, field) under the discriminated union
    field = str(first["loc"][-1]) if first["loc"] else "frame"
    if first["type"] == "missing":
        return FrameError("missing_field", f"'{field}' is required")
    if first["type"] == "string_pattern_mismatch" and field == "cursor":
        return FrameError("invalid_field", "'cursor' must be the 'next' of a history page, passed back as is")
    if first["type"] == "string_pattern_mismatch":
        return FrameError("invalid_field", f"'{field}' must be 1-128 characters of letters, digits and _ . : -")
    return FrameError("invalid_field", f"'{field}' is invalid: {first['msg']}")
