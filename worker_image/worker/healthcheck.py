"""Container health check: exit 0 if the worker's loop touched its heartbeat file recently, else 1.

    python -m worker.healthcheck        # HEALTH_FILE, default /tmp/worker-heartbeat
"""
from __future__ import annotations

import os
import sys
import time

DEFAULT_HEALTH_FILE = "/tmp/worker-heartbeat"
# The loop touches the file at least every ~20 s (one long poll); three times that means it is stuck.
MAX_HEARTBEAT_AGE_S = 60.0


def health_file() -> str:
    return os.environ.get("HEALTH_FILE", DEFAULT_HEALTH_FILE)


def touch(path: str) -> None:
    with open(path, "a"):
        os.utime(path, None)


def is_healthy(path: str, max_age_s: float = MAX_HEARTBEAT_AGE_S) -> bool:
    try:
        return time.time() - os.stat(path).st_mtime < max_age_s
    except OSError:
        return False


def main() -> int:
    return 0 if is_healthy(health_file()) else 1


if __name__ == "__main__":
    sys.exit(main())
