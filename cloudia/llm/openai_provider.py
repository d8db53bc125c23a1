"""OpenAI Chat Completions through the official async SDK (also any OpenAI-compatible server, such
as the local fake LLM: only the base URL differs).

The request goes through the SDK's client (its `post`, with the body written here); the streamed
body is read as raw server-sent events (`cloudia.llm._sse`) and each chunk's JSON is read for the
few fields used (the delta's text, the finish reason, usage, the model), without the SDK's typed
object per chunk."""
from __future__ import annotations

import openai

from cloudia.llm import Completion, OnFinish, OnToken
from cloudia.llm._errors import httpx
from cloudia.llm._sdk import SdkProvider
from cloudia.llm._sse import parse_json, read_events
from cloudia.llm.timing import Stopwatch

DEFAULT_MODEL = "gpt-4o-mini"
# The stream's last event; the body may go on only to end the HTTP response.
DONE = b"[DONE]"


class OpenAiProvider(SdkProvider):
    name = "openai"
    sdk = openai
    default_model = DEFAULT_MODEL

    def make_client(self, **options):
        return openai.AsyncOpenAI(**options)

    async def _stream(self, messages, watch: Stopwatch, on_token: OnToken | None,
                      on_finish: OnFinish | None) -> Completion:
        parts: list[str] = []
        input_tokens = output_tokens = 0
        model = self._model
        finished = False
        # `max_completion_tokens` is the current name (`max_tokens` is refused by reasoning models).
        # The client's own `post`: the typed `chat.completions.create` walks every message through
        # its TypedDict transform (about 8 ms for 20 messages) to produce this very body.
        http = await self._client.post(
            "/chat/completions", cast_to=httpx.Response, stream=True, options={"timeout": self._http_timeout},
            body={"model": self._model, "messages": messages, "max_completion_tokens": self._bounds.max_tokens,
                  "stream": True, "stream_options": {"include_usage": True}})
        try:
            # Read to the body's end, past [DONE]: an HTTP/1.1 connection is reused only then.
            async for events in read_events(http):
                deltas: list[str] = []
                usage = None
                finishing = False
                failure = None
                for chunk in parse_json([data for _, data in events if data != DONE]):
                    if chunk.get("error"):  # raised once the tokens before it are handed over
                        failure = self.stream_error(chunk["error"], http.request)
                        break
                    model = chunk.get("model") or model
                    usage = chunk.get("usage") or usage
                    for choice in chunk.get("choices") or ():
                        delta = (choice.get("delta") or {}).get("content")
                        if delta:
                            deltas.append(delta)
                        finishing = finishing or bool(choice.get("finish_reason"))
                if deltas:
                    watch.token(len(deltas))
                    parts.extend(deltas)
                    if on_token is not None:
                        for delta in deltas:
                            await on_token(delta)
                if failure is not None:
                    raise failure
                if usage:
                    input_tokens, output_tokens = usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0
                    watch.set_tokens(output_tokens)
                if finishing and not finished:  # usage and [DONE] follow
                    finished = True
                    if on_finish is not None:
                        await on_finish("".join(parts))
        finally:
            await http.aclose()
        return Completion("".join(parts), input_tokens, output_tokens, model)
