"""Real servers for tests: a redis-server and a moto server, each on a free loopback port.

Faults are injected for real by stopping and restarting these processes.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request

from aiohttp import web

from local_runtime.emulator import moto_server_command


async def serve_posts(handler) -> tuple[web.AppRunner, str]:
    """An aiohttp server on the running loop, on a free loopback port, answering every POST with
    `handler`; its runner (to clean up) and its base URL."""
    app = web.Application()
    app.router.add_post("/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` different free loopback ports (each socket is held until all are chosen: the kernel
    may hand a just-released port out again)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def wait_for_port(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout_s} s")


class RedisServer:
    """A throw-away redis-server (no persistence) that a test can stop and start again."""

    def __init__(self, port: int | None = None):
        if not shutil.which("redis-server"):
            raise RuntimeError("redis-server is not installed: run `make deps` (apt-get install redis-server)")
        self.port = port or free_port()
        self._dir = tempfile.mkdtemp(prefix="cloudia-redis-")
        self._proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://localhost:{self.port}/0"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("redis-server is not running")
        return self._proc.pid

    def start(self) -> "RedisServer":
        self._proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self._dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=5)
        self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


class MotoServer:
    """moto's server (all AWS services on one port), as the emulator a deployment sees."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self._proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://localhost:{self.port}"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("the moto server is not running")
        return self._proc.pid

    def start(self) -> "MotoServer":
        self._proc = subprocess.Popen(moto_server_command(self.port), stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=0.5)
                return self
            except OSError:
                time.sleep(0.1)
        raise TimeoutError("moto server did not start")

    def reset(self) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST"))

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # a server busy with open requests
                self._proc.kill()
                self._proc.wait(timeout=10)
