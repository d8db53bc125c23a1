"""End-to-end latency the system adds beyond the LLM's own (p50, p99).

    .venv/bin/python bench/e2e_latency.py [--runs 3] [--messages 60] [--clients 3] [--llm-latency-ms 200]

Real gateway, worker and fake LLM processes (`chaos.harness.System`, the worker polling SQS as deployed,
20 s long poll), the fake LLM answering after --llm-latency-ms, no faults. Each client sends a message,
waits for its `answer` event, then sends the next (the system is not saturated). For each message:
(time from sendMessage to the answer event) - (the LLM's latency). Prints p50 and p99 per run, then
their median and spread over the runs.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from chaos.accounting import percentiles_ms  # noqa: E402
from chaos.clients import ChatClient, Ledger  # noqa: E402
from chaos.harness import System  # noqa: E402
from chaos.scenarios import LOAD_LIMITS  # noqa: E402
from tests.support.servers import MotoServer  # noqa: E402

ANSWER_TIMEOUT_S = 30.0


async def one_run(endpoint: str, log_dir: Path, messages: int, clients: int, llm_latency_ms: int) -> list[float]:
    # The per-user rate limit (20 a minute) would refuse a client's 20th message within the minute.
    env = {"WORKER_POLL_WAIT_S": "20", **LOAD_LIMITS}
    # The LLM's own time must be known to subtract it: a model that takes `llm_latency_ms` to its
    # first token, then writes its (short) answer at once.
    known_llm = {"first_token_ms": llm_latency_ms, "tokens_per_s": 0, "answer_tokens_min": 0, "answer_tokens_max": 0}
    with System(log_dir, env_overrides=env, aws_endpoint=endpoint, llm_profile=known_llm) as system:
        ledger = Ledger()
        users = [ChatClient(system.ws_url, lambda u=f"lat-{i}": system.token(u), f"lat-{i}", ledger)
                 for i in range(clients)]
        await asyncio.gather(*(c.connect() for c in users))
        # One message each first: connections, caches and the worker's HTTP pool warm, not measured.
        warm = await asyncio.gather(*(c.send_message(f"warm {c.user}") for c in users))
        await wait_answered(warm)
        added: list[float] = []

        async def chat(client: ChatClient, count: int) -> None:
            for n in range(count):
                sent = await client.send_message(f"latency {client.user} #{n} {time.time()}")
                await wait_answered([sent])
                if sent.answered_at:
                    added.append(sent.answered_at - sent.sent_at - llm_latency_ms / 1000)

        await asyncio.gather(*(chat(c, messages // clients) for c in users))
        await asyncio.gather(*(c.close() for c in users))
        return added


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
    print(f"end-to-end latency added beyond the LLM's {args.llm_latency_ms} ms: {args.messages} messages from "
          f"{args.clients} clients (one at a time each), {args.runs} runs")
    moto = MotoServer().start()
    p50s, p99s = [], []
    try:
        for run in range(1, args.runs + 1):
            added = asyncio.run(one_run(moto.endpoint, log_dir / str(run), args.messages, args.clients,
                                        args.llm_latency_ms))
            figures = percentiles_ms(added)
            p50s.append(figures["p50"])
            p99s.append(figures["p99"])
            print(f"  run {run}: added p50 {figures['p50']:.1f} ms, p99 {figures['p99']:.1f} ms, "
                  f"max {figures['max']:.1f} ms over {figures['n']} answers", flush=True)
    finally:
        moto.stop()
    print(f"added latency p50: median {statistics.median(p50s):.1f} ms, spread {min(p50s):.1f}-{max(p50s):.1f} ms")
    print(f"added latency p99: median {statistics.median(p99s):.1f} ms, spread {min(p99s):.1f}-{max(p99s):.1f} ms")


if __name__ == "__main__":
    main()
