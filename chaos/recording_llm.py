"""The fake LLM with a ledger of what it served: completions per prompt, and a poison marker.

    python -m chaos.recording_llm --port 8089

The same app as `local_runtime.fake_llm` (same endpoints, faults, profiles and `/_stats`; the
`brisk` profile unless `--profile` says otherwise), plus:
- `GET /_served`: `{"completions": {prompt: n}, "attempts": {prompt: [epoch_s, ...]}}`, where `prompt`
  is the last user message of a request, `completions` counts the answers fully sent (the calls a
  real provider would charge for) and `attempts` the arrival times of every request for that prompt.
  The chaos suite makes each job's text unique, so a count above 1 is a job charged twice.
- A request whose last user message contains `POISON_MARKER` is always answered 503: a message that
  fails on every attempt, whatever the fault setting.
"""
from __future__ import annotations

import time
from collections import Counter, defaultdict

from aiohttp import web

from local_runtime import fake_llm
from local_runtime.fake_llm import FakeLlm, _error_response, _text

POISON_MARKER = "[poison]"
POISON_STATUS = 503


def last_user_message(body: dict) -> str:
    messages = body.get("messages") or []
    return next((_text(m.get("content")) for m in reversed(messages)
                 if isinstance(m, dict) and m.get("role") == "user"), "")


class RecordingFakeLlm(FakeLlm):
    def __init__(self, seed: int = 0, **options):
        super().__init__(seed, **options)
        self.completions: Counter[str] = Counter()
        self.attempts: dict[str, list[float]] = defaultdict(list)
        self.completed_at: dict[str, list[float]] = defaultdict(list)

    def app(self) -> web.Application:
        app = super().app()
        app.router.add_get("/_served", self.get_served)
        app.router.add_delete("/_served", self.reset_served)
        return app

    async def get_served(self, _request: web.Request) -> web.Response:
        return web.json_response({"completions": self.completions, "attempts": self.attempts,
                                  "completed_at": self.completed_at})

    async def reset_served(self, _request: web.Request) -> web.Response:
        self.completions.clear()
        self.attempts.clear()
        self.completed_at.clear()
        return web.json_response({})

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        try:
            prompt = last_user_message(await request.json())
        except ValueError:
            return await super().chat_completions(request)
        self.attempts[prompt].append(time.time())
        if POISON_MARKER in prompt:
            self.stats["requests"] += 1
            self.stats["chat_completions"] += 1
            self.stats["faulted"] += 1
            return _error_response(POISON_STATUS, 0)
        # A stream the client drops half way raises here and is not counted: only whole answers are
        # (the base class returns once the last token of a paced stream is written).
        response = await super().chat_completions(request)
        if response.status == 200:
            self.completions[prompt] += 1
            self.completed_at[prompt].append(time.time())
        return response


def main(argv: list[str] | None = None) -> None:
    # The chaos suite's clock is short (its LLM bounds are seconds): answers on the `brisk` profile
    # unless `--profile` or $FAKE_LLM_PROFILE says otherwise.
    fake_llm.main(argv, RecordingFakeLlm, __doc__.splitlines()[0], default_profile="brisk")

if __name__ == "__main__":
    main()
