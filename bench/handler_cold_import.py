"""Cold-import time of each Lambda handler, and the size of the bundled Lambda asset.

    .venv/bin/python bench/handler_cold_import.py [--runs 7] [--handler send_message ...] [--trace-disabled]

Each run imports one handler module in a fresh interpreter laid out like the Lambda asset: the
`functions/*.py` handlers and the `cloudia` package side by side at the root, copied without
bytecode and imported with `-B`, so our code is compiled on every cold start as on Lambda's
read-only file system. The dependencies come from the virtualenv, held to what the Lambda's Python
can import: the closure of `functions/requirements.txt` and the runtime's boto3. Nothing else there
can be imported (redis, for one, would load opentelemetry where it finds it). They use the
virtualenv's bytecode, so their compilation, which Lambda does on every cold start (the asset holds
no bytecode: see stacks/components/lambda_code.py), is left out of the figures. The environment
looks like Lambda's (`AWS_LAMBDA_FUNCTION_NAME`, and `LAMBDA_TASK_ROOT` at the laid-out asset), so
Powertools' Tracer is enabled and the X-Ray SDK takes its Lambda path, as on a cold start;
`--trace-disabled` measures without it.

Prints per handler the median and the spread (min-max) over the runs of the import alone (timed
inside the child) and of the whole process (interpreter start and exit included, timed by the parent), then
the interpreter's own start-up for reference. Then, for every `cdk.out*/` folder with a synthesized
app, the size and file count of each Lambda asset its manifests reference (run `make synth` first).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FUNCTIONS = ROOT / "functions"

# Run in the child: time only the import of the handler module. argv[2]: the top-level modules
# to make unimportable (None in sys.modules: `import` fails, `find_spec` answers None).
IMPORT_TIMER = (
    "import importlib, sys, time\n"
    "sys.modules.update({name: None for name in sys.argv[2].split(',') if name and name not in sys.modules})\n"
    "start = time.perf_counter()\n"
    "importlib.import_module(sys.argv[1])\n"
    "print(time.perf_counter() - start)\n"
)

LAMBDA_LIKE_ENV = {
    "AWS_LAMBDA_FUNCTION_NAME": "cloudia-bench",
    "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
    # Where Lambda's X-Ray daemon would listen; nothing is sent while importing.
    "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:2000",
    "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "POWERTOOLS_SERVICE_NAME": "cloudia-bench",
    "POWERTOOLS_METRICS_NAMESPACE": "CloudIaBench",
}


# What the Lambda runtime provides besides the standard library (lambda_code.RUNTIME_PROVIDED).
RUNTIME_REQUIREMENTS = ["boto3"]


def not_in_asset() -> list[str]:
    """The virtualenv's top-level modules that neither the asset (the closure of
    `functions/requirements.txt`) nor the runtime (boto3 and its own) holds."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    lines = (FUNCTIONS / "requirements.txt").read_text().splitlines()
    wanted = [Requirement(line) for line in lines + RUNTIME_REQUIREMENTS if line.strip() and not line.startswith("#")]
    held, seen = set(), set()
    while wanted:
        requirement = wanted.pop()
        name, extras = canonicalize_name(requirement.name), frozenset(requirement.extras)
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        held.add(name)
        for line in metadata.distribution(name).requires or []:
            dependency = Requirement(line)
            if dependency.marker is None or any(dependency.marker.evaluate({"extra": extra})
                                                for extra in extras | {""}):
                wanted.append(dependency)
    return sorted(top for top, dists in metadata.packages_distributions().items()
                  if not any(canonicalize_name(dist) in held for dist in dists))


def handler_names() -> list[str]:
    return sorted(path.stem for path in FUNCTIONS.glob("*.py") if not path.name.startswith("_"))


