"""How the SDK providers read a streamed answer: server-sent events split from raw bytes however they
are cut, the body read in paced pieces (one read per push interval, not one per token), an error event
inside a 200 stream classified as transient, and a call cut mid-stream leaving the client usable."""
from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web

from cloudia.llm import TransientLlmError, build_provider
from cloudia.llm._sse import EventDecoder
from cloudia.settings import Resilience, Settings
from tests.support.servers import serve_posts

MESSAGES = [{"role": "user", "content": "how are you today"}]

STREAM = (b"event: message_start\ndata: {\"a\": 1}\n\n"
          b": a comment line\n"
          b"data: first line\ndata: second line\n\n"
          b"event: ping\r\ndata: {}\r\n\r\n"
          b"data: [DONE]\n\n")
EVENTS = [(b"message_start", b'{"a": 1}'), (None, b"first line\nsecond line"), (b"ping", b"{}"), (None, b"[DONE]")]


def decode(pieces: list[bytes]) -> list:
    decoder = EventDecoder()
    events = [event for piece in pieces for event in decoder.feed(piece)]
    return events + decoder.close()


def test_events_are_the_same_however_the_bytes_are_cut():
    assert decode([STREAM]) == EVENTS
    for cut in range(1, len(STREAM)):  # every split point, "\r" and "\n" of a "\r\n" apart included
        assert decode([STREAM[:cut], STREAM[cut:]]) == EVENTS, cut
    assert decode([bytes([b]) for b in STREAM]) == EVENTS


def test_an_event_without_its_blank_line_at_the_end_of_the_body_is_dropped():
    assert decode([b"data: whole\n\ndata: cut"]) == [(None, b"whole")]
    assert decode([b"data: whole\r\r"]) == [(None, b"whole")]  # bare "\r" line ends


def provider_for(name: str, fake_llm, push_interval_ms: int = 200, timeout_s: float = 2.0):
    base_url = fake_llm.openai_base_url if name == "openai" else fake_llm.anthropic_base_url
    resilience = Resilience(llm_first_token_timeout_s=timeout_s, llm_stall_timeout_s=timeout_s,
                            token_push_interval_ms=push_interval_ms)
    return build_provider(name, Settings(llm_base_url=base_url, llm_api_key="test-key", llm_model="fake-model",
                                         resilience=resilience))


def arrivals(provider) -> tuple[list[float], list[str], object]:
    """The loop time each token was handed over at, the tokens, and the completion."""
    async def run():
        loop = asyncio.get_running_loop()
        times, tokens = [], []

        async def on_token(text: str) -> None:
            times.append(loop.time())
            tokens.append(text)
        try:
            return times, tokens, await provider.complete(MESSAGES, on_token)
        finally:
            await provider.aclose()
    return asyncio.run(run())


def reads(times: list[float], gap_s: float = 0.008) -> int:
    """How many reads handed the tokens over: tokens handed over together come from one read."""
    return 1 + sum(1 for before, after in zip(times, times[1:]) if after - before > gap_s)


@pytest.mark.parametrize("name", ["openai", "anthropic"])
def test_a_streamed_answer_is_read_once_per_push_interval_not_once_per_token(fake_llm, name):
    # GIVEN a model writing 100 tokens at 50 tokens/s (2 s), and tokens pushed every 200 ms
    fake_llm.set_profile(first_token_ms=100, tokens_per_s=50, answer_tokens_min=100, answer_tokens_max=100)
    times, tokens, completion = arrivals(provider_for(name, fake_llm, push_interval_ms=200))
    # THEN every token is handed over, in order, in about one read per 200 ms (2 s / 0.2 s, and the first)
    assert "".join(tokens) == completion.text and len(completion.text.split()) == 100
    assert 5 <= reads(times) <= 14
    assert completion.timing.tokens == 100 and 1.9 <= completion.timing.duration_s < 3.0


@pytest.mark.parametrize("name", ["openai", "anthropic"])
def test_without_a_push_interval_tokens_are_read_as_they_come(fake_llm, name):
    fake_llm.set_profile(first_token_ms=100, tokens_per_s=50, answer_tokens_min=100, answer_tokens_max=100)
    times, tokens, _ = arrivals(provider_for(name, fake_llm, push_interval_ms=0))
    assert len(tokens) == 100 and reads(times) > 50


async def _serve_stream(chunks: list[bytes], gap_s: float = 0.01) -> tuple[web.AppRunner, str]:
    """A server answering every POST with 200 and these stream chunks, sent `gap_s` apart."""
    async def stream(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for chunk in chunks:
            await response.write(chunk)
            await asyncio.sleep(gap_s)
        await response.write_eof()
        return response

    return await serve_posts(stream)


def openai_event(body: dict) -> bytes:
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def anthropic_event(name: str, body: dict) -> bytes:
    return f"event: {name}\ndata: {json.dumps(body)}\n\n".encode()


WORDS = ("Echo:", " how", " are")
ERROR_STREAMS = {
    "openai": [openai_event({"model": "m", "choices": [{"index": 0, "delta": {"content": word}}]}) for word in WORDS]
    + [openai_event({"error": {"message": "The server had an error", "type": "server_error"}})],
    "anthropic": [anthropic_event("message_start", {"type": "message_start",
                                                    "message": {"model": "m", "usage": {"input_tokens": 4}}})]
    + [anthropic_event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                               "delta": {"type": "text_delta", "text": word}}) for word in WORDS]
    + [anthropic_event("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})],
}


@pytest.mark.parametrize("name", ["openai", "anthropic"])
def test_an_error_event_inside_a_stream_is_a_transient_failure(name):
    # GIVEN a provider that answers 200, streams three tokens, then an error event (as an overloaded
    # provider does mid-answer)
    async def run():
        runner, url = await _serve_stream(ERROR_STREAMS[name])
        provider = build_provider(name, Settings(llm_base_url=url + ("/v1" if name == "openai" else ""),
                                                 llm_api_key="k", llm_model="m", resilience=Resilience()))
        try:
            with pytest.raises(TransientLlmError) as raised:
                await provider.complete(MESSAGES)
            return raised.value
        finally:
            await provider.aclose()
            await runner.cleanup()

    error = asyncio.run(run())
    # THEN the call fails for a retry later, its timing showing the tokens that came
    assert error.kind == "stream_error"
    assert error.timing.tokens == 3


@pytest.mark.parametrize("name", ["openai", "anthropic"])
def test_a_call_cut_mid_stream_leaves_the_client_usable_for_the_next(fake_llm, name):
    # GIVEN a call cut by the stall bound in the middle of its stream
    fake_llm.set_profile(first_token_ms=20, tokens_per_s=200, answer_tokens_min=30, answer_tokens_max=30)
    fake_llm.set_faults(stall_after_tokens=5, stall_ms=1500)
    provider = provider_for(name, fake_llm, timeout_s=0.5)

    async def run():
        try:
            with pytest.raises(TransientLlmError) as raised:
                await provider.complete(MESSAGES)
            fake_llm.set_faults()
            return raised.value, await provider.complete(MESSAGES), await provider.complete(MESSAGES)
        finally:
            await provider.aclose()

    cut, *answers = asyncio.run(run())
    # THEN the next calls on the same client are answered whole
    assert cut.kind == "stall"
    assert [len(a.text.split()) for a in answers] == [30, 30]
