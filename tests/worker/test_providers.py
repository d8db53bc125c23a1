"""The OpenAI and Anthropic providers, through the official SDKs, against the fake LLM server's wire
formats with real faults: answers and streams, and every failure mapped to transient or permanent."""
from __future__ import annotations

import asyncio

import pytest

from cloudia.llm import PermanentLlmError, TransientLlmError, build_provider
from cloudia.settings import Resilience, Settings

MESSAGES = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "Echo: first"},
            {"role": "user", "content": "how are you today"}]


def provider_for(name: str, fake_llm, timeout_s: float = 2.0):
    base_url = fake_llm.openai_base_url if name == "openai" else fake_llm.anthropic_base_url
    return build_provider(name, Settings(llm_base_url=base_url, llm_api_key="test-key", llm_model="fake-model",
                                         resilience=Resilience(llm_timeout_s=timeout_s)))


def complete(provider, stream: bool):
    tokens: list[str] = []

    async def on_token(text: str) -> None:
        tokens.append(text)

    completion = asyncio.run(provider.complete(MESSAGES, on_token if stream else None))
    return completion, tokens


@pytest.mark.parametrize("name", ["openai", "anthropic"])
@pytest.mark.parametrize("stream", [False, True])
def test_answer_and_usage(fake_llm, name, stream):
    completion, tokens = complete(provider_for(name, fake_llm), stream)
    assert completion.text == "Echo: how are you today"
    assert (completion.input_tokens, completion.output_tokens) == (7, 5)  # words in, words out
    assert tokens == (["Echo:", " how", " are", " you", " today"] if stream else [])
    assert fake_llm.stats()["chat_completions" if name == "openai" else "messages"] == 1


@pytest.mark.parametrize("name", ["openai", "anthropic"])
@pytest.mark.parametrize("faults, error_class, kind, retry_after", [
    ({"error_rate": 1.0, "error_status": 429, "retry_after_s": 7}, TransientLlmError, "throttled", 7.0),
    ({"throttle_rate": 1.0, "retry_after_s": 2}, TransientLlmError, "throttled", 2.0),
    ({"error_rate": 1.0, "error_status": 500}, TransientLlmError, "status_500", None),
    ({"error_rate": 1.0, "error_status": 503}, TransientLlmError, "status_503", None),
    ({"error_rate": 1.0, "error_status": 408}, TransientLlmError, "status_408", None),
    ({"error_rate": 1.0, "error_status": 400}, PermanentLlmError, "status_400", None),
    ({"error_rate": 1.0, "error_status": 401}, PermanentLlmError, "status_401", None),
    ({"down": True}, TransientLlmError, "connection", None),
])
def test_faults_are_classified(fake_llm, name, faults, error_class, kind, retry_after):
    fake_llm.set_faults(**faults)
    for stream in (False, True):
        with pytest.raises(error_class) as raised:
            complete(provider_for(name, fake_llm), stream)
        assert raised.value.kind == kind
        assert getattr(raised.value, "retry_after_s", None) == retry_after


@pytest.mark.parametrize("name", ["openai", "anthropic"])
def test_a_provider_that_never_answers_times_out_within_the_bound(fake_llm, name):
    fake_llm.set_faults(timeout_rate=1.0)
    loop = asyncio.new_event_loop()
    started = loop.time()
    with pytest.raises(TransientLlmError) as raised:
        loop.run_until_complete(provider_for(name, fake_llm, timeout_s=0.5).complete(MESSAGES))
    elapsed = loop.time() - started
    loop.close()
    assert raised.value.kind == "timeout"
    assert 0.4 <= elapsed <= 1.5


def test_sdk_retries_are_off(fake_llm):
    # GIVEN a provider failing with 503: our layer owns retries, so the SDK must try exactly once
    fake_llm.set_faults(error_rate=1.0, error_status=503)
    for name in ("openai", "anthropic"):
        with pytest.raises(TransientLlmError):
            complete(provider_for(name, fake_llm), stream=False)
    assert fake_llm.stats()["requests"] == 2


def test_slow_provider_latency_is_injected(fake_llm):
    fake_llm.set_faults(latency_ms=300)
    loop = asyncio.new_event_loop()
    started = loop.time()
    loop.run_until_complete(provider_for("openai", fake_llm).complete(MESSAGES))
    assert loop.time() - started >= 0.3
    loop.close()
