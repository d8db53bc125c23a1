"""One plot of latency and throughput under the chaos load: docs/chaos-load.png.

    .venv/bin/python bench/chaos_load_plot.py [--timeline FILE] [--long] [--out FILE]

Without --timeline it runs chaos scenario 1 (short form, or --long: 10,000 messages) with
`python -m chaos --scenario 1 --timeline ...` and plots that run: answers per second, and the p50/p99
send-to-answer latency of the answers in each time bucket, with the worker SIGKILLs and the Redis
restart marked. With --timeline it plots a timeline an earlier run wrote. The PNG goes to --out (by
default a temporary file, so `make bench` does not replace docs/chaos-load.png with a short run).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# About this many time buckets over the run, none shorter than a second.
BUCKETS = 60


def plot(timeline: dict, out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    started = timeline["started"]
    answers = sorted((answered - started, answered - sent) for sent, answered in timeline["answers"])
    end = answers[-1][0] if answers else 1.0
    bucket_s = max(1.0, round(end / BUCKETS))
    buckets = int(end // bucket_s) + 1
    per_bucket: list[list[float]] = [[] for _ in range(buckets)]
    for at, latency in answers:
        per_bucket[int(at // bucket_s)].append(latency)
    x = [(i + 0.5) * bucket_s for i in range(buckets)]
    throughput = [len(b) / bucket_s for b in per_bucket]

    def quantile(values: list[float], q: int) -> float:
        if len(values) < 2:
            return values[0] if values else float("nan")
        return statistics.quantiles(values, n=100, method="inclusive")[q - 1]

    p50 = [quantile(b, 50) for b in per_bucket]
    p99 = [quantile(b, 99) for b in per_bucket]

    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(10, 6.5))
    top.plot(x, throughput, color="tab:blue")
    top.set_ylabel("answers / s")
    top.set_title(title)
    bottom.plot(x, p50, label="p50", color="tab:green")
    bottom.plot(x, p99, label="p99", color="tab:red")
    bottom.set_ylabel("send -> answer (s)")
    bottom.set_xlabel(f"seconds since the first message ({bucket_s:g} s buckets, by answer time)")
    for at, what in timeline["events"]:
        for axis in (top, bottom):
            axis.axvline(at - started, color="black" if "SIGKILL" in what else "tab:purple",
                         linestyle="--", linewidth=0.8)
        top.annotate(what, (at - started, max(throughput or [1]) * 0.95), rotation=90, fontsize=7,
                     va="top", ha="right")
    bottom.legend()
    for axis in (top, bottom):
        axis.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    latencies = [latency for _, latency in answers]
    print(f"wrote {out}: {len(answers)} answers over {end:.0f} s, peak {max(throughput):.1f} answers/s, "
          f"overall p50 {quantile(latencies, 50):.2f} s, p99 {quantile(latencies, 99):.2f} s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeline", type=Path, help="plot this timeline instead of running the scenario")
    parser.add_argument("--long", action="store_true", help="run the long form (10,000 messages)")
    parser.add_argument("--out", type=Path, help="where the PNG goes (default: a temporary file)")
    args = parser.parse_args(argv)
    timeline_path = args.timeline
    if timeline_path is None:
        timeline_path = Path(tempfile.mkdtemp(prefix="cloudia-chaos-plot-")) / "timeline.json"
        command = [sys.executable, "-m", "chaos", "--long" if args.long else "--short", "--scenario", "1",
                   "--timeline", str(timeline_path)]
        print("running:", " ".join(command), flush=True)
        # The scenario's table is printed; its exit status (lost/duplicated) does not stop the plot.
        subprocess.run(command, cwd=ROOT, check=False)
    out = args.out or Path(tempfile.mkdtemp(prefix="cloudia-chaos-plot-")) / "chaos-load.png"
    timeline = json.loads(timeline_path.read_text())
    count = len(timeline["answers"])
    plot(timeline, out, f"chaos load: {count} answers, LLM 20 % 5xx / 5 % timeouts / 5 % 429, "
                             f"worker SIGKILLs, Redis restart")


if __name__ == "__main__":
    main()
