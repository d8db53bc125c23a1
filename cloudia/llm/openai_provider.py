"""OpenAI Chat Completions through the official async SDK (also any OpenAI-compatible server, such
as the local fake LLM: only the base URL differs)."""
from __future__ import annotations

import openai

from cloudia.llm import Completion, OnFinish, OnToken
from cloudia.llm._sdk import SdkProvider
from cloudia.llm.timing import Stopwatch

DEFAULT_MODEL = "gpt-4o-mini"


class OpenAiProvider(SdkProvider):
    name = "openai"
    sdk = openai
    default_model = DEFAULT_MODEL

    def make_client(self, **options):
        return openai.AsyncOpenAI(**options)

    async def _stream(self, messages, watch: Stopwatch, on_token: OnToken | None,
                      on_finish: OnFinish | None) -> Completion:
        # `max_completion_tokens` is the current name (`max_tokens` is refused by reasoning models).
        stream = await self._client.chat.completions.create(
            model=self._model, messages=messages, max_completion_tokens=self._bounds.max_tokens,
            stream=True, stream_options={"include_usage": True}, timeout=self._http_timeout)
        parts: list[str] = []
        input_tokens = output_tokens = 0
        model = self._model
        async with stream:
            async for chunk in stream:
                model = chunk.model or model
                if chunk.usage:
                    input_tokens, output_tokens = chunk.usage.prompt_tokens, chunk.usage.completion_tokens
                    watch.set_tokens(output_tokens)
                for choice in chunk.choices:
                    delta = choice.delta.content
                    if delta:
                        parts.append(delta)
                        watch.token()
                        if on_token is not None:
                            await on_token(delta)
                    if choice.finish_reason and on_finish is not None:  # usage and [DONE] follow
                        await on_finish("".join(parts))
        return Completion("".join(parts), input_tokens, output_tokens, model)
