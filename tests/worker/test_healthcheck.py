"""The container health check: healthy while the worker's loop touches its heartbeat file."""
from __future__ import annotations

import os
import subprocess
import sys
import time

from tests.worker.conftest import wait_until


def healthcheck(path) -> int:
    env = dict(os.environ, HEALTH_FILE=str(path))
    return subprocess.run([sys.executable, "-m", "worker.healthcheck"], env=env, timeout=30).returncode


def test_fresh_heartbeat_is_healthy_stale_or_missing_is_not(tmp_path):
    heartbeat = tmp_path / "heartbeat"
    assert healthcheck(heartbeat) == 1  # missing
    heartbeat.touch()
    assert healthcheck(heartbeat) == 0
    old = time.time() - 61
    os.utime(heartbeat, (old, old))
    assert healthcheck(heartbeat) == 1


def test_running_worker_keeps_its_heartbeat_fresh(harness, start_worker, tmp_path):
    running = start_worker(harness.settings)
    heartbeat = tmp_path / "heartbeat-0"
    wait_until(heartbeat.exists, what="the heartbeat file")
    old = time.time() - 120
    os.utime(heartbeat, (old, old))
    # THEN the loop touches it again within a poll (1 s in tests)
    wait_until(lambda: time.time() - heartbeat.stat().st_mtime < 5, timeout_s=5, what="a fresh heartbeat")
    assert healthcheck(heartbeat) == 0
    running.stop()
