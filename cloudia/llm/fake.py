"""An in-process provider with injectable latency and faults: benchmarks and tests without HTTP.

Its answer is the same deterministic text the fake LLM server gives (`echo_answer`)."""
from __future__ import annotations

import asyncio
import random

from cloudia.llm import Completion, OnToken, PermanentLlmError, TransientLlmError


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
                 rng: random.Random | None = None):
        self.latency_s = latency_s
        self.error_rate = error_rate
        self.permanent = permanent
        self.calls = 0
        self._rng = rng or random.Random(0)

    async def aclose(self) -> None:
        pass

    async def complete(self, messages: list[dict[str, str]], on_token: OnToken | None = None) -> Completion:
        self.calls += 1
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if self.error_rate and self._rng.random() < self.error_rate:
            if self.permanent:
                raise PermanentLlmError("fake provider refused the request", "status_400")
            raise TransientLlmError("fake provider is unavailable", "status_503")
        text = echo_answer(messages)
        if on_token is not None:
            for part in split_tokens(text):
                await on_token(part)
        prompt = sum(count_tokens(m.get("content", "")) for m in messages)
        return Completion(text, prompt, count_tokens(text), "fake")
