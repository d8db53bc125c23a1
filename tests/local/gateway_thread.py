"""Run the local gateway in a background thread with its own event loop, on a free port."""
from __future__ import annotations

import asyncio
import threading

from aiohttp import web

from local_runtime.gateway import GatewayConfig, create_app
from tests.support.servers import free_port, wait_for_port


class GatewayThread:
    def __init__(self, handlers: dict, env: dict | None = None, **config):
        self.port = config.pop("port", None) or free_port()
        self.config = GatewayConfig(port=self.port, **config)
        self._handlers = handlers
        self._env = env or {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.gateway = None

    @property
    def http(self) -> str:
        return f"http://localhost:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://localhost:{self.port}/ws"

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
