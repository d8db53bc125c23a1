"""OpenAI Chat Completions through the official async SDK (also any OpenAI-compatible server, such
as the local fake LLM: only the base URL differs)."""
from __future__ import annotations

import asyncio

import openai

from cloudia.llm import Completion, OnToken, api_key
from cloudia.llm._errors import classify
from cloudia.settings import Settings

DEFAULT_MODEL = "gpt-4o-mini"


class OpenAiProvider:
    name = "openai"

    def __init__(self, settings: Settings):
        self._timeout_s = settings.resilience.llm_timeout_s
        self._model = settings.llm_model or DEFAULT_MODEL
        self._client = openai.AsyncOpenAI(
            api_key=api_key(settings), base_url=settings.llm_base_url or None,
            timeout=self._timeout_s, max_retries=0,
        )

    async def aclose(self) -> None:
        await self._client.close()

    async def complete(self, messages: list[dict[str, str]], on_token: OnToken | None = None) -> Completion:
        try:
            # The SDK timeout bounds each connect/read; this bounds the whole answer.
            async with asyncio.timeout(self._timeout_s):
                if on_token is None:
                    return await self._complete(messages)
                return await self._stream(messages, on_token)
        except Exception as error:  # noqa: BLE001 - every failure is classified, none escapes raw
            raise classify(error, openai) from error

    async def _complete(self, messages) -> Completion:
        response = await self._client.chat.completions.create(model=self._model, messages=messages)
        usage = response.usage
        return Completion(response.choices[0].message.content or "", usage.prompt_tokens if usage else 0,
                          usage.completion_tokens if usage else 0, response.model)

    async def _stream(self, messages, on_token: OnToken) -> Completion:
        stream = await self._client.chat.completions.create(
            model=self._model, messages=messages, stream=True, stream_options={"include_usage": True})
        parts: list[str] = []
        input_tokens = output_tokens = 0
        model = self._model
        async with stream:
            async for chunk in stream:
                model = chunk.model or model
                if chunk.usage:
                    input_tokens, output_tokens = chunk.usage.prompt_tokens, chunk.usage.completion_tokens
                for choice in chunk.choices:
                    delta = choice.delta.content
                    if delta:
                        parts.append(delta)
                        await on_token(delta)
        return Completion("".join(parts), input_tokens, output_tokens, model)
