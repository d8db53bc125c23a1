"""Run the local gateway in a background thread with its own event loop, on a free port; or as its own
process, as `make up` runs it (`python -m tests.local.gateway_thread` is `local_runtime.gateway`'s
main with `SizedReplies` in place of the deployed functions), for its log file and its memory."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from aiohttp import web

from local_runtime.gateway import GatewayConfig, create_app
from tests.support.servers import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
RECORD = logging.getLogger("tests.recorded")


def sized_reply(size: int) -> str:
    """A `history` reply of exactly `size` bytes (at least the empty reply's 40)."""
    empty = json.dumps({"event": "history", "messages": [], "pad": ""})
    return json.dumps({"event": "history", "messages": [], "pad": "x" * max(0, size - len(empty))})


class SizedReplies:
    """Handlers that accept `token`, answer `ping` with a pong and `history` with a reply of the frame's
    `bytes`; a `history` frame with `hold` waits for `release` (a handler still running)."""

    def __init__(self, token: str = "good"):
        self.token = token
        self.events: list[dict] = []
        self.release = threading.Event()
        self.release.set()
        self.disconnected = threading.Event()

    def handlers(self) -> dict:
        return {"$connect": self.connect, "$disconnect": self.disconnect, "ping": self.message,
                "history": self.message, "resume": self.message, "sendMessage": self.message,
                "$default": self.message}

    def connect(self, event, _context):
        self.events.append(event)
        if (event.get("queryStringParameters") or {}).get("token") != self.token:
            return {"statusCode": 401, "body": "Unauthorized"}
        return {"statusCode": 200}

    def message(self, event, _context):
        self.events.append(event)
        route = event["requestContext"]["routeKey"]
        if route == "ping":
            return {"statusCode": 200, "body": json.dumps({"event": "pong"})}
        frame = json.loads(event["body"]) if route != "$default" else {}
        if frame.get("hold"):
            self.release.wait(20)
        return {"statusCode": 200, "body": sized_reply(int(frame.get("bytes", 0)))}

    def disconnect(self, event, _context):
        self.events.append(event)
        ctx = event["requestContext"]
        RECORD.info("recorded $disconnect %s %s %s", ctx["connectionId"], ctx["disconnectStatusCode"],
                    ctx["disconnectReason"])
        self.disconnected.set()
        return {"statusCode": 200}

    def of_route(self, route: str) -> list[dict]:
        return [e for e in self.events if e["requestContext"]["routeKey"] == route]


class _Addresses:
    """Where a gateway on `self.port` answers."""

    port: int

    @property
    def http(self) -> str:
        return f"http://localhost:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://localhost:{self.port}/ws"


class GatewayThread(_Addresses):
    def __init__(self, handlers: dict, env: dict | None = None, **config):
        self.port = config.pop("port", None) or free_port()
        self.config = GatewayConfig(port=self.port, **config)
        self._handlers = handlers
        self._env = env or {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.gateway = None

    def start(self) -> "GatewayThread":
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def serve():
            app, self.gateway = create_app(self._env, self.config, handlers=self._handlers)
            self._runner = web.AppRunner(app, shutdown_timeout=2)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
            ready.set()

        def run():
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(serve())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True, name="gateway")
        self._thread.start()
        ready.wait(10)
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if not self._loop:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = None


class GatewayProcess(_Addresses):
    """The gateway in its own process, started as `make up` starts it, its output in `log_path`."""

    def __init__(self, log_path: Path, token: str, *args: str):
        self.port = free_port()
        self.log_path = log_path
        self._token = token
        self._args = list(args)
        self.proc: subprocess.Popen | None = None

    def start(self) -> "GatewayProcess":
        with open(self.log_path, "ab", buffering=0) as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.local.gateway_thread", "--port", str(self.port), *self._args],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "GATEWAY_TEST_TOKEN": self._token, "PYTHONUNBUFFERED": "1"})
        wait_for_port(self.port, timeout_s=20)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def connections(self) -> int:
        with urllib.request.urlopen(f"{self.http}/healthz", timeout=5) as response:
            return json.load(response)["connections"]

    def memory_kb(self, field: str) -> int:
        """VmRSS (resident now) or VmHWM (the peak resident since start or `reset_peak`), in kB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)

    def reset_peak(self) -> bool:
        """Start VmHWM again from the current RSS (Linux: 5 > clear_refs); False where it cannot."""
        try:
            Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    def wait_until(self, check, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if check():
                return True
            time.sleep(0.05)
        return check()


if __name__ == "__main__":
    # local_runtime.gateway's main, as `make up` runs it, with SizedReplies for the deployed functions.
    from local_runtime import gateway

    recorded = SizedReplies(os.environ.get("GATEWAY_TEST_TOKEN", "good")).handlers()
    gateway.load_handlers = lambda _env: recorded
    gateway.main(sys.argv[1:])
