"""A fake LLM server: the OpenAI and Anthropic wire formats, written at a model's pace, with real faults.

    python -m local_runtime.fake_llm --port 8089        # OpenAI base URL http://localhost:8089/v1,
                                                         # Anthropic base URL http://localhost:8089
    python -m local_runtime.fake_llm --profile burst     # the old behaviour: the echo, all at once

- `POST /v1/chat/completions` (OpenAI; `stream: true` gives SSE chunks ending in `data: [DONE]`, and a
  usage chunk when `stream_options.include_usage`)
- `POST /v1/messages` (Anthropic; `stream: true` gives its event stream)
  An answer starts with "Echo: <last user message>" and goes on with filler words up to its length;
  `usage` counts the words really sent (prompt: the messages' words). The request's cap (OpenAI
  `max_completion_tokens` or `max_tokens`, Anthropic `max_tokens`) cuts it, with `finish_reason:
  "length"` / `stop_reason: "max_tokens"` (else "stop" / "end_turn").
  A stream sends its headers and first event at once, then each token when due: token i at
  `first_token_ms + i / tokens_per_s` after the request (a clock, not a gap per token, so the pace
  holds under load). A non-streamed answer comes whole once it would have been written.
  A client that goes away mid-answer stops the generation (counted `dropped`, not `answered`).
  A last user message containing `[answer_tokens=N]` is answered with N tokens, whatever the profile.
- `POST /_profile` sets how answers are written: `{"name": "model"}`, or fields, or a name plus
  overrides; omitted fields come from the named profile, or from `model` without a name; unknown keys
  are refused with 400. `GET /_profile` returns it (with its `name`, null if it is none of the named
  ones), `DELETE` goes back to the profile the server started with.
    first_token_ms      from the request to the first content token
    tokens_per_s        the steady pace after it (0: every token at once)
    answer_tokens_min   each answer's length in tokens (words) is drawn, seeded, from a triangular
    answer_tokens_max   distribution on [min, max] with its mode a third of the way up (many middling
                        answers, a tail of long ones); an answer is never shorter than the echo, and
                        0/0 means the echo alone
  Named profiles (`PROFILES`): `model` (500 ms, 45 tokens/s, 300-600 tokens; the CLI's default),
  `brisk` (the same shape on a fast clock: 30 ms, 400 tokens/s, 10-40 tokens; the in-process default,
  for tests), `burst` (no wait, no pace, the echo alone).
- `POST /_faults` sets the fault injection: the posted JSON is the whole setting, omitted keys take
  their defaults, unknown keys are refused with 400. `GET /_faults` returns it, `DELETE` resets it.
    latency_ms          delay before anything is sent (on top of the profile's first token)
    error_rate          share of requests answered with `error_status` (503 by default)
    error_status        the status of injected errors (429 carries `Retry-After: retry_after_s`)
    retry_after_s       the Retry-After of a 429
    throttle_rate       share of requests answered 429 with Retry-After (on top of error_rate)
    timeout_rate        share of requests that never answer (the client's timeout fires)
    down                every connection is reset without an answer (the client sees a connection error)
    stall_after_tokens  after this many content tokens the answer stalls (0: never) ...
    stall_ms            ... this long, then goes on (a stalled read; a non-streamed answer is late by it)
- `GET /_stats` counts requests that reached the LLM endpoints, `answered` (answers sent to their end),
  `dropped` (cut by the client mid-answer), `faulted`, and `in_flight` (answers being written now);
  `DELETE /_stats` resets the counts.

`FakeLlmServer` runs the same app in a background thread for tests and the local runtime (profile
`brisk` unless told). The CLI takes `--profile` (default `$FAKE_LLM_PROFILE`, else `model`) and
`--first-token-ms`, `--tokens-per-s`, `--answer-tokens-min`, `--answer-tokens-max` over it.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import threading
import time
import uuid
from dataclasses import asdict, dataclass, fields, replace

from aiohttp import web

from cloudia.llm.fake import count_tokens, echo_answer, split_tokens

DEFAULT_PORT = 8089
# A user message with this asks for an answer of that many tokens (still capped by max_tokens).
ANSWER_TOKENS_ASKED = re.compile(r"\[answer_tokens=(\d+)\]")
# A request hit by `timeout_rate` hangs this long: longer than any client timeout.
HANG_S = 3600.0
# Stopping does not wait for hung requests longer than this.
SHUTDOWN_TIMEOUT_S = 0.5
# The CLI's profile when `--profile` is not given (else `model`).
PROFILE_ENV = "FAKE_LLM_PROFILE"
# What an answer says after the echo, word after word (deterministic: the same length, the same text).
FILLER = tuple("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut "
               "labore et dolore magna aliqua".split())


@dataclass
class Faults:
    latency_ms: int = 0
    error_rate: float = 0.0
    error_status: int = 503
    retry_after_s: float = 1.0
    throttle_rate: float = 0.0
    timeout_rate: float = 0.0
    down: bool = False
    stall_after_tokens: int = 0
    stall_ms: int = 0


FAULT_KEYS = {f.name: f.type for f in fields(Faults)}


@dataclass
class Profile:
    """How answers are written (the module docstring says what each field means). Lengths are drawn
    from a triangular distribution on [answer_tokens_min, answer_tokens_max], mode a third of the way up.
    The defaults are the `model` profile."""

    first_token_ms: int = 500
    tokens_per_s: float = 45.0
    answer_tokens_min: int = 300
    answer_tokens_max: int = 600

    def check(self) -> "Profile":
        for key, value in asdict(self).items():
            if value < 0:
                raise ValueError(f"{key} must not be negative")
        if self.answer_tokens_min > self.answer_tokens_max:
            raise ValueError("answer_tokens_min must not be above answer_tokens_max")
        return self


PROFILE_KEYS = {f.name: f.type for f in fields(Profile)}

PROFILES: dict[str, Profile] = {
    "model": Profile(first_token_ms=500, tokens_per_s=45.0, answer_tokens_min=300, answer_tokens_max=600),
    # The model's shape on a fast clock: at most 30 ms + 40 / 400 s = 0.13 s an answer.
    "brisk": Profile(first_token_ms=30, tokens_per_s=400.0, answer_tokens_min=10, answer_tokens_max=40),
    # The fake as it was: the echo alone, at once.
    "burst": Profile(first_token_ms=0, tokens_per_s=0.0, answer_tokens_min=0, answer_tokens_max=0),
}


class UnknownKeys(ValueError):
    def __init__(self, what: str, unknown: list[str], known: list[str]):
        super().__init__(f"unknown {what} keys: {unknown}")
        self.known = known


def make_profile(name: str | None = None, **overrides) -> Profile:
    """The named profile (`model` without a name) with `overrides`; ValueError if any is wrong."""
    unknown = sorted(set(overrides) - set(PROFILE_KEYS))
    if unknown:
        raise UnknownKeys("profile", unknown, sorted([*PROFILE_KEYS, "name"]))
    if name is not None and name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}: known are {sorted(PROFILES)}")
    base = PROFILES[name] if name is not None else Profile()
    return replace(base, **{k: _coerce(PROFILE_KEYS[k], v, k) for k, v in overrides.items()}).check()


def profile_name(profile: Profile) -> str | None:
    """The name of the named profile equal to this one, if any."""
    return next((name for name, named in PROFILES.items() if named == profile), None)


def _as_profile(profile: str | Profile) -> Profile:
    return make_profile(profile) if isinstance(profile, str) else replace(profile).check()


@dataclass
class Answer:
    """One answer as it will be sent: its text, its tokens (the stream's content chunks) and usage."""

    text: str
    parts: list[str]
    prompt_tokens: int
    completion_tokens: int
    capped: bool  # cut by the request's max tokens


def compose_answer(messages: list[dict], length: int, cap: int | None) -> Answer:
    """The echo of `messages`, then filler words up to `length` words (never less than the echo),
    cut to `cap` words when the request caps it."""
    echo = echo_answer(messages)
    echo_words = count_tokens(echo)
    target = max(length, echo_words)
    capped = cap is not None and target > cap
    if cap is not None and capped:
        target = cap
    if target <= echo_words:
        text = _first_words(echo, target)
    else:
        filler = " ".join(FILLER[i % len(FILLER)] for i in range(target - echo_words))
        text = echo + ("" if echo[-1:].isspace() else " ") + filler
    return Answer(text, split_tokens(text), sum(count_tokens(m["content"]) for m in messages),
                  count_tokens(text), capped)


def _first_words(text: str, n: int) -> str:
    """`text` up to the end of its n-th word (all of it if it has no more)."""
    words = list(re.finditer(r"\S+", text))
    if n >= len(words):
        return text
    return text[:words[n - 1].end()] if n > 0 else ""


class Pace:
    """When each token of one answer is due, on one clock from the request: token i at
    `first_token + i / rate`, plus the stall for the tokens after `stall_after_tokens`."""

    def __init__(self, profile: Profile, faults: Faults):
        self._loop = asyncio.get_running_loop()
        self.start = self._loop.time()
        self._first_s = profile.first_token_ms / 1000
        self._rate = profile.tokens_per_s
        self._stall_after = faults.stall_after_tokens if faults.stall_after_tokens > 0 else 0
        self._stall_s = max(faults.stall_ms, 0) / 1000 if self._stall_after else 0.0

    def due(self, i: int) -> float:
        """When token `i` (counted from 0) is due."""
        at = self.start + self._first_s + (i / self._rate if self._rate > 0 else 0.0)
        return at + self._stall_s if self._stall_after and i >= self._stall_after else at

    def done(self, n: int) -> float:
        """When the whole of an n-token answer is written: the first token, n tokens' time, a stall."""
        at = self.start + self._first_s + (n / self._rate if self._rate > 0 else 0.0)
        return at + self._stall_s if self._stall_after and n > self._stall_after else at

    async def until(self, when: float) -> None:
        delay = when - self._loop.time()
        if delay > 0:
            await asyncio.sleep(delay)


class _Generating:
    """Around the writing of one answer: the `in_flight` gauge, and `dropped` if the client left."""

    def __init__(self, llm: "FakeLlm"):
        self._llm = llm

    def __enter__(self) -> None:
        self._llm.in_flight += 1

    def __exit__(self, kind, _error, _tb) -> None:
        self._llm.in_flight -= 1
        if kind is not None and issubclass(kind, (asyncio.CancelledError, ConnectionError)):
            self._llm.stats["dropped"] += 1


class FakeLlm:
    """The app's state: fault setting, profile, counters, seeded random sources (repeatable fault
    patterns and answer lengths)."""

    def __init__(self, seed: int = 0, profile: str | Profile = "brisk"):
        self.faults = Faults()
        self.start_profile = _as_profile(profile)
        self.profile = self.start_profile
        self.stats = {"requests": 0, "chat_completions": 0, "messages": 0, "answered": 0, "dropped": 0,
                      "faulted": 0}
        self.in_flight = 0
        self._rng = random.Random(seed)
        self._lengths = random.Random(f"lengths-{seed}")  # apart, so the fault pattern stays the same

    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes([
            web.post("/v1/chat/completions", self.chat_completions),
            web.post("/v1/messages", self.messages),
            web.get("/_faults", self.get_faults),
            web.post("/_faults", self.set_faults),
            web.delete("/_faults", self.reset_faults),
            web.get("/_profile", self.get_profile),
            web.post("/_profile", self.set_profile),
            web.delete("/_profile", self.reset_profile),
            web.get("/_stats", self.get_stats),
            web.delete("/_stats", self.reset_stats),
        ])
        return app

    def draw_length(self, profile: Profile) -> int:
        """An answer's length in tokens, from the seeded triangular distribution of the profile."""
        low, high = profile.answer_tokens_min, profile.answer_tokens_max
        if high <= low:
            return low
        return round(self._lengths.triangular(low, high, low + (high - low) / 3))

    # -- control ------------------------------------------------------------------------------
    async def get_faults(self, _request: web.Request) -> web.Response:
        return web.json_response(asdict(self.faults))

    async def set_faults(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        if isinstance(body, web.Response):
            return body
        unknown = sorted(set(body) - set(FAULT_KEYS))
        if unknown:
            return web.json_response({"error": f"unknown fault keys: {unknown}", "known": sorted(FAULT_KEYS)},
                                     status=400)
        try:
            self.faults = Faults(**{k: _coerce(FAULT_KEYS[k], v, k) for k, v in body.items()})
        except (TypeError, ValueError) as error:
            return web.json_response({"error": str(error)}, status=400)
        return web.json_response(asdict(self.faults))

    async def reset_faults(self, _request: web.Request) -> web.Response:
        self.faults = Faults()
        return web.json_response(asdict(self.faults))

    async def get_profile(self, _request: web.Request) -> web.Response:
        return web.json_response(self.profile_view())

    async def set_profile(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        if isinstance(body, web.Response):
            return body
        overrides = dict(body)
        name = overrides.pop("name", None)
        try:
            self.profile = make_profile(name, **overrides)
        except UnknownKeys as error:
            return web.json_response({"error": str(error), "known": error.known}, status=400)
        except (TypeError, ValueError) as error:
            return web.json_response({"error": str(error), "profiles": sorted(PROFILES)}, status=400)
        return web.json_response(self.profile_view())

    async def reset_profile(self, _request: web.Request) -> web.Response:
        self.profile = self.start_profile
        return web.json_response(self.profile_view())

    def profile_view(self) -> dict:
        return {"name": profile_name(self.profile), **asdict(self.profile)}

    async def get_stats(self, _request: web.Request) -> web.Response:
        return web.json_response({**self.stats, "in_flight": self.in_flight})

    async def reset_stats(self, _request: web.Request) -> web.Response:
        for key in self.stats:
            self.stats[key] = 0
        return web.json_response({**self.stats, "in_flight": self.in_flight})

    # -- the LLM endpoints --------------------------------------------------------------------
    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        self.stats["chat_completions"] += 1
        fault = await self._inject(request)
        if fault is not None:
            return fault
        body, model, messages = await _conversation(request)
        try:
            cap = _max_tokens(body, ("max_completion_tokens", "max_tokens"))
        except ValueError as error:
            return _invalid_request(str(error))
        answer, pace = self._answer(messages, cap)
        finish = "length" if answer.capped else "stop"
        usage = {"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens,
                 "total_tokens": answer.prompt_tokens + answer.completion_tokens}
        completion_id, created = f"chatcmpl-{uuid.uuid4().hex[:12]}", int(time.time())
        with _Generating(self):
            if not body.get("stream"):
                await pace.until(pace.done(len(answer.parts)))
                self.stats["answered"] += 1
                return web.json_response({
                    "id": completion_id, "object": "chat.completion", "created": created, "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text},
                                 "finish_reason": finish, "logprobs": None}],
                    "usage": usage,
                })
            response = await _sse(request)

            def chunk(delta: dict, finish: str | None = None, with_usage: dict | None = None,
                      choices: bool = True):
                return {"id": completion_id, "object": "chat.completion.chunk", "created": created,
                        "model": model, "usage": with_usage,
                        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]
                        if choices else []}

            await _send(response, chunk({"role": "assistant", "content": ""}))
            for i, part in enumerate(answer.parts):
                await pace.until(pace.due(i))
                await _send(response, chunk({"content": part}))
            await _send(response, chunk({}, finish=finish))
            if (body.get("stream_options") or {}).get("include_usage"):
                await _send(response, chunk({}, with_usage=usage, choices=False))
            await _write(response, b"data: [DONE]\n\n")
            await _write_eof(response)
            self.stats["answered"] += 1
            return response

    async def messages(self, request: web.Request) -> web.StreamResponse:
        self.stats["messages"] += 1
        fault = await self._inject(request)
        if fault is not None:
            return fault
        body, model, messages = await _conversation(request)
        try:
            cap = _max_tokens(body, ("max_tokens",))
        except ValueError as error:
            return _invalid_request(str(error))
        answer, pace = self._answer(messages, cap)
        stop_reason = "max_tokens" if answer.capped else "end_turn"
        message_id = f"msg_{uuid.uuid4().hex[:12]}"
        full = {"id": message_id, "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": answer.text}], "stop_reason": stop_reason,
                "stop_sequence": None,
                "usage": {"input_tokens": answer.prompt_tokens, "output_tokens": answer.completion_tokens}}
        with _Generating(self):
            if not body.get("stream"):
                await pace.until(pace.done(len(answer.parts)))
                self.stats["answered"] += 1
                return web.json_response(full)
            response = await _sse(request)
            start = dict(full, content=[], stop_reason=None,
                         usage={"input_tokens": answer.prompt_tokens, "output_tokens": 0})
            await _event(response, "message_start", {"type": "message_start", "message": start})
            await _event(response, "content_block_start", {"type": "content_block_start", "index": 0,
                                                           "content_block": {"type": "text", "text": ""}})
            for i, part in enumerate(answer.parts):
                await pace.until(pace.due(i))
                await _event(response, "content_block_delta", {"type": "content_block_delta", "index": 0,
                                                               "delta": {"type": "text_delta", "text": part}})
            await _event(response, "content_block_stop", {"type": "content_block_stop", "index": 0})
            await _event(response, "message_delta", {"type": "message_delta",
                                                     "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                                                     "usage": {"output_tokens": answer.completion_tokens}})
            await _event(response, "message_stop", {"type": "message_stop"})
            await _write_eof(response)
            self.stats["answered"] += 1
            return response

    def _answer(self, messages: list[dict], cap: int | None) -> tuple[Answer, Pace]:
        """This request's answer and its clock, from the profile and faults as they are now. A last
        user message asking `[answer_tokens=N]` gets N tokens (a user who asks for a long essay)."""
        profile, faults = self.profile, self.faults
        last_user = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
        asked = ANSWER_TOKENS_ASKED.search(last_user)
        length = int(asked.group(1)) if asked else self.draw_length(profile)
        return compose_answer(messages, length, cap), Pace(profile, faults)

    async def _inject(self, request: web.Request) -> web.StreamResponse | None:
        """Apply the fault setting to one request; a response (or a hang, or a reset) if it is hit."""
        self.stats["requests"] += 1
        f = self.faults
        if f.down:
            self.stats["faulted"] += 1
            request.transport.abort() if request.transport else None  # reset, no answer at all
            raise asyncio.CancelledError()
        if f.latency_ms:
            await asyncio.sleep(f.latency_ms / 1000)
        roll = self._rng.random()
        if roll < f.timeout_rate:
            self.stats["faulted"] += 1
            await asyncio.sleep(HANG_S)
        roll = self._rng.random()
        if roll < f.throttle_rate:
            self.stats["faulted"] += 1
            return _error_response(429, f.retry_after_s)
        roll = self._rng.random()
        if roll < f.error_rate:
            self.stats["faulted"] += 1
            return _error_response(f.error_status, f.retry_after_s)
        return None


def _coerce(kind, value, key: str = "value"):
    kind = {"int": int, "float": float, "bool": bool}.get(kind, kind) if isinstance(kind, str) else kind
    if kind is bool and not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false")
    if kind in (int, float) and isinstance(value, bool):
        raise ValueError(f"{key} must be a number")
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise ValueError(f"{key} must be a whole number")
    return kind(value)


async def _json_object(request: web.Request) -> dict | web.Response:
    try:
        body = await request.json()
    except json.JSONDecodeError:
        return web.json_response({"error": "body must be JSON"}, status=400)
    if not isinstance(body, dict):
        return web.json_response({"error": "body must be a JSON object"}, status=400)
    return body


async def _conversation(request: web.Request) -> tuple[dict, str, list[dict]]:
    """The request body, its model and its messages as text (the wire formats agree on `messages`
    and `model`)."""
    body = await request.json()
    messages = [{"role": m.get("role", ""), "content": _text(m.get("content"))} for m in body.get("messages", [])]
    return body, body.get("model", "fake-llm"), messages


def _max_tokens(body: dict, keys: tuple[str, ...]) -> int | None:
    """The request's cap on the answer: the first of `keys` it sets (a positive whole number)."""
    for key in keys:
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive integer, not {value!r}")
        return value
    return None


def _text(content) -> str:
    """Message content as text: a string, or the text parts of a list of content blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def _error_response(status: int, retry_after_s: float) -> web.Response:
    headers = {"Retry-After": f"{retry_after_s:g}"} if status == 429 else {}
    kind = {429: "rate_limit_error", 400: "invalid_request_error"}.get(status, "api_error")
    # One body both SDKs read: OpenAI's {"error": {"message", "type"}} and Anthropic's "type": "error".
    body = {"type": "error", "error": {"type": kind, "message": f"injected fault: HTTP {status}", "code": None}}
    return web.json_response(body, status=status, headers=headers)


def _invalid_request(message: str) -> web.Response:
    body = {"type": "error", "error": {"type": "invalid_request_error", "message": message, "code": None}}
    return web.json_response(body, status=400)


async def _sse(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    return response


async def _write(response: web.StreamResponse, data: bytes) -> None:
    try:
        await response.write(data)
    except ConnectionError:
        # The client went away: end the handler as a lost connection does (aiohttp ignores it quietly).
        raise asyncio.CancelledError() from None


async def _write_eof(response: web.StreamResponse) -> None:
    try:
        await response.write_eof()
    except ConnectionError:
        raise asyncio.CancelledError() from None


async def _send(response: web.StreamResponse, payload: dict) -> None:
    await _write(response, f"data: {json.dumps(payload)}\n\n".encode())


async def _event(response: web.StreamResponse, name: str, payload: dict) -> None:
    await _write(response, f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode())


class FakeLlmServer:
    """The fake LLM in a background thread on 127.0.0.1 (a free port unless one is given)."""

    def __init__(self, port: int = 0, seed: int = 0, profile: str | Profile = "brisk"):
        self.port = port
        self.llm = FakeLlm(seed, profile=profile)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    def start(self) -> "FakeLlmServer":
        started = threading.Event()
        loop = self._loop = asyncio.new_event_loop()

        async def serve():
            runner = self._runner = web.AppRunner(self.llm.app(), handle_signals=False, access_log=None,
                                                  handler_cancellation=True, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", self.port)
            await site.start()
            self.port = runner.addresses[0][1]  # the free port the OS chose
            started.set()

        def run():
            asyncio.set_event_loop(loop)
            loop.run_until_complete(serve())
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="fake-llm", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise TimeoutError("fake LLM server did not start")
        return self

    def stop(self) -> None:
        loop, runner, thread = self._loop, self._runner, self._thread
        if loop is None:
            return
        if runner is not None:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(10)
        self._loop = None

    # In-process control, the same as the HTTP endpoints.
    def set_faults(self, **faults) -> None:
        unknown = set(faults) - set(FAULT_KEYS)
        if unknown:
            raise ValueError(f"unknown fault keys: {sorted(unknown)}")
        self.llm.faults = Faults(**faults)

    def reset_faults(self) -> None:
        self.llm.faults = Faults()

    def set_profile(self, name: str | None = None, **overrides) -> Profile:
        """As `POST /_profile`: the named profile (`model` without a name) with `overrides` over it."""
        self.llm.profile = make_profile(name, **overrides)
        return self.llm.profile

    def reset_profile(self) -> None:
        self.llm.profile = self.llm.start_profile

    @property
    def profile(self) -> Profile:
        return self.llm.profile

    def stats(self) -> dict:
        return {**self.llm.stats, "in_flight": self.llm.in_flight}


def main(argv: list[str] | None = None, llm_class: type | None = None, description: str = "",
         default_profile: str = "model") -> None:
    """Serve `llm_class` (FakeLlm, or a subclass such as the chaos suite's recording one), writing
    with `--profile` (default `$FAKE_LLM_PROFILE`, else `default_profile`) and the flags over it."""
    llm_class = llm_class or FakeLlm
    parser = argparse.ArgumentParser(description=description or __doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", choices=sorted(PROFILES),
                        default=os.environ.get(PROFILE_ENV) or default_profile,
                        help=f"how answers are written (default ${PROFILE_ENV}, else {default_profile})")
    parser.add_argument("--first-token-ms", type=int, help="from the request to the first token")
    parser.add_argument("--tokens-per-s", type=float, help="the pace after the first token (0: all at once)")
    parser.add_argument("--answer-tokens-min", type=int, help="the shortest answer drawn")
    parser.add_argument("--answer-tokens-max", type=int, help="the longest answer drawn")
    args = parser.parse_args(argv)
    overrides = {key: getattr(args, key) for key in PROFILE_KEYS if getattr(args, key) is not None}
    try:
        profile = make_profile(args.profile, **overrides)
    except ValueError as error:
        parser.error(str(error))
    print(f"{llm_class.__name__} on http://{args.host}:{args.port} (OpenAI base URL /v1; faults at /_faults); "
          f"profile {profile_name(profile) or args.profile + ' with overrides'}: first token "
          f"{profile.first_token_ms} ms, {profile.tokens_per_s:g} tokens/s, "
          f"{profile.answer_tokens_min}-{profile.answer_tokens_max} tokens", flush=True)
    web.run_app(llm_class(args.seed, profile=profile).app(), host=args.host, port=args.port, print=None,
                handler_cancellation=True, shutdown_timeout=SHUTDOWN_TIMEOUT_S)


if __name__ == "__main__":
    main()
