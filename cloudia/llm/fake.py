"""An in-process provider that streams like a model, with injectable faults: benchmarks and tests
without HTTP. It keeps the same deadline model as the SDK providers (`cloudia.llm.timing`).

Its answer starts with the same deterministic text the fake LLM server gives (`echo_answer`)."""
from __future__ import annotations

import asyncio
import random

from cloudia.llm import Completion, OnFinish, OnToken, PermanentLlmError, TransientLlmError
from cloudia.llm.timing import CallBounds, CallTimeout, Stopwatch
from cloudia.settings import Resilience, Settings


def echo_answer(messages: list[dict[str, str]]) -> str:
    last_user = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
    return f"Echo: {last_user}"


def count_tokens(text: str) -> int:
    """Whitespace-separated words: a stand-in tokenizer, stable across runs."""
    return len(text.split())


def split_tokens(text: str) -> list[str]:
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


class FakeProvider:
    name = "fake"

    def __init__(self, latency_s: float = 0.0, error_rate: float = 0.0, permanent: bool = False,
                 rng: random.Random | None = None, tokens_per_s: float = 0.0, settings: Settings | None = None):
        """`latency_s`: time to the first token; `tokens_per_s`: pace after it (0: all at once)."""
        self.latency_s = latency_s
        self.tokens_per_s = tokens_per_s
        self.error_rate = error_rate
        self.permanent = permanent
        self.calls = 0
        self._rng = rng or random.Random(0)
        self._bounds = CallBounds.of(settings.resilience if settings else Resilience())

    async def aclose(self) -> None:
        pass

    async def complete(self, messages: list[dict[str, str]], on_token: OnToken | None = None,
                       on_finish: OnFinish | None = None) -> Completion:
        self.calls += 1
        watch: Stopwatch | None = None
        try:
            async with Stopwatch(self._bounds) as watch:
                text = await self._stream(messages, watch, on_token)
                if on_finish is not None:
                    await on_finish(text)
        except (CallTimeout, TransientLlmError, PermanentLlmError) as error:
            failure = error if not isinstance(error, CallTimeout) else TransientLlmError(str(error), error.kind)
            failure.timing = watch.timing if watch else None
            raise failure from None
        prompt = sum(count_tokens(m.get("content", "")) for m in messages)
        return Completion(text, prompt, count_tokens(text), "fake", timing=watch.timing)

    async def _stream(self, messages, watch: Stopwatch, on_token: OnToken | None) -> str:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if self.error_rate and self._rng.random() < self.error_rate:
            if self.permanent:
                raise PermanentLlmError("fake provider refused the request", "status_400")
            raise TransientLlmError("fake provider is unavailable", "status_503")
        text = echo_answer(messages)
        for i, part in enumerate(split_tokens(text)):
            if self.tokens_per_s and i:
                await asyncio.sleep(1 / self.tokens_per_s)
            watch.token()
            if on_token is not None:
                await on_token(part)
        return text
