"""Anthropic Messages through the official async SDK."""
from __future__ import annotations

import anthropic

from cloudia.llm import Completion, OnFinish, OnToken
from cloudia.llm._sdk import SdkProvider
from cloudia.llm.timing import Stopwatch

DEFAULT_MODEL = "claude-sonnet-4-5"


class AnthropicProvider(SdkProvider):
    name = "anthropic"
    sdk = anthropic
    default_model = DEFAULT_MODEL

    def make_client(self, **options):
        return anthropic.AsyncAnthropic(**options)

    async def _stream(self, messages, watch: Stopwatch, on_token: OnToken | None,
                      on_finish: OnFinish | None) -> Completion:
        parts: list[str] = []
        async with self._client.messages.stream(model=self._model, max_tokens=self._bounds.max_tokens,
                                                messages=messages, timeout=self._http_timeout) as stream:
            async for event in stream:
                if event.type == "content_block_delta" and event.delta.type == "text_delta" and event.delta.text:
                    parts.append(event.delta.text)
                    watch.token()
                    if on_token is not None:
                        await on_token(event.delta.text)
                elif event.type == "message_delta" and event.delta.stop_reason and on_finish is not None:
                    await on_finish("".join(parts))  # message_stop follows
            message = await stream.get_final_message()
        watch.set_tokens(message.usage.output_tokens)
        text = "".join(block.text for block in message.content if block.type == "text")
        return Completion(text, message.usage.input_tokens, message.usage.output_tokens, message.model)
