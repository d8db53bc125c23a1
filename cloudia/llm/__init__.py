"""LLM providers behind one small interface, and the failure classes the worker acts on.

Every provider turns its SDK's exceptions into `TransientLlmError` (retry later: timeout, connection
error, 408/409/429, 5xx; carries `Retry-After`) or `PermanentLlmError` (a request retrying cannot fix).
SDK retries are off (`max_retries=0`): the worker owns retries, through the queue. Every call streams
from the provider within the deadline model of `cloudia.llm.timing`, and reports its `CallTiming`
(on the `Completion`, or on the `LlmError`) so the breaker can tell a slow provider from a long answer.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Awaitable, Callable, Protocol

from cloudia import aws
from cloudia.llm.timing import CallTiming
from cloudia.settings import Settings

# Status codes worth retrying besides 5xx: request timeout, conflict, throttling.
TRANSIENT_STATUS_CODES = frozenset({408, 409, 429})

OnToken = Callable[[str], Awaitable[None]]
# Called with the whole text the moment the provider says the answer is complete (before the stream's
# last frames): from then on the answer is paid for.
OnFinish = Callable[[str], Awaitable[None]]


class LlmError(Exception):
    """A provider call failed; `kind` is a stable label for logs and metrics."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind
        self.timing: CallTiming | None = None  # set by the provider that made the call


class TransientLlmError(LlmError):
    def __init__(self, message: str, kind: str, retry_after_s: float | None = None):
        super().__init__(message, kind)
        self.retry_after_s = retry_after_s


class PermanentLlmError(LlmError):
    pass


@dataclass(frozen=True)
class Completion:
    text: str
    input_tokens: int
    output_tokens: int
    model: str = ""
    timing: CallTiming | None = None


class LlmProvider(Protocol):
    name: str

    async def complete(self, messages: list[dict[str, str]], on_token: OnToken | None = None,
                       on_finish: OnFinish | None = None) -> Completion:
        """`messages`: [{"role": "user" | "assistant", "content": ...}], oldest first. Each text delta
        is passed to `on_token` (when given) as it arrives, the whole text to `on_finish` as soon as the
        provider marks the answer complete; returns the whole answer."""
        ...

    async def aclose(self) -> None:
        """Release the HTTP client (on the event loop that used it)."""
        ...


def is_transient_status(status: int) -> bool:
    return status >= 500 or status in TRANSIENT_STATUS_CODES


def retry_after_s(headers) -> float | None:
    """Seconds from a `Retry-After` (or `retry-after-ms`) header; None if absent or a date."""
    if headers is None:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return float(raw_ms) / 1000
        except ValueError:
            pass
    raw = headers.get("retry-after")
    try:
        return float(raw) if raw else None
    except ValueError:
        return None


def api_key(settings: Settings) -> str:
    # The local fake LLM takes any key; the SDKs refuse to start without one.
    return aws.given_or_secret(settings.llm_api_key, settings.llm_api_key_secret_arn) or "not-needed-locally"


def build_provider(name: str, settings: Settings) -> LlmProvider:
    """The provider called `name` (`openai` | `anthropic` | `fake`), configured from `settings`."""
    if name == "openai":
        from cloudia.llm.openai_provider import OpenAiProvider
        return OpenAiProvider(settings)
    if name == "anthropic":
        from cloudia.llm.anthropic_provider import AnthropicProvider
        return AnthropicProvider(settings)
    if name == "fake":
        from cloudia.llm.fake import FakeProvider
        return FakeProvider(settings=settings)
    raise ValueError(f"unknown LLM provider {name!r} (expected openai, anthropic or fake)")


def build_fallback_provider(settings: Settings) -> LlmProvider | None:
    """The fallback provider (`LLM_FALLBACK_PROVIDER` with its `LLM_FALLBACK_*` endpoint, model and
    key), or None if none is configured."""
    if not settings.llm_fallback_provider:
        return None
    return build_provider(settings.llm_fallback_provider, dataclasses.replace(
        settings, llm_base_url=settings.llm_fallback_base_url, llm_model=settings.llm_fallback_model,
        llm_api_key=settings.llm_fallback_api_key,
        llm_api_key_secret_arn=settings.llm_fallback_api_key_secret_arn))
