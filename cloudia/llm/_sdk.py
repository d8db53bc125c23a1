"""What the OpenAI and Anthropic providers share: an official async SDK client with its retries off
(the queue's redelivery with backoff is the one retry layer), every call streamed within the deadline
model (`cloudia.llm.timing`), and every failure classified as transient or permanent.

Every call streams, whether or not a client is connected to see the tokens: only a stream shows the
first token and the stalls. A non-streamed request is silent until the whole answer is written, so its
only bound would be the total one, and a hung provider would hold the job that long.

The SDK sends the request (auth, base URL, timeouts, status errors with their headers) through a
transport that reads a streamed body in paced pieces (`cloudia.llm._http`); the body is read as raw
server-sent events (`cloudia.llm._sse`), not as the SDK's typed objects."""
from __future__ import annotations

import dataclasses
from types import ModuleType

from cloudia.llm import Completion, OnFinish, OnToken, api_key
from cloudia.llm._errors import classify, httpx
from cloudia.llm._http import paced_http_client
from cloudia.llm.timing import CallBounds, Stopwatch
from cloudia.settings import Settings

# The HTTP client's own read timeout is a backstop a little past the stopwatch's bounds, which fire
# first and say which bound it was.
HTTP_READ_SLACK_S = 1.0
# A streamed body is read as often as tokens are pushed (`token_push_interval_ms`), and at least this
# often (seconds). Each read costs a wake-up of the event loop and a walk through the HTTP layers,
# whether it brings one token or ten, so reads are the main cost of a long answer after its tokens;
# a read more frequent than the pushes would only hand tokens to the forwarder's batch sooner. The
# interval bounds how late a token, and the end of an answer, are read (the first piece, with the
# headers, is read as it comes), so it also stays within half the first-token and stall bounds: a
# healthy stream is never cut for a token that came but was not read yet.
STREAM_READ_INTERVAL_MAX_S = 1.0


class SdkProvider:
    name: str
    sdk: ModuleType  # the SDK module, whose exception classes `classify` maps
    default_model: str

    def __init__(self, settings: Settings):
        self._bounds = CallBounds.of(settings.resilience)
        self._model = settings.llm_model or self.default_model
        b = self._bounds
        self._http_timeout = httpx.Timeout(connect=b.connect_s,
                                           read=max(b.first_token_s, b.stall_s) + HTTP_READ_SLACK_S,
                                           write=b.connect_s, pool=b.connect_s)
        self.read_interval_s = min(STREAM_READ_INTERVAL_MAX_S, settings.resilience.token_push_interval_ms / 1000,
                                   b.first_token_s / 2, b.stall_s / 2)
        self._client = self.make_client(api_key=api_key(settings), base_url=settings.llm_base_url or None,
                                        timeout=self._http_timeout, max_retries=0,
                                        http_client=paced_http_client(self.read_interval_s))

    def make_client(self, **options):
        raise NotImplementedError

    async def aclose(self) -> None:
        await self._client.close()

    async def complete(self, messages: list[dict[str, str]], on_token: OnToken | None = None,
                       on_finish: OnFinish | None = None) -> Completion:
        watch: Stopwatch | None = None
        try:
            async with Stopwatch(self._bounds) as watch:
                completion = await self._stream(messages, watch, on_token, on_finish)
            return dataclasses.replace(completion, timing=watch.timing)
        except Exception as error:  # noqa: BLE001 - every failure is classified, none escapes raw
            failure = classify(error, self.sdk)
            failure.timing = watch.timing if watch is not None else None
            raise failure from error

    def stream_error(self, error: object, request) -> Exception:
        """The SDK's `APIError` for an error event inside a stream (after a 200: retried later)."""
        message = error.get("message") if isinstance(error, dict) else None
        if not isinstance(message, str) or not message:
            message = "an error occurred during streaming"
        return self.sdk.APIError(message, request, body=error)

    async def _stream(self, messages, watch: Stopwatch, on_token: OnToken | None,
                      on_finish: OnFinish | None) -> Completion:
        """Stream one answer: `watch.token()` on every text delta, `watch.set_tokens` with the
        provider's usage count, `on_token(delta)` and `on_finish(text)` when given."""
        raise NotImplementedError
