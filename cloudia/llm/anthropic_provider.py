"""Anthropic Messages through the official async SDK."""
from __future__ import annotations

import asyncio

import anthropic

from cloudia.llm import Completion, OnToken, api_key
from cloudia.llm._errors import classify
from cloudia.settings import Settings

DEFAULT_MODEL = "claude-sonnet-4-5"
MAX_OUTPUT_TOKENS = 1024


class AnthropicProvider:
    name = "anthropic"

    def __init__(self, settings: Settings):
        self._timeout_s = settings.resilience.llm_timeout_s
        self._model = settings.llm_model or DEFAULT_MODEL
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key(settings), base_url=settings.llm_base_url or None,
            timeout=self._timeout_s, max_retries=0,
        )

    async def aclose(self) -> None:
        await self._client.close()

    async def complete(self, messages: list[dict[str, str]], on_token: OnToken | None = None) -> Completion:
        try:
            async with asyncio.timeout(self._timeout_s):
                if on_token is None:
                    return await self._complete(messages)
                return await self._stream(messages, on_token)
        except Exception as error:  # noqa: BLE001 - every failure is classified, none escapes raw
            raise classify(error, anthropic) from error

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
