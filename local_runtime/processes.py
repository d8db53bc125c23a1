"""Processes a local run starts and stops: each child with its log file, stopped in reverse order
(SIGTERM, then SIGKILL past its grace), and the small waits and checks around them. `make up`
(local_runtime/up.py), the chaos suite and the tests start theirs with these."""
from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0


class StepFailed(Exception):
    """A step could not be done; `fix` tells the person what to do about it."""

    def __init__(self, what: str, fix: str):
        super().__init__(what)
        self.what = what
        self.fix = fix


def step(message: str) -> None:
    print(f"==> {message}", flush=True)


def detail(message: str) -> None:
    print(f"    {message}", flush=True)


def port_answers(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(check: Callable[[], bool], timeout_s: float, proc: subprocess.Popen | None = None) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            if check():
                return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    log_path: Path
    stop_timeout_s: float = STOP_GRACE_S

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class StartedProcesses:
    """What this run started, stopped in reverse order (anything reused is left alone)."""

    log_dir: Path
    children: list[Child] = field(default_factory=list)
    stoppers: list[tuple[str, Callable[[], None]]] = field(default_factory=list)

    def spawn(self, name: str, argv: list[str], env: Mapping[str, str],
              stop_timeout_s: float = STOP_GRACE_S) -> Child:
        log_path = self.log_dir / f"{name}.log"
        log = open(log_path, "ab", buffering=0)
        proc = subprocess.Popen(argv, env=dict(env), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        child = Child(name, proc, log_path, stop_timeout_s)
        self.children.append(child)
        return child

    def dead_child(self) -> Child | None:
        return next((c for c in self.children if c.proc.poll() is not None), None)

    def stop(self) -> None:
        for child in reversed(self.children):
            if child.proc.poll() is None:
                detail(f"stopping {child.name} (pid {child.proc.pid})")
                child.proc.terminate()
        for child in reversed(self.children):
            try:
                child.proc.wait(timeout=child.stop_timeout_s)
            except subprocess.TimeoutExpired:
                detail(f"{child.name} did not stop within {child.stop_timeout_s:.0f} s: killed")
                child.proc.kill()
                child.proc.wait(timeout=5)
        self.children.clear()
        for name, stop in reversed(self.stoppers):
            detail(f"stopping {name}")
            try:
                stop()
            except Exception as exc:  # noqa: BLE001 - keep stopping the rest
                detail(f"could not stop {name}: {exc}")
        self.stoppers.clear()


def child_env(env: Mapping[str, str]) -> dict[str, str]:
    """A child process's environment: this one's, plus `env`. The project's packages are installed
    (editable), so `python -m local_runtime.gateway` or `-m worker` needs no PYTHONPATH."""
    return {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
