"""Anthropic Messages through the official async SDK.

The request goes through the SDK's client; the streamed body is read as raw server-sent events
(`cloudia.llm._sse`) and only the events and fields used are read from their JSON (the text deltas,
the stop reason, usage, the model), without the SDK's typed object per event."""
from __future__ import annotations

import anthropic

from cloudia.llm import Completion, OnFinish, OnToken
from cloudia.llm._sdk import SdkProvider
from cloudia.llm._sse import parse_json, read_events
from cloudia.llm.timing import Stopwatch

DEFAULT_MODEL = "claude-sonnet-4-5"

TEXT_DELTA = b"content_block_delta"
MESSAGE_START = b"message_start"
MESSAGE_DELTA = b"message_delta"
ERROR = b"error"
# The events read; ping, content_block_start/stop and message_stop carry nothing used here.
USED_EVENTS = frozenset({TEXT_DELTA, MESSAGE_DELTA, MESSAGE_START, ERROR})


class AnthropicProvider(SdkProvider):
    name = "anthropic"
    sdk = anthropic
    default_model = DEFAULT_MODEL

    def make_client(self, **options):
        return anthropic.AsyncAnthropic(**options)

    async def _stream(self, messages, watch: Stopwatch, on_token: OnToken | None,
                      on_finish: OnFinish | None) -> Completion:
        parts: list[str] = []
        input_tokens = output_tokens = 0
        model = self._model
        finished = False
        async with self._client.messages.with_streaming_response.create(
                model=self._model, max_tokens=self._bounds.max_tokens, messages=messages, stream=True,
                timeout=self._http_timeout) as response:
            http = response.http_response
            async for events in read_events(http):
                deltas: list[str] = []
                counted = finishing = False
                failure = None
                used = [(event, data) for event, data in events if event in USED_EVENTS]
                for (event, _), body in zip(used, parse_json([data for _, data in used])):
                    if event == TEXT_DELTA:
                        delta = body.get("delta") or {}
                        if delta.get("type") == "text_delta" and delta.get("text"):
                            deltas.append(delta["text"])
                    elif event == MESSAGE_DELTA:  # the stop reason, and the output tokens so far
                        usage = body.get("usage") or {}
                        input_tokens = usage.get("input_tokens") or input_tokens
                        output_tokens = usage.get("output_tokens") or output_tokens
                        counted = True
                        finishing = finishing or bool((body.get("delta") or {}).get("stop_reason"))
                    elif event == MESSAGE_START:
                        message = body.get("message") or {}
                        model = message.get("model") or model
                        usage = message.get("usage") or {}
                        input_tokens = usage.get("input_tokens") or input_tokens
                        output_tokens = usage.get("output_tokens") or output_tokens
                    else:  # an error event, raised once the tokens before it are handed over
                        failure = self.stream_error(body.get("error") if isinstance(body, dict) else body, http.request)
                        break
                if deltas:
                    watch.token(len(deltas))
                    parts.extend(deltas)
                    if on_token is not None:
                        for delta in deltas:
                            await on_token(delta)
                if failure is not None:
                    raise failure
                if counted:
                    watch.set_tokens(output_tokens)
                if finishing and not finished:  # message_stop follows
                    finished = True
                    if on_finish is not None:
                        await on_finish("".join(parts))
        return Completion("".join(parts), input_tokens, output_tokens, model)
