"""The OpenAI and Anthropic providers, through the official SDKs, against the fake LLM server's wire
formats with real faults: answers and streams, the deadline model (first token, stall, deadline,
`max_tokens` on every call), each call's timing, and every failure mapped to transient or permanent."""
from __future__ import annotations

import asyncio

import pytest

from cloudia.llm import PermanentLlmError, TransientLlmError, build_provider
from cloudia.settings import Resilience, Settings

MESSAGES = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "Echo: first"},
            {"role": "user", "content": "how are you today"}]


def provider_for(name: str, fake_llm, timeout_s: float = 2.0, **bounds):
    base_url = fake_llm.openai_base_url if name == "openai" else fake_llm.anthropic_base_url
    resilience = Resilience(**{"llm_first_token_timeout_s": timeout_s, "llm_stall_timeout_s": timeout_s, **bounds})
    return build_provider(name, Settings(llm_base_url=base_url, llm_api_key="test-key", llm_model="fake-model",
                                         resilience=resilience))


def complete(provider, stream: bool):
    tokens: list[str] = []

    async def on_token(text: str) -> None:
        tokens.append(text)

    completion = asyncio.run(provider.complete(MESSAGES, on_token if stream else None))
    return completion, tokens


@pytest.mark.parametrize("name", ["openai", "anthropic"])
@pytest.mark.parametrize("stream", [False, True])
def test_answer_and_usage(fake_llm, name, stream):
    fake_llm.set_profile("burst")  # the echo alone, so every token can be named
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
    assert raised.value.kind == "first_token_timeout"
    assert 0.4 <= elapsed <= 1.5


@pytest.mark.parametrize("name", ["openai", "anthropic"])
def test_a_long_answer_at_a_healthy_pace_is_not_cut_and_reports_its_timing(fake_llm, name):
    # GIVEN a model that starts in 0.2 s and writes 100 tokens at 50 tokens/s (2 s), and bounds of
    # 0.5 s to the first token and between tokens: far shorter than the answer
    fake_llm.set_profile(first_token_ms=200, tokens_per_s=50, answer_tokens_min=100, answer_tokens_max=100)
    completion, tokens = complete(provider_for(name, fake_llm, timeout_s=0.5), stream=True)
    # THEN it is answered whole, and its timing says how it went
    assert completion.output_tokens == 100 and len(completion.text.split()) == 100
    timing = completion.timing
    assert 0.2 <= timing.first_token_s < 0.5
    assert 1.9 <= timing.duration_s < 4.0
    assert 35 <= timing.tokens_per_s <= 60


@pytest.mark.parametrize("name", ["openai", "anthropic"])
def test_a_stall_mid_stream_cuts_the_call(fake_llm, name):
    # GIVEN a model that goes silent for 2 s after 5 tokens; a stall bound of 0.5 s
    fake_llm.set_profile(first_token_ms=50, tokens_per_s=100, answer_tokens_min=30, answer_tokens_max=30)
    fake_llm.set_faults(stall_after_tokens=5, stall_ms=2000)
    with pytest.raises(TransientLlmError) as raised:
        complete(provider_for(name, fake_llm, timeout_s=0.5), stream=True)
    # THEN the call fails as a stall, its timing showing the tokens that came
    assert raised.value.kind == "stall"
    assert raised.value.timing.first_token_s is not None and raised.value.timing.tokens >= 5
    assert raised.value.timing.duration_s < 1.5


@pytest.mark.parametrize("name", ["openai", "anthropic"])
def test_the_whole_call_is_bounded_by_max_tokens_at_the_slowest_accepted_rate(fake_llm, name):
    # GIVEN a model that trickles 5 tokens/s, and bounds that accept no less than 20 tokens/s over
    # at most 20 tokens: the call may last 0.5 + 20 / 20 = 1.5 s
    fake_llm.set_profile(first_token_ms=50, tokens_per_s=5, answer_tokens_min=20, answer_tokens_max=20)
    with pytest.raises(TransientLlmError) as raised:
        complete(provider_for(name, fake_llm, timeout_s=0.5, llm_max_tokens=20, llm_min_tokens_per_s=20), stream=True)
    assert raised.value.kind == "deadline"
    assert 1.4 <= raised.value.timing.duration_s < 2.5


@pytest.mark.parametrize("name", ["openai", "anthropic"])
def test_every_call_asks_for_max_tokens(fake_llm, name):
    # GIVEN a model that would write 300 tokens, and llm_max_tokens = 40
    fake_llm.set_profile(first_token_ms=0, tokens_per_s=0, answer_tokens_min=300, answer_tokens_max=300)
    completion, _ = complete(provider_for(name, fake_llm, llm_max_tokens=40), stream=True)
    # THEN the provider stops at 40, which bounds the call and its cost
    assert completion.output_tokens == 40 and len(completion.text.split()) == 40


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


@pytest.mark.parametrize("name", ["openai", "anthropic"])
def test_the_finished_answer_is_handed_over_as_soon_as_the_provider_marks_it_complete(fake_llm, name):
    fake_llm.set_profile(first_token_ms=20, tokens_per_s=200, answer_tokens_min=30, answer_tokens_max=30)
    finished: list[str] = []

    async def on_finish(text: str) -> None:
        finished.append(text)

    completion = asyncio.run(provider_for(name, fake_llm).complete(MESSAGES, None, on_finish))
    # THEN once, with the whole text (before the stream's closing frames)
    assert finished == [completion.text] and len(completion.text.split()) == 30
