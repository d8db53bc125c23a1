"""Anthropic Messages through the official async SDK."""
from __future__ import annotations

import anthropic

from cloudia.llm import Completion, OnToken
from cloudia.llm._sdk import SdkProvider
from cloudia.llm.timing import Stopwatch

DEFAULT_MODEL = "claude-sonnet-4-5"


class AnthropicProvider(SdkProvider):
    name = "anthropic"
    sdk = anthropic
    default_model = DEFAULT_MODEL

    def make_client(self, **options):
        return anthropic.AsyncAnthropic(**options)

    async def _stream(self, messages, watch: Stopwatch, on_token: OnToken | None) -> Completion:
        async with self._client.messages.stream(model=self._model, max_tokens=self._bounds.max_tokens,
                                                messages=messages, timeout=self._http_timeout) as stream:
            async for delta in stream.text_stream:
                if delta:
                    watch.token()
                    if on_token is not None:
                        await on_token(delta)
            message = await stream.get_final_message()
        watch.set_tokens(message.usage.output_tokens)
        text = "".join(block.text for block in message.content if block.type == "text")
        return Completion(text, message.usage.input_tokens, message.usage.output_tokens, message.model)
