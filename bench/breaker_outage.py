"""Fail fast with the circuit breaker, against the same run without it, during an LLM outage.

    .venv/bin/python bench/breaker_outage.py [--runs 3] [--outage-s 15] [--clients 16] [--send-interval-s 3.2]

Runs chaos scenario 2 (`chaos.scenarios.llm_outage`: real gateway, worker and fake LLM processes, the
LLM down for --outage-s, every connection reset, then back) twice per run: with the breaker (the chaos
suite's settings: 5 calls minimum, 10 s window, 2 s open) and with it disabled (BREAKER_MIN_CALLS so
large it never opens). Measures, per run:
- the time from `sendMessage` to the first `error` event about the message: with the breaker, the
  circuit error the sender gets at once; without, the error the user gets when the job has used up its
  5 receives (backoff base 0.5 s, the chaos settings, so the figure scales with the backoff);
- the LLM calls made during the outage, and per message sent during it.
Prints the median and spread (min-max) over the runs.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import tempfile
from pathlib import Path
from typing import Any

from chaos.scenarios import SHORT, llm_outage
from tests.support.servers import MotoServer

BREAKER_DISABLED = {"BREAKER_MIN_CALLS": "1000000000"}


def spread(values: list[float], unit: str, digits: int = 1) -> str:
    if not values:
        return "n/a"
    return (f"median {statistics.median(values):.{digits}f} {unit}, spread {min(values):.{digits}f}-"
            f"{max(values):.{digits}f} {unit}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--outage-s", type=float, default=15.0)
    parser.add_argument("--clients", type=int, default=16)
    # Within the default rate limit (20 a minute per user): refusals at the door would blur the count.
    parser.add_argument("--send-interval-s", type=float, default=3.2)
    args = parser.parse_args(argv)
    profile = dataclasses.replace(SHORT, outage_s=args.outage_s, outage_clients=args.clients,
                                  outage_send_interval_s=args.send_interval_s)
    log_dir = Path(tempfile.mkdtemp(prefix="cloudia-bench-breaker-"))
    print(f"breaker vs no breaker: LLM down {args.outage_s:g} s, {args.clients} clients each sending every "
          f"{args.send_interval_s:g} s, {args.runs} runs each (logs {log_dir})")
    moto = MotoServer().start()
    results: dict[str, list[dict[str, Any]]] = {"with breaker": [], "without breaker": []}
    try:
        for run in range(1, args.runs + 1):
            for mode, overrides in (("with breaker", {}), ("without breaker", BREAKER_DISABLED)):
                outcome = asyncio.run(llm_outage(profile, log_dir / f"{run}-{mode.replace(' ', '-')}",
                                                 aws_endpoint=moto.endpoint, env_overrides=overrides))
                raw = outcome.figures["_raw"]
                first_error = statistics.median(raw["first_error_s"]) * 1000 if raw["first_error_s"] else None
                result = {"first_error_ms": first_error, "told": len(raw["first_error_s"]),
                          "calls": raw["calls_during"],
                          "sent": raw["during"], "lost": outcome.lost, "dlq": outcome.dlq_told,
                          "answered": outcome.answered}
                results[mode].append(result)
                told = (f"median {first_error:8.1f} ms ({result['told']} of {result['sent']} told)" if first_error
                        is not None else "none (no error event: the retries outlasted the outage)")
                print(f"  run {run} {mode:15}: send -> first error event {told}; "
                      f"LLM calls in the outage {result['calls']:4d} for {result['sent']} messages "
                      f"({result['calls'] / max(1, result['sent']):.2f}/message); answered {result['answered']}, "
                      f"in DLQ (told) {result['dlq']}, lost {result['lost']}", flush=True)
    finally:
        moto.stop()
    print("summary (medians over runs of each run's median):")
    for mode, rows in results.items():
        first_errors = [r['first_error_ms'] for r in rows if r['first_error_ms'] is not None]
        print(f"  {mode:15}  send -> first error: {spread(first_errors, 'ms')}; "
              f"LLM calls during a {args.outage_s:g} s outage: {spread([r['calls'] for r in rows], 'calls', 0)} "
              f"({spread([r['calls'] / max(1, r['sent']) for r in rows], 'per message', 2)})")


if __name__ == "__main__":
    main()
