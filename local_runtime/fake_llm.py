"""A fake LLM server that speaks the OpenAI and Anthropic wire formats, with real fault injection.

    python -m local_runtime.fake_llm --port 8089        # OpenAI base URL http://localhost:8089/v1,
                                                         # Anthropic base URL http://localhost:8089

- `POST /v1/chat/completions` (OpenAI; `stream: true` gives SSE chunks ending in `data: [DONE]`)
- `POST /v1/messages` (Anthropic; `stream: true` gives its event stream)
  Both answer "Echo: <last user message>" with word counts as `usage`.
- `POST /_faults` sets the fault injection: the posted JSON is the whole setting, omitted keys take
  their defaults, unknown keys are refused with 400. `GET /_faults` returns it, `DELETE` resets it.
    latency_ms      delay before answering
    error_rate      share of requests answered with `error_status` (503 by default)
    error_status    the status of injected errors (429 carries `Retry-After: retry_after_s`)
    retry_after_s   the Retry-After of a 429
    throttle_rate   share of requests answered 429 with Retry-After (on top of error_rate)
    timeout_rate    share of requests that never answer (the client's timeout fires)
    down            every connection is reset without an answer (the client sees a connection error)
- `GET /_stats` counts requests that reached the LLM endpoints; `DELETE /_stats` resets the counts.

`FakeLlmServer` runs the same app in a background thread for tests and the local runtime.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import threading
import time
import uuid
from dataclasses import asdict, dataclass, fields

from aiohttp import web

from cloudia.llm.fake import count_tokens, echo_answer, split_tokens

DEFAULT_PORT = 8089
# A request hit by `timeout_rate` hangs this long: longer than any client timeout.
HANG_S = 3600.0
# Stopping does not wait for hung requests longer than this.
SHUTDOWN_TIMEOUT_S = 0.5


@dataclass
class Faults:
    latency_ms: int = 0
    error_rate: float = 0.0
    error_status: int = 503
    retry_after_s: float = 1.0
    throttle_rate: float = 0.0
    timeout_rate: float = 0.0
    down: bool = False


FAULT_KEYS = {f.name: f.type for f in fields(Faults)}


class FakeLlm:
    """The app's state: fault setting, counters, a seeded random source (repeatable fault patterns)."""

    def __init__(self, seed: int = 0):
        self.faults = Faults()
        self.stats = {"requests": 0, "chat_completions": 0, "messages": 0, "answered": 0, "faulted": 0}
        self._rng = random.Random(seed)

    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes([
            web.post("/v1/chat/completions", self.chat_completions),
            web.post("/v1/messages", self.messages),
            web.get("/_faults", self.get_faults),
            web.post("/_faults", self.set_faults),
            web.delete("/_faults", self.reset_faults),
            web.get("/_stats", self.get_stats),
            web.delete("/_stats", self.reset_stats),
        ])
        return app

    # -- control ------------------------------------------------------------------------------
    async def get_faults(self, _request: web.Request) -> web.Response:
        return web.json_response(asdict(self.faults))

    async def set_faults(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return web.json_response({"error": "body must be JSON"}, status=400)
        if not isinstance(body, dict):
            return web.json_response({"error": "body must be a JSON object"}, status=400)
        unknown = sorted(set(body) - set(FAULT_KEYS))
        if unknown:
            return web.json_response({"error": f"unknown fault keys: {unknown}", "known": sorted(FAULT_KEYS)},
                                     status=400)
        try:
            self.faults = Faults(**{k: _coerce(FAULT_KEYS[k], v) for k, v in body.items()})
        except (TypeError, ValueError) as error:
            return web.json_response({"error": str(error)}, status=400)
        return web.json_response(asdict(self.faults))

    async def reset_faults(self, _request: web.Request) -> web.Response:
        self.faults = Faults()
        return web.json_response(asdict(self.faults))

    async def get_stats(self, _request: web.Request) -> web.Response:
        return web.json_response(self.stats)

    async def reset_stats(self, _request: web.Request) -> web.Response:
        for key in self.stats:
            self.stats[key] = 0
        return web.json_response(self.stats)

    # -- the LLM endpoints --------------------------------------------------------------------
    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        self.stats["chat_completions"] += 1
        fault = await self._inject(request)
        if fault is not None:
            return fault
        body, model, text, prompt_tokens, completion_tokens = await _conversation(request)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        completion_id, created = f"chatcmpl-{uuid.uuid4().hex[:12]}", int(time.time())
        self.stats["answered"] += 1
        if not body.get("stream"):
            return web.json_response({
                "id": completion_id, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "stop", "logprobs": None}],
                "usage": usage,
            })
        response = await _sse(request)

        def chunk(delta: dict, finish: str | None = None, with_usage: dict | None = None, choices: bool = True):
            return {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]
                    if choices else [], "usage": with_usage}

        await _send(response, chunk({"role": "assistant", "content": ""}))
        for part in split_tokens(text):
            await _send(response, chunk({"content": part}))
        await _send(response, chunk({}, finish="stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            await _send(response, chunk({}, with_usage=usage, choices=False))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def messages(self, request: web.Request) -> web.StreamResponse:
        self.stats["messages"] += 1
        fault = await self._inject(request)
        if fault is not None:
            return fault
        body, model, text, input_tokens, output_tokens = await _conversation(request)
        message_id = f"msg_{uuid.uuid4().hex[:12]}"
        self.stats["answered"] += 1
        full = {"id": message_id, "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens}}
        if not body.get("stream"):
            return web.json_response(full)
        response = await _sse(request)
        start = dict(full, content=[], stop_reason=None, usage={"input_tokens": input_tokens, "output_tokens": 0})
        await _event(response, "message_start", {"type": "message_start", "message": start})
        await _event(response, "content_block_start",
                     {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
        for part in split_tokens(text):
            await _event(response, "content_block_delta", {"type": "content_block_delta", "index": 0,
                                                           "delta": {"type": "text_delta", "text": part}})
        await _event(response, "content_block_stop", {"type": "content_block_stop", "index": 0})
        await _event(response, "message_delta", {"type": "message_delta",
                                                 "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                                 "usage": {"output_tokens": output_tokens}})
        await _event(response, "message_stop", {"type": "message_stop"})
        await response.write_eof()
        return response

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


def _coerce(kind, value):
    kind = {"int": int, "float": float, "bool": bool}.get(kind, kind) if isinstance(kind, str) else kind
    if kind is bool and not isinstance(value, bool):
        raise ValueError("down must be true or false")
    return kind(value)


async def _conversation(request: web.Request) -> tuple[dict, str, str, int, int]:
    """The request body, its model, the echo answer and the token counts (the wire formats agree on
    `messages` and `model`)."""
    body = await request.json()
    messages = [{"role": m.get("role", ""), "content": _text(m.get("content"))} for m in body.get("messages", [])]
    text = echo_answer(messages)
    return body, body.get("model", "fake-llm"), text, sum(count_tokens(m["content"]) for m in messages), count_tokens(text)


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


async def _sse(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    return response


async def _send(response: web.StreamResponse, payload: dict) -> None:
    await response.write(f"data: {json.dumps(payload)}\n\n".encode())


async def _event(response: web.StreamResponse, name: str, payload: dict) -> None:
    await response.write(f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode())


class FakeLlmServer:
    """The fake LLM in a background thread on 127.0.0.1 (a free port unless one is given)."""

    def __init__(self, port: int = 0, seed: int = 0):
        self.port = port
        self.llm = FakeLlm(seed)
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
        self._loop = asyncio.new_event_loop()

        async def serve():
            self._runner = web.AppRunner(self.llm.app(), handle_signals=False, access_log=None,
                                        handler_cancellation=True, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", self.port)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # the free port the OS chose
            started.set()

        def run():
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(serve())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="fake-llm", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise TimeoutError("fake LLM server did not start")
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = None

    # In-process control, the same as the HTTP endpoints.
    def set_faults(self, **faults) -> None:
        unknown = set(faults) - set(FAULT_KEYS)
        if unknown:
            raise ValueError(f"unknown fault keys: {sorted(unknown)}")
        self.llm.faults = Faults(**faults)

    def reset_faults(self) -> None:
        self.llm.faults = Faults()

    def stats(self) -> dict:
        return dict(self.llm.stats)


def main(argv: list[str] | None = None, llm_class: type | None = None, description: str = "") -> None:
    """Serve `llm_class` (FakeLlm, or a subclass such as the chaos suite's recording one)."""
    llm_class = llm_class or FakeLlm
    parser = argparse.ArgumentParser(description=description or __doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(f"{llm_class.__name__} on http://{args.host}:{args.port} (OpenAI base URL /v1; faults at /_faults)",
          flush=True)
    web.run_app(llm_class(args.seed).app(), host=args.host, port=args.port, print=None,
                handler_cancellation=True, shutdown_timeout=SHUTDOWN_TIMEOUT_S)


if __name__ == "__main__":
    main()
