"""What the OpenAI and Anthropic providers share: an official async SDK client with its retries off
(the queue's redelivery with backoff is the one retry layer), one deadline over the whole answer,
and every failure classified as transient or permanent."""
from __future__ import annotations

import asyncio
from types import ModuleType

from cloudia.llm import Completion, OnToken, api_key
from cloudia.llm._errors import classify
from cloudia.settings import Settings


class SdkProvider:
    name: str
    sdk: ModuleType  # the SDK module, whose exception classes `classify` maps
    default_model: str

    def __init__(self, settings: Settings):
        self._timeout_s = settings.resilience.llm_timeout_s
        self._model = settings.llm_model or self.default_model
        self._client = self.make_client(api_key=api_key(settings), base_url=settings.llm_base_url or None,
                                        timeout=self._timeout_s, max_retries=0)

    def make_client(self, **options):
        raise NotImplementedError

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
            raise classify(error, self.sdk) from error

    async def _complete(self, messages) -> Completion:
        raise NotImplementedError

    async def _stream(self, messages, on_token: OnToken) -> Completion:
        raise NotImplementedError
