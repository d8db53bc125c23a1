"""End-to-end latency the system adds beyond the LLM's own (p50, p99): to the answer, and to the first token.

    .venv/bin/python bench/e2e_latency.py [--runs 3] [--messages 60] [--clients 3] [--llm-latency-ms 200]

Real gateway, worker and fake LLM processes (`chaos.harness.System`, the worker polling SQS as deployed,
20 s long poll), no faults. The fake LLM's profile is set so that its own time is known: its first token
is due --llm-latency-ms after it receives the request (`first_token_ms`; the fake's `Pace` clock starts
at the request), and the rest of its short answer (the echo) comes at the same moment
(`tokens_per_s` 0, no filler). Each client sends a message, waits for its `answer` event, then sends
the next (the system is not saturated). For each message:
- added to the answer: (sendMessage -> the `answer` event at the client) - the LLM's latency;
- added to the first token: (sendMessage -> the job's first `token` event at the client) - the LLM's
  first-token latency (the same --llm-latency-ms): the gateway and the sendMessage handler, SQS to the
  worker's long poll, the worker's reads and its `calling` mark before the call, the call's own HTTP
  round trip, and the first push through `@connections` (the goal: p50 <= 30 ms, p99 <= 100 ms).
Prints p50 and p99 of each per run, then their median and spread over the runs.

What bounds the figures: the emulator (moto's CPU for each DynamoDB and SQS call, on the same 2 cores
as every process here) and this machine, more than our code; the time stamps are the client's.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from chaos.accounting import percentiles_ms
from chaos.clients import ChatClient, Ledger
from chaos.harness import System
from chaos.scenarios import LOAD_LIMITS
from tests.support.servers import MotoServer

ANSWER_TIMEOUT_S = 30.0
# The goal for the time the system adds before the first token (just printed beside the figures).
FIRST_TOKEN_GOAL_MS = {"p50": 30, "p99": 100}


class _Tap:
    """The client's WebSocket, with each frame shown to `on_frame` as it arrives."""

    def __init__(self, ws, on_frame):
        self._ws = ws
        self._on_frame = on_frame

    def __aiter__(self):
        return self._frames()

    async def _frames(self):
        async for raw in self._ws:
            self._on_frame(raw)
            yield raw


class TimedClient(ChatClient):
    """A chat client that also notes when each job's first `token` event arrives (the ledger files
    answers and errors only)."""

    def __init__(self, *args, first_tokens: dict[str, float], **kwargs):
        super().__init__(*args, **kwargs)
        self._first_tokens = first_tokens

    async def _read(self, ws, replies: asyncio.Queue) -> None:
        await super()._read(_Tap(ws, self._saw), replies)

    def _saw(self, raw) -> None:
        if '"token"' not in (raw if isinstance(raw, str) else raw.decode(errors="replace")):
            return
        try:
            frame = json.loads(raw)
        except ValueError:
            return
        if isinstance(frame, dict) and frame.get("event") == "token" and frame.get("jobId"):
            self._first_tokens.setdefault(frame["jobId"], time.time())


async def one_run(endpoint: str, log_dir: Path, messages: int, clients: int,
                  llm_latency_ms: int) -> tuple[list[float], list[float], int]:
    """(added to the answer, added to the first token, answers without a token event), in seconds."""
    # The per-user rate limit (20 a minute) would refuse a client's 20th message within the minute.
    env = {"WORKER_POLL_WAIT_S": "20", **LOAD_LIMITS}
    # The LLM's own time must be known to subtract it: a model that takes `llm_latency_ms` to its
    # first token, then writes its (short) answer at once.
    known_llm = {"first_token_ms": llm_latency_ms, "tokens_per_s": 0, "answer_tokens_min": 0, "answer_tokens_max": 0}
    with System(log_dir, env_overrides=env, aws_endpoint=endpoint, llm_profile=known_llm) as system:
        ledger = Ledger()
        first_tokens: dict[str, float] = {}
        users = [TimedClient(system.ws_url, lambda u=f"lat-{i}": system.token(u), f"lat-{i}", ledger,
                             first_tokens=first_tokens)
                 for i in range(clients)]
        await asyncio.gather(*(c.connect() for c in users))
        # One message each first: connections, caches and the worker's HTTP pool warm, not measured.
        warm = await asyncio.gather(*(c.send_message(f"warm {c.user}") for c in users))
        await wait_answered(warm)
        added: list[float] = []
        added_first: list[float] = []
        tokenless = 0

        async def chat(client: ChatClient, count: int) -> None:
            nonlocal tokenless
            for n in range(count):
                sent = await client.send_message(f"latency {client.user} #{n} {time.time()}")
                await wait_answered([sent])
                if sent.answered_at:
                    added.append(sent.answered_at - sent.sent_at - llm_latency_ms / 1000)
                    first = first_tokens.get(sent.job_id) if sent.job_id is not None else None
                    if first is None:
                        tokenless += 1
                    else:
                        added_first.append(first - sent.sent_at - llm_latency_ms / 1000)

        await asyncio.gather(*(chat(c, messages // clients) for c in users))
        await asyncio.gather(*(c.close() for c in users))
        return added, added_first, tokenless


async def wait_answered(sent: list) -> None:
    deadline = time.monotonic() + ANSWER_TIMEOUT_S
    while any(not s.answers for s in sent) and time.monotonic() < deadline:
        await asyncio.sleep(0.005)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--messages", type=int, default=60)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--llm-latency-ms", type=int, default=200)
    args = parser.parse_args(argv)
    log_dir = Path(tempfile.mkdtemp(prefix="cloudia-bench-latency-"))
    print(f"end-to-end latency added beyond the LLM's {args.llm_latency_ms} ms (its first token and its whole "
          f"answer, due together): {args.messages} messages from {args.clients} clients (one at a time each), "
          f"{args.runs} runs")
    moto = MotoServer().start()
    p50s, p99s, first_p50s, first_p99s = [], [], [], []
    try:
        for run in range(1, args.runs + 1):
            added, added_first, tokenless = asyncio.run(one_run(moto.endpoint, log_dir / str(run), args.messages,
                                                                args.clients, args.llm_latency_ms))
            figures = percentiles_ms(added)
            p50s.append(figures["p50"])
            p99s.append(figures["p99"])
            print(f"  run {run}: added p50 {figures['p50']:.1f} ms, p99 {figures['p99']:.1f} ms, "
                  f"max {figures['max']:.1f} ms over {figures['n']} answers", flush=True)
            first = percentiles_ms(added_first)
            if first:
                first_p50s.append(first["p50"])
                first_p99s.append(first["p99"])
                print(f"         to the first token: added p50 {first['p50']:.1f} ms, p99 {first['p99']:.1f} ms, "
                      f"max {first['max']:.1f} ms over {first['n']} answers"
                      + (f" ({tokenless} answers came without a token event)" if tokenless else ""), flush=True)
            else:
                print(f"         to the first token: no token event came ({tokenless} answers)", flush=True)
    finally:
        moto.stop()
    print(f"added latency p50: median {statistics.median(p50s):.1f} ms, spread {min(p50s):.1f}-{max(p50s):.1f} ms")
    print(f"added latency p99: median {statistics.median(p99s):.1f} ms, spread {min(p99s):.1f}-{max(p99s):.1f} ms")
    for name, values in (("p50", first_p50s), ("p99", first_p99s)):
        if values:
            print(f"added time to first token {name}: median {statistics.median(values):.1f} ms, spread "
                  f"{min(values):.1f}-{max(values):.1f} ms (goal <= {FIRST_TOKEN_GOAL_MS[name]} ms)")


if __name__ == "__main__":
    main()
