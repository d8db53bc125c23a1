"""OpenAI Chat Completions through the official async SDK (also any OpenAI-compatible server, such
as the local fake LLM: only the base URL differs)."""
from __future__ import annotations

import openai

from cloudia.llm import Completion, OnToken
from cloudia.llm._sdk import SdkProvider

DEFAULT_MODEL = "gpt-4o-mini"


class OpenAiProvider(SdkProvider):
    name = "openai"
    sdk = openai
    default_model = DEFAULT_MODEL

    def make_client(self, **options):
        return openai.AsyncOpenAI(**options)

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
