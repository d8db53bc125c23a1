"""Map the official SDKs' exceptions (openai and anthropic share their shapes) to our classes."""
from __future__ import annotations

import asyncio

from cloudia.llm import LlmError, PermanentLlmError, TransientLlmError, is_transient_status, retry_after_s
from cloudia.llm.timing import CallTimeout

try:  # the SDKs' HTTP layer; a transport error can surface while a stream is being read
    import httpx2 as httpx
except ImportError:  # pragma: no cover - older SDKs use httpx
    import httpx  # type: ignore[no-redef]


def classify(error: BaseException, sdk) -> LlmError:
    if isinstance(error, LlmError):
        return error
    if isinstance(error, CallTimeout):  # a bound of the deadline model: first token, stall, deadline
        return TransientLlmError(str(error), error.kind)
    if isinstance(error, (sdk.APITimeoutError, httpx.TimeoutException, asyncio.TimeoutError, TimeoutError)):
        return TransientLlmError(f"LLM call timed out: {error}", "timeout")
    if isinstance(error, sdk.APIConnectionError) or isinstance(error, (httpx.TransportError, ConnectionError)):
        return TransientLlmError(f"LLM unreachable: {error}", "connection")
    if isinstance(error, sdk.APIStatusError):
        status = error.status_code
        if is_transient_status(status):
            kind = "throttled" if status == 429 else f"status_{status}"
            return TransientLlmError(f"LLM answered {status}", kind, retry_after_s(error.response.headers))
        return PermanentLlmError(f"LLM refused the request ({status}): {error.message}", f"status_{status}")
    if isinstance(error, sdk.APIError):  # e.g. an error event inside a stream
        return TransientLlmError(f"LLM error: {error}", "stream_error")
    # Unknown failures are retried (bounded by the queue's receive limit) rather than dead-lettered
    # at once: a bug in a dependency must not turn into lost answers.
    return TransientLlmError(f"unexpected LLM failure: {error!r}", "unexpected")
