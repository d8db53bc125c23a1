"""`python -m chaos [--short|--long] [--scenario N]`: run the chaos scenarios, print a table for each,
exit non-zero if any message was lost or duplicated (or a scenario's own check failed).

Everything binds to 127.0.0.1 on free ports; each scenario stands up its own emulator-backed queue,
tables, Redis, fake LLM, gateway and worker and stops them when done. Logs go to --log-dir.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
import sys
import tempfile
import time
from pathlib import Path

from chaos.accounting import render
from chaos.scenarios import LONG, SCENARIOS, SHORT
from tests.support.servers import MotoServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos",
                                     description="Run the chaos scenarios; a table per scenario.")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--short", dest="profile", action="store_const", const=SHORT, help="the short form (default)")
    size.add_argument("--long", dest="profile", action="store_const", const=LONG, help="the long form (make chaos)")
    parser.add_argument("--scenario", type=int, action="append", choices=sorted(SCENARIOS),
                        help="run only this scenario (repeatable); default all")
    parser.add_argument("--log-dir", type=Path, help="where the processes' logs go (default: a temporary folder)")
    parser.add_argument("--timeline", type=Path, help="scenario 1 writes its answers' timeline (JSON) here")
    parser.add_argument("--messages", type=int, help="scenario 1's message count (default: the form's)")
    parser.add_argument("--clients", type=int, help="scenario 1's client count (default: the form's)")
    args = parser.parse_args(argv)
    profile = args.profile or SHORT
    if args.messages or args.clients:
        profile = dataclasses.replace(profile, load_messages=args.messages or profile.load_messages,
                                      load_clients=args.clients or profile.load_clients)
    # SIGTERM stops like Ctrl-C: every scenario stops the processes it started.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="cloudia-chaos-"))
    print(f"chaos suite, {profile.name} form ({profile.load_messages} messages in scenario 1); logs in {log_dir}",
          flush=True)
    moto = MotoServer().start()
    emulators = {"emulator (moto)": moto.pid}
    failed = []
    try:
        for number in args.scenario or sorted(SCENARIOS):
            started = time.monotonic()
            print(f"\n-- scenario {number} ({profile.name}) ...", flush=True)
            kwargs = {"emulator_pids": emulators, **({"timeline_path": args.timeline} if args.timeline else {})} \
                if number == 1 else {}
            outcome = asyncio.run(SCENARIOS[number](profile, log_dir, aws_endpoint=moto.endpoint, **kwargs))
            outcome.figures.pop("_raw", None)
            print(render(outcome), flush=True)
            print(f"  (took {time.monotonic() - started:.0f} s)", flush=True)
            if not outcome.ok:
                failed.append(number)
    finally:
        moto.stop()
    print(f"\nchaos suite: {'FAILED scenarios ' + str(failed) if failed else 'every scenario passed'}"
          " (lost = 0 and duplicated = 0 required)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
