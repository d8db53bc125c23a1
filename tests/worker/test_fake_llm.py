"""The fake LLM server's control API, raw wire format and pacing (what the SDK tests do not see): it
writes like a model (a first-token wait, then a steady pace, answers of a drawn length capped by
max_tokens), stalls on request, and stops writing when its client goes away."""
from __future__ import annotations

import asyncio
import json
import statistics
import time
import urllib.error
import urllib.request

import aiohttp
import anthropic
import openai
import pytest

from cloudia.llm.fake import count_tokens, split_tokens
from local_runtime.fake_llm import PROFILES, FakeLlmServer

MESSAGES = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "Echo: first"},
            {"role": "user", "content": "how are you today"}]
ECHO = "Echo: how are you today"
PROMPT_WORDS = 7  # the words of MESSAGES


def http(method: str, url: str, body: dict | list | None = None) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def chat(server, **body) -> dict:
    status, raw = http("POST", f"{server.url}/v1/chat/completions",
                       {"model": "m", "messages": MESSAGES, **body})
    assert status == 200, raw
    return json.loads(raw)


def sse_data(raw: bytes) -> list[str]:
    return [block[len("data: "):] for block in raw.decode().split("\n\n") if block.startswith("data: ")]


def openai_client(server) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="test-key", max_retries=0)


def anthropic_client(server) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=server.anthropic_base_url, api_key="test-key", max_retries=0)


class Timed:
    """One streamed answer as the client saw it: when the stream opened, each token's arrival (seconds
    from the request), the text, how it finished and its usage."""

    def __init__(self):
        self.opened_s: float | None = None
        self.arrivals: list[float] = []
        self.parts: list[str] = []
        self.finish: str | None = None
        self.usage: tuple[int, int] | None = None
        self.total_s: float = 0.0

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.arrivals, self.arrivals[1:])]


