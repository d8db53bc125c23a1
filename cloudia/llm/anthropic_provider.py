"""Anthropic Messages through the official async SDK."""
from __future__ import annotations

import anthropic

from cloudia.llm import Completion, OnToken
from cloudia.llm._sdk import SdkProvider

DEFAULT_MODEL = "claude-sonnet-4-5"
MAX_OUTPUT_TOKENS = 1024


class AnthropicProvider(SdkProvider):
    name = "anthropic"
    sdk = anthropic
    default_model = DEFAULT_MODEL

    def make_client(self, **options):
        return anthropic.AsyncAnthropic(**options)

    async def _complete(self, messages) -> Completion:
        message = await self._client.messages.create(
            model=self._model, max_tokens=MAX_OUTPUT_TOKENS, messages=messages)
        text = "".join(block.text for block in message.content if block.type == "text")
        return Completion(text, message.usage.input_tokens, message.usage.output_tokens, message.model)

    async def _stream(self, messages, on_token: OnToken) -> Completion:
        async with self._client.messages.stream(
                model=self._model, max_tokens=MAX_OUTPUT_TOKENS, messages=messages) as stream:
            async for delta in stream.text_stream:
                if delta:
                    await on_token(delta)
            message = await stream.get_final_message()
        text = "".join(block.text for block in message.content if block.type == "text")
        return Completion(text, message.usage.input_tokens, message.usage.output_tokens, message.model)