def asset_like_copy() -> Path:
    """The handlers and `cloudia` side by side, without bytecode, as the Lambda asset holds them."""
    root = Path(tempfile.mkdtemp(prefix="cloudia-cold-import-"))
    for handler in FUNCTIONS.glob("*.py"):
        shutil.copy2(handler, root / handler.name)
    shutil.copytree(ROOT / "cloudia", root / "cloudia", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return root


def child_env(asset_root: Path, trace_disabled: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_", "PYTHON", "LAMBDA_"))}
    env.update(LAMBDA_LIKE_ENV)
    # Powertools enables its Tracer, and the X-Ray SDK picks its Lambda context, only where it is set.
    env["LAMBDA_TASK_ROOT"] = str(asset_root)
    if trace_disabled:
        env["POWERTOOLS_TRACE_DISABLED"] = "true"
    return env


def time_import(module: str, asset_root: Path, env: dict[str, str], blocked: str) -> tuple[float, float]:
    """(import seconds measured in the child, whole-process seconds measured here)."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-B", "-c", IMPORT_TIMER, module, blocked], cwd=asset_root, env=env,
                            capture_output=True, text=True, timeout=120)
    wall_s = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"importing {module} failed:\n{result.stderr.strip()}")
    return float(result.stdout.strip().splitlines()[-1]), wall_s


def time_interpreter(env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-B", "-c", "pass"], env=env, check=True, timeout=60)
    return time.perf_counter() - started


def spread_ms(samples: list[float]) -> str:
    ms = [s * 1000 for s in samples]
    return f"{statistics.median(ms):8.1f} ms  ({min(ms):.1f}-{max(ms):.1f})"


def lambda_assets() -> list[tuple[str, Path]]:
    """(cdk.out folder, asset folder) for every file asset of a synthesized app holding a handler."""
    found = []
    handlers = {f"{name}.py" for name in handler_names()}
    for out_dir in sorted(ROOT.glob("cdk.out*")):
        referenced: set[str] = set()
        for assets_file in out_dir.glob("*.assets.json"):
            files = json.loads(assets_file.read_text()).get("files", {})
            referenced.update(entry["source"]["path"] for entry in files.values() if "path" in entry.get("source", {}))
        for relative in sorted(referenced):
            asset = out_dir / relative
            if asset.is_dir() and any((asset / name).exists() for name in handlers):
                found.append((out_dir.name, asset))
    return found


def folder_size(folder: Path) -> tuple[int, int]:
    total_bytes = files = 0
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            total_bytes += path.stat().st_size
            files += 1
    return total_bytes, files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7, help="fresh interpreters per handler (default: %(default)s)")
    parser.add_argument("--handler", action="append", choices=handler_names(), help="only this handler (repeatable)")
    parser.add_argument("--trace-disabled", action="store_true", help="set POWERTOOLS_TRACE_DISABLED (no X-Ray SDK)")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    asset_root = asset_like_copy()
    env = child_env(asset_root, args.trace_disabled)
    # The project's own packages are installed too (editable); of them the asset holds `cloudia`.
    blocked = ",".join(name for name in not_in_asset() if not (asset_root / name).exists())
    try:
        print(f"cold import of each handler, {args.runs} fresh interpreters each "
              f"(tracing {'off' if args.trace_disabled else 'on'}); median (min-max)")
        print(f"{'handler':<16} {'import':<32} {'whole process':<32}")
        for module in args.handler or handler_names():
            samples = [time_import(module, asset_root, env, blocked) for _ in range(args.runs)]
            print(f"{module:<16} {spread_ms([s[0] for s in samples]):<32} {spread_ms([s[1] for s in samples]):<32}")
        print(f"{'(interpreter)':<16} {'':<32} {spread_ms([time_interpreter(env) for _ in range(args.runs)]):<32}")
    finally:
        shutil.rmtree(asset_root, ignore_errors=True)

    assets = lambda_assets()
    if not assets:
        print("\nno synthesized Lambda asset under cdk.out*/ (run `make synth` to measure its size)")
    for out_dir, asset in assets:
        size_bytes, files = folder_size(asset)
        print(f"\nLambda asset {out_dir}/{asset.name[:18]}...: {size_bytes / 1_000_000:.1f} MB in {files} files "
              "(unzipped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