async def openai_stream(server, client: openai.AsyncOpenAI | None = None, **options) -> Timed:
    seen, own = Timed(), client is None
    client = client or openai_client(server)
    started = time.monotonic()
    stream = await client.chat.completions.create(model="fake-model", messages=MESSAGES, stream=True,
                                                  stream_options={"include_usage": True}, **options)
    seen.opened_s = time.monotonic() - started
    async for chunk in stream:
        if chunk.usage:
            seen.usage = (chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
        for choice in chunk.choices:
            if choice.delta.content:
                seen.arrivals.append(time.monotonic() - started)
                seen.parts.append(choice.delta.content)
            seen.finish = choice.finish_reason or seen.finish
    seen.total_s = time.monotonic() - started
    if own:
        await client.close()
    return seen


async def anthropic_stream(server, max_tokens: int = 1024) -> Timed:
    seen, client = Timed(), anthropic_client(server)
    started = time.monotonic()
    async with client.messages.stream(model="fake-model", max_tokens=max_tokens, messages=MESSAGES) as stream:
        seen.opened_s = time.monotonic() - started
        async for text in stream.text_stream:
            if text:
                seen.arrivals.append(time.monotonic() - started)
                seen.parts.append(text)
        message = await stream.get_final_message()
    seen.total_s = time.monotonic() - started
    seen.finish = message.stop_reason
    seen.usage = (message.usage.input_tokens, message.usage.output_tokens)
    await client.close()
    return seen


# -- faults -------------------------------------------------------------------------------------
def test_faults_are_set_read_and_reset(fake_llm):
    status, body = http("POST", f"{fake_llm.url}/_faults", {"latency_ms": 20, "error_rate": 0.5})
    assert status == 200
    current = json.loads(http("GET", f"{fake_llm.url}/_faults")[1])
    assert current == {"latency_ms": 20, "error_rate": 0.5, "error_status": 503, "retry_after_s": 1.0,
                       "throttle_rate": 0.0, "timeout_rate": 0.0, "down": False,
                       "stall_after_tokens": 0, "stall_ms": 0}
    http("DELETE", f"{fake_llm.url}/_faults")
    assert json.loads(http("GET", f"{fake_llm.url}/_faults")[1])["error_rate"] == 0.0


@pytest.mark.parametrize("body", [{"latency": 5}, {"down": "yes"}, ["not", "an", "object"],
                                  {"stall_ms": True}])
def test_bad_fault_settings_are_refused(fake_llm, body):
    status, _ = http("POST", f"{fake_llm.url}/_faults", body)
    assert status == 400
    assert json.loads(http("GET", f"{fake_llm.url}/_faults")[1])["latency_ms"] == 0


def test_openai_stream_is_sse_ending_in_done_and_stats_count_requests(fake_llm):
    # GIVEN the in-process server on its default profile (brisk: 10-40 tokens)
    # WHEN a stream is asked for over raw HTTP
    status, raw = http("POST", f"{fake_llm.url}/v1/chat/completions",
                       {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi you"}]})
    # THEN it is SSE ending in [DONE], its text starts with the echo and has the profile's length
    assert status == 200
    events = sse_data(raw)
    assert events[-1] == "[DONE]"
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1]
                   if json.loads(e)["choices"])
    assert text.startswith("Echo: hi you")
    assert 10 <= count_tokens(text) <= 40
    # AND the stats count it, until reset
    stats = json.loads(http("GET", f"{fake_llm.url}/_stats")[1])
    assert (stats["chat_completions"], stats["answered"], stats["in_flight"]) == (1, 1, 0)
    http("DELETE", f"{fake_llm.url}/_stats")
    assert json.loads(http("GET", f"{fake_llm.url}/_stats")[1])["requests"] == 0


# -- profiles -----------------------------------------------------------------------------------
def test_profiles_are_read_set_by_name_or_fields_and_reset_over_http(fake_llm):
    # GIVEN the in-process server: it starts on the brisk profile
    status, raw = http("GET", f"{fake_llm.url}/_profile")
    assert status == 200
    assert json.loads(raw) == {"name": "brisk", "first_token_ms": 30, "tokens_per_s": 400.0,
                               "answer_tokens_min": 10, "answer_tokens_max": 40}
    # WHEN a profile is set by name THEN it is the one read back
    assert json.loads(http("POST", f"{fake_llm.url}/_profile", {"name": "model"})[1])["name"] == "model"
    assert json.loads(http("GET", f"{fake_llm.url}/_profile")[1]) == {
        "name": "model", "first_token_ms": 500, "tokens_per_s": 45.0, "answer_tokens_min": 300,
        "answer_tokens_max": 600}
    # WHEN a name comes with overrides THEN they apply over it, and the result has no name
    status, raw = http("POST", f"{fake_llm.url}/_profile", {"name": "burst", "first_token_ms": 40})
    assert status == 200
    assert json.loads(raw) == {"name": None, "first_token_ms": 40, "tokens_per_s": 0.0, "answer_tokens_min": 0,
                               "answer_tokens_max": 0}
    # WHEN only fields are given THEN the others are the model's
    explicit = json.loads(http("POST", f"{fake_llm.url}/_profile",
                               {"tokens_per_s": 100, "answer_tokens_max": 700})[1])
    assert explicit == {"name": None, "first_token_ms": 500, "tokens_per_s": 100.0, "answer_tokens_min": 300,
                        "answer_tokens_max": 700}
    # WHEN it is deleted THEN the server is back on the profile it started with
    assert json.loads(http("DELETE", f"{fake_llm.url}/_profile")[1])["name"] == "brisk"
    assert json.loads(http("GET", f"{fake_llm.url}/_profile")[1])["tokens_per_s"] == 400.0


@pytest.mark.parametrize("body", [{"first_token": 5}, {"name": "slowpoke"}, {"tokens_per_s": -1},
                                  {"answer_tokens_min": 50, "answer_tokens_max": 10}, {"first_token_ms": True},
                                  {"answer_tokens_max": "many"}, ["model"]])
def test_bad_profiles_are_refused_and_change_nothing(fake_llm, body):
    # WHEN a wrong profile is posted THEN it is refused with 400 and the profile is unchanged
    status, raw = http("POST", f"{fake_llm.url}/_profile", body)
    assert status == 400
    assert json.loads(http("GET", f"{fake_llm.url}/_profile")[1])["name"] == "brisk"
    if isinstance(body, dict) and "first_token" in body:  # an unknown key: the known ones are listed
        assert json.loads(raw)["known"] == ["answer_tokens_max", "answer_tokens_min", "first_token_ms", "name",
                                            "tokens_per_s"]


def test_in_process_profile_control_matches_http(fake_llm):
    # WHEN the profile is set in-process THEN HTTP reads the same; unknown keys raise
    fake_llm.set_profile("brisk", answer_tokens_max=12)
    assert json.loads(http("GET", f"{fake_llm.url}/_profile")[1])["answer_tokens_max"] == 12
    with pytest.raises(ValueError):
        fake_llm.set_profile(speed=3)
    fake_llm.reset_profile()
    assert fake_llm.profile == PROFILES["brisk"]


def test_brisk_answers_are_short_and_quick(fake_llm):
    # GIVEN the default brisk profile WHEN a stream is asked for
    seen = asyncio.run(openai_stream(fake_llm))
    # THEN it paces (its tokens do not all come at once) yet ends in a fraction of a second (about
    # 0.2 s; the bound leaves room for a loaded machine), with 10-40 tokens
    assert seen.text.startswith(ECHO)
    assert 10 <= len(seen.parts) <= 40
    assert seen.arrivals[0] >= 0.03
    assert seen.total_s < 0.5


def test_burst_answers_exactly_the_echo_at_once(fake_llm):
    # GIVEN the burst profile (the fake as it was)
    fake_llm.set_profile("burst")
    started = time.monotonic()
    # WHEN both formats are asked, streamed and not
    seen = asyncio.run(openai_stream(fake_llm))
    whole = chat(fake_llm)
    status, raw = http("POST", f"{fake_llm.url}/v1/messages",
                       {"model": "m", "max_tokens": 100, "messages": MESSAGES})
    # THEN each answer is exactly the echo, token by token, at once
    assert seen.parts == split_tokens(ECHO)
    assert seen.usage == (PROMPT_WORDS, 5) and seen.finish == "stop"
    assert whole["choices"][0]["message"]["content"] == ECHO
    assert json.loads(raw)["content"][0]["text"] == ECHO
    assert time.monotonic() - started < 0.5


# -- pacing -------------------------------------------------------------------------------------
def test_an_openai_stream_comes_after_the_first_token_wait_at_a_steady_pace(fake_llm):
    # GIVEN a model-like profile: first token after 300 ms, then 50 tokens/s, answers of 50 tokens
    fake_llm.set_profile(first_token_ms=300, tokens_per_s=50, answer_tokens_min=50, answer_tokens_max=50)
    # WHEN a stream is read with the OpenAI SDK
    seen = asyncio.run(openai_stream(fake_llm))
    # THEN the headers come at once, the first token after the wait
    assert seen.opened_s < 0.25
    assert 0.3 <= seen.arrivals[0] < 0.6
    # AND the 50 tokens take about 49/50 s, each about 1/50 s after the previous
    assert len(seen.parts) == 50
    assert seen.arrivals[-1] - seen.arrivals[0] >= 0.9
    assert seen.total_s < 2.5
    assert 0.012 <= statistics.median(seen.gaps) <= 0.035
    # AND the answer starts with the echo, finishes "stop", and usage counts the words sent
    assert seen.text.startswith(ECHO + " ")
    assert seen.finish == "stop"
    assert seen.usage == (PROMPT_WORDS, count_tokens(seen.text)) == (PROMPT_WORDS, 50)


def test_an_anthropic_stream_is_paced_the_same_way(fake_llm):
    # GIVEN first token after 200 ms, then 50 tokens/s, answers of 25 tokens
    fake_llm.set_profile(first_token_ms=200, tokens_per_s=50, answer_tokens_min=25, answer_tokens_max=25)
    # WHEN a stream is read with the Anthropic SDK
    seen = asyncio.run(anthropic_stream(fake_llm))
    # THEN the first token comes after the wait, the rest at 1/50 s intervals
    assert seen.opened_s < 0.2
    assert 0.2 <= seen.arrivals[0] < 0.5
    assert len(seen.parts) == 25
    assert seen.arrivals[-1] - seen.arrivals[0] >= 0.42
    assert seen.total_s < 2.0
    assert 0.012 <= statistics.median(seen.gaps) <= 0.035
    assert seen.text.startswith(ECHO + " ")
    assert (seen.finish, seen.usage) == ("end_turn", (PROMPT_WORDS, 25))


def test_a_non_streamed_answer_comes_whole_once_it_would_have_been_written(fake_llm):
    # GIVEN first token after 200 ms, then 100 tokens/s, answers of 30 tokens
    fake_llm.set_profile(first_token_ms=200, tokens_per_s=100, answer_tokens_min=30, answer_tokens_max=30)
    # WHEN an answer is asked without streaming
    started = time.monotonic()
    answer = chat(fake_llm)
    elapsed = time.monotonic() - started
    # THEN it comes after the first token wait plus 30 tokens' time, whole
    assert 0.48 <= elapsed < 1.5
    assert answer["choices"][0]["message"]["content"].startswith(ECHO)
    assert answer["usage"] == {"prompt_tokens": PROMPT_WORDS, "completion_tokens": 30, "total_tokens": 37}


def test_many_concurrent_streams_each_keep_the_pace(fake_llm):
    # GIVEN first token after 100 ms, then 50 tokens/s, answers of 25 tokens (about 0.58 s each)
    fake_llm.set_profile(first_token_ms=100, tokens_per_s=50, answer_tokens_min=25, answer_tokens_max=25)

    async def many():
        client = openai_client(fake_llm)  # one client: building 20 SDK clients takes longer than the answers
        try:
            return await asyncio.gather(*(openai_stream(fake_llm, client) for _ in range(20)))
        finally:
            await client.close()

    # WHEN 20 streams are read at once
    started = time.monotonic()
    streams = asyncio.run(many())
    # THEN they ran side by side: each took its own time, not 20 times it, at the profile's pace
    assert time.monotonic() - started < 1.5
    for seen in streams:
        assert len(seen.parts) == 25
        assert 0.1 <= seen.arrivals[0] < 0.6
        assert 0.42 <= seen.arrivals[-1] - seen.arrivals[0] < 0.9


def test_a_stream_held_up_catches_up_on_its_clock(fake_llm):
    # GIVEN 40-token answers at 50 tokens/s after 100 ms: the last token is due at 0.88 s
    fake_llm.set_profile(first_token_ms=100, tokens_per_s=50, answer_tokens_min=40, answer_tokens_max=40)

    async def read_blocking_the_server_once() -> list[float]:
        arrivals: list[float] = []
        async with aiohttp.ClientSession() as session:
            started = time.monotonic()
            async with session.post(f"{fake_llm.openai_base_url}/chat/completions",
                                    json={"model": "m", "stream": True, "messages": MESSAGES}) as response:
                async for line in response.content:
                    if b'"content": "' in line and b'"content": ""' not in line:
                        arrivals.append(time.monotonic() - started)
                        if len(arrivals) == 10:  # the server's loop is busy for 300 ms
                            fake_llm._loop.call_soon_threadsafe(time.sleep, 0.3)
        return arrivals

    # WHEN the server is held up for 300 ms mid-stream
    arrivals = asyncio.run(read_blocking_the_server_once())
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    # THEN the stream paused, then sent what was due at once: it still ends when its clock said,
    # not 300 ms later (as sleeping 1/rate between tokens would)
    assert len(arrivals) == 40
    assert max(gaps) >= 0.25
    assert 0.85 <= arrivals[-1] < 1.05


def test_latency_comes_before_anything_and_the_first_token_wait_after_it(fake_llm):
    # GIVEN a 200 ms latency fault and a 200 ms first token
    fake_llm.set_profile("burst", first_token_ms=200)
    fake_llm.set_faults(latency_ms=200)
    # WHEN a stream is read
    seen = asyncio.run(openai_stream(fake_llm))
    # THEN not even the headers come before the latency, and the first token 200 ms after them
    assert seen.opened_s >= 0.2
    assert seen.arrivals[0] >= 0.4
    assert seen.text == ECHO


# -- length and max_tokens ----------------------------------------------------------------------
def test_answer_lengths_are_drawn_in_the_range_repeatably_per_seed():
    # GIVEN servers without pacing, drawing lengths in [5, 60]
    def lengths(seed: int, count: int) -> list[int]:
        server = FakeLlmServer(seed=seed, profile="burst").start()
        try:
            server.set_profile("burst", answer_tokens_min=5, answer_tokens_max=60)
            return [chat(server, messages=[{"role": "user", "content": "x"}])["usage"]["completion_tokens"]
                    for _ in range(count)]
        finally:
            server.stop()

    # WHEN 200 answers are asked
    drawn = lengths(7, 200)
    # THEN each length is in the range, they vary, and their mean is the triangular's (5 + 60 + 23.3) / 3
    assert min(drawn) >= 5 and max(drawn) <= 60
    assert len(set(drawn)) > 20
    assert 24 <= statistics.mean(drawn) <= 35
    # AND the same seed draws the same lengths, another seed others
    assert lengths(7, 30) == drawn[:30]
    assert lengths(8, 30) != drawn[:30]


def test_max_tokens_caps_an_openai_answer_with_finish_reason_length(fake_llm):
    # GIVEN answers of 40 tokens
    fake_llm.set_profile("brisk", answer_tokens_min=40, answer_tokens_max=40)
    # WHEN the request caps the answer at 12 (max_completion_tokens, streamed; max_tokens, not)
    seen = asyncio.run(openai_stream(fake_llm, max_completion_tokens=12))
    whole = chat(fake_llm, max_tokens=12)
    # THEN each has 12 words starting with the echo, "length", and usage says so
    assert len(seen.parts) == 12 and count_tokens(seen.text) == 12 and seen.text.startswith(ECHO)
    assert (seen.finish, seen.usage) == ("length", (PROMPT_WORDS, 12))
    text = whole["choices"][0]["message"]["content"]
    assert text.startswith(ECHO) and count_tokens(text) == 12
    assert whole["choices"][0]["finish_reason"] == "length"
    assert whole["usage"]["completion_tokens"] == 12
    # AND a cap above the answer's length changes nothing
    roomy = chat(fake_llm, max_completion_tokens=41)
    assert roomy["choices"][0]["finish_reason"] == "stop" and roomy["usage"]["completion_tokens"] == 40


def test_max_tokens_caps_an_anthropic_answer_with_stop_reason_max_tokens(fake_llm):
    # GIVEN answers of 40 tokens
    fake_llm.set_profile("brisk", answer_tokens_min=40, answer_tokens_max=40)
    # WHEN the Anthropic SDK caps a stream at 9 tokens, and asks another answer with room
    seen = asyncio.run(anthropic_stream(fake_llm, max_tokens=9))

    async def roomy():
        client = anthropic_client(fake_llm)
        message = await client.messages.create(model="fake-model", max_tokens=100, messages=MESSAGES)
        await client.close()
        return message

    message = asyncio.run(roomy())
    # THEN the capped one has 9 words and stop_reason max_tokens; the other 40 and end_turn
    assert seen.text.startswith(ECHO) and count_tokens(seen.text) == 9
    assert (seen.finish, seen.usage) == ("max_tokens", (PROMPT_WORDS, 9))
    assert (message.stop_reason, message.usage.output_tokens) == ("end_turn", 40)
    assert message.content[0].text.startswith(ECHO + " ")


def test_a_cap_below_the_echo_cuts_the_echo(fake_llm):
    # GIVEN a user message longer than the cap
    messages = [{"role": "user", "content": "one two three four five six"}]
    # WHEN answered with max_tokens 3, in both formats
    openai_answer = chat(fake_llm, messages=messages, max_tokens=3)
    _, raw = http("POST", f"{fake_llm.url}/v1/messages", {"model": "m", "max_tokens": 3, "messages": messages})
    # THEN the answer is the echo's first 3 words
    assert openai_answer["choices"][0]["message"]["content"] == "Echo: one two"
    assert openai_answer["choices"][0]["finish_reason"] == "length"
    assert json.loads(raw)["content"][0]["text"] == "Echo: one two"
    assert json.loads(raw)["stop_reason"] == "max_tokens"


@pytest.mark.parametrize("cap", [0, -3, "ten", 2.5, True])
def test_a_bad_max_tokens_is_refused(fake_llm, cap):
    status, raw = http("POST", f"{fake_llm.url}/v1/chat/completions",
                       {"model": "m", "messages": MESSAGES, "max_tokens": cap})
    assert status == 400
    assert json.loads(raw)["error"]["type"] == "invalid_request_error"


# -- stalls and dropped clients -----------------------------------------------------------------
@pytest.mark.parametrize("reader", [openai_stream, anthropic_stream])
def test_the_stall_fault_pauses_the_stream_after_its_tokens(fake_llm, reader):
    # GIVEN 20-token answers at 200 tokens/s, stalling 400 ms after 5 tokens
    fake_llm.set_profile(first_token_ms=0, tokens_per_s=200, answer_tokens_min=20, answer_tokens_max=20)
    fake_llm.set_faults(stall_after_tokens=5, stall_ms=400)
    # WHEN a stream is read
    seen = asyncio.run(reader(fake_llm))
    # THEN the 6th token comes about 400 ms after the 5th; every other gap is short
    gaps = seen.gaps
    assert len(seen.parts) == 20
    # (the 5th token read late on a loaded machine shortens the gap as seen, never by half)
    assert 0.35 <= gaps[4] < 0.8
    assert max(gaps[:4] + gaps[5:]) < 0.15
    assert seen.text.startswith(ECHO)


def test_a_client_leaving_mid_stream_stops_the_answer_and_is_not_counted_answered(fake_llm):
    # GIVEN answers of 40 tokens at 20 tokens/s (2 s each)
    fake_llm.set_profile(first_token_ms=0, tokens_per_s=20, answer_tokens_min=40, answer_tokens_max=40)

    async def leave_after_first_tokens() -> int:
        async with aiohttp.ClientSession() as session:
            response = await session.post(f"{fake_llm.openai_base_url}/chat/completions",
                                          json={"model": "m", "stream": True, "messages": MESSAGES})
            tokens = 0
            async for line in response.content:
                if b'"content": "' in line and b'"content": ""' not in line:
                    tokens += 1
                    if tokens == 3:
                        break
            response.close()  # drops the connection
            return tokens

    # WHEN the client reads 3 tokens, then goes away
    assert asyncio.run(leave_after_first_tokens()) == 3
    left = time.monotonic()
    # THEN the server stops writing at once: nothing is in flight, the answer counts as dropped
    while fake_llm.stats()["in_flight"] and time.monotonic() - left < 1.5:
        time.sleep(0.01)
    assert time.monotonic() - left < 0.5
    stats = fake_llm.stats()
    assert (stats["in_flight"], stats["dropped"], stats["answered"]) == (0, 1, 0)
    # AND a whole answer afterwards still counts
    fake_llm.set_profile("brisk")
    chat(fake_llm, stream=False)
    assert fake_llm.stats()["answered"] == 1
