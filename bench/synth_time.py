"""How long `npx cdk synth` takes, for each deploy target.

    .venv/bin/python bench/synth_time.py [--runs 3] [--target aws --target local] [--stage dev] [--no-bundling]

Each run is a full synth into a fresh output folder, as `make synth` does on a clean checkout:
`python app.py` (jsii starting Node), every construct, cdk-nag, and the Lambda asset bundled with
pip (from pip's cache when warm). `--no-bundling` times the same app without the asset build: it
synthesizes the whole app but selects only the state stack (`--exclusively`), and the CLI bundles
the assets of selected stacks only (the CLI refuses `-c aws:cdk:bundling-stacks=[]` from a user).
Prints per target the median and the spread (min-max) over the runs.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stacks.config import TARGETS, AppConfig

ROOT = Path(__file__).resolve().parents[1]
SYNTH_TIMEOUT_S = 600

CDK_ENV = {
    "CDK_DISABLE_VERSION_CHECK": "1",
    "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
}


def synth_command(target: str, stage: str, out_dir: Path, bundling: bool) -> list[str]:
    command = ["npx", "--no-install", "cdk", "synth", "--quiet", "--no-notices", "-c", f"target={target}",
               "-c", f"stage={stage}", "-o", str(out_dir)]
    if not bundling:
        # The state stack (queues and tables) has no asset to bundle.
        command += [AppConfig.from_context({"target": target, "stage": stage}).stack_name("state"), "--exclusively"]
    return command


def time_synth(target: str, stage: str, bundling: bool) -> float:
    out_dir = Path(tempfile.mkdtemp(prefix=f"cloudia-synth-{target}-"))
    try:
        started = time.perf_counter()
        result = subprocess.run(synth_command(target, stage, out_dir, bundling), cwd=ROOT,
                                env={**os.environ, **CDK_ENV}, capture_output=True, text=True,
                                timeout=SYNTH_TIMEOUT_S)
        elapsed_s = time.perf_counter() - started
        if result.returncode != 0:
            raise RuntimeError(f"cdk synth -c target={target} failed:\n{result.stderr.strip()[-2000:]}")
        return elapsed_s
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="synths per target (default: %(default)s)")
    parser.add_argument("--target", action="append", choices=TARGETS, help="only this target (repeatable)")
    parser.add_argument("--stage", default="dev", help="stage context (default: %(default)s)")
    parser.add_argument("--no-bundling", action="store_true", help="skip the Lambda asset build")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if not (ROOT / "node_modules" / ".bin" / "cdk").exists():
        print("the CDK CLI is not installed here: run `make deps` first", file=sys.stderr)
        return 2

    bundling = "without asset bundling" if args.no_bundling else "with asset bundling"
    print(f"npx cdk synth, stage {args.stage}, {bundling}, {args.runs} runs each; median (min-max)")
    failed = False
    for target in args.target or TARGETS:
        try:
            samples = [time_synth(target, args.stage, not args.no_bundling) for _ in range(args.runs)]
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            failed = True  # say so and measure the other target anyway
            print(f"target={target:<6} FAILED: {error}", file=sys.stderr)
            continue
        print(f"target={target:<6} {statistics.median(samples):6.1f} s  ({min(samples):.1f}-{max(samples):.1f})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
