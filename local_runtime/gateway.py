"""The local WebSocket gateway: API Gateway WebSocket for emulators that do not have it.

It accepts WebSocket connections, builds API Gateway-shaped events (the `$connect` REQUEST
authorizer and `$connect` with the query string, one event per inbound frame routed by the frame's
`action`, `$disconnect`; the authorizer's context on every event, as on AWS), invokes the
deployed handlers' code in-process (the emulator cannot run Lambda code without Docker) and serves
the API Gateway Management API (`POST`/`GET`/`DELETE /@connections/{id}`), so the worker's code is
the same as on AWS. It also serves the web chat page and a local-only token endpoint.

API Gateway's limits are kept: frame size, the 128 KB message payload on every message it sends
(route replies and `@connections` posts alike), idle timeout, maximum connection time, and dead
connections are found by a heartbeat and cleaned up with a `$disconnect` each. A connection that
does not keep up is shed: past a bound on its frames in flight or on the messages waiting to be sent
to it, it is closed (1008) and gets its `$disconnect`, so one slow reader cannot grow the gateway.
Connection tokens never reach the logs: a query value named like a token is redacted in every line.

    python -m local_runtime.gateway --port 8080
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import concurrent.futures
import functools
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from aiohttp import WSCloseCode, WSMsgType, web

from cloudia import protocol
from cloudia.frames import MAX_FRAME_BYTES
from cloudia.routes import AUTHORIZER, CONNECT, DEFAULT, DISCONNECT, ROUTES, function_id
from local_runtime import apigw_events
from local_runtime.lambda_runtime import FUNCTIONS_DIR, LAMBDA_TIMEOUT_S, LambdaContext, load_function

LOG = logging.getLogger("cloudia.gateway")

DEV_USER_PATTERN = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
WEB_DIR = Path(__file__).resolve().parents[1] / "web"  # the page both targets serve

DEFAULT_PORT = 8080
DEFAULT_STAGE = "local"
# API Gateway WebSocket quotas (https://docs.aws.amazon.com/apigateway/latest/developerguide/limits.html);
# the frame size is the frames module's, which refuses larger ones behind API Gateway too.
# "Message payload size 128 KB": every message API Gateway sends, a @connections POST body or a route
# reply. A POST over it is refused with 413; a route reply over it is not delivered (see _reply).
MAX_PAYLOAD_BYTES = 128 * 1024
IDLE_TIMEOUT_S = 600.0
MAX_CONNECTION_S = 7200.0
# Ping every 30 s; a connection that misses its pong is dead and gets its $disconnect.
HEARTBEAT_S = 30.0
# Handlers are sync and may block up to the Lambda timeout: a bounded pool, never the event loop.
HANDLER_THREADS = 16
# Shedding a connection that does not keep up. API Gateway documents no per-connection figure (its
# buffers are its own); here one client must not grow the process that serves everyone. The page has
# a few frames outstanding at most and the chaos fuzzer pipelines 25: past 64 a client is flooding.
# 64 frames of at most 32 KB bound what one connection holds inbound to 2 MB.
MAX_FRAMES_IN_FLIGHT = 64
# Messages accepted for a connection (route replies, @connections posts) and not yet written to its
# socket; the kernel's socket buffers come first, so a reader this far behind has stopped reading.
# 1 MiB is 8 maximum-size messages; 256 messages is hundreds of streamed tokens behind.
MAX_PENDING_SEND_BYTES = 1024 * 1024
MAX_PENDING_SEND_MESSAGES = 256
# How long a close waits for the client's close frame before the socket is dropped (a client that does
# not read never answers; aiohttp would wait 10 s, or forever for a full send buffer).
CLOSE_TIMEOUT_S = 2.0
# The close of a shed connection: 1008 (policy violation), the code for a peer breaking the rules.
SHED_CLOSE_CODE = WSCloseCode.POLICY_VIOLATION


Handler = Callable[[dict, Any], Any]


@dataclass(frozen=True)
class GatewayConfig:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    stage: str = DEFAULT_STAGE
    max_frame_bytes: int = MAX_FRAME_BYTES
    max_payload_bytes: int = MAX_PAYLOAD_BYTES
    max_frames_in_flight: int = MAX_FRAMES_IN_FLIGHT
    max_pending_send_bytes: int = MAX_PENDING_SEND_BYTES
    max_pending_send_messages: int = MAX_PENDING_SEND_MESSAGES
    close_timeout_s: float = CLOSE_TIMEOUT_S
    idle_timeout_s: float = IDLE_TIMEOUT_S
    max_connection_s: float = MAX_CONNECTION_S
    heartbeat_s: float = HEARTBEAT_S
    handler_threads: int = HANDLER_THREADS
    handler_timeout_s: float = LAMBDA_TIMEOUT_S
    web_dir: Path = WEB_DIR

    def __post_init__(self):
        if self.max_pending_send_bytes < self.max_payload_bytes:
            raise ValueError("max_pending_send_bytes must hold at least one message of max_payload_bytes")
        if self.max_frames_in_flight < 1 or self.max_pending_send_messages < 1:
            raise ValueError("max_frames_in_flight and max_pending_send_messages must be at least 1")


def load_handlers(env: Mapping[str, str]) -> dict[str, Handler]:
    """Load the deployed functions' code with the environment they are deployed with.

    The handlers read their settings at import, so the environment is set first.
    """
    os.environ.update(env)
    modules = {}
    for name in set(ROUTES.values()):
        if name == "authorizer" and not (FUNCTIONS_DIR / "authorizer.py").exists():
            continue  # a deployment without an authorizer: `$connect` checks the token itself
        modules[name] = load_function(name)
    return {route: modules[name].handler for route, name in ROUTES.items() if name in modules}


class LambdaFunctionError(Exception):
    """A function invoked through the Lambda API failed; the message is its errorMessage."""


def deployed_function_names(endpoint: str | None, stage: str) -> dict[str, str]:
    """Handler module -> deployed function name, read from the emulator (never hard-coded; None: boto3's
    endpoint, AWS_ENDPOINT_URL's)."""
    from local_runtime import discovery

    by_logical_id = discovery.deployed_functions(endpoint, stage)
    names = {}
    for module in set(ROUTES.values()):
        marker = function_id(module)
        found = [name for logical_id, name in by_logical_id.items() if marker in logical_id]
        if found:
            names[module] = found[0]
    return names


def lambda_handlers(endpoint: str | None, function_names: Mapping[str, str]) -> dict[str, Handler]:
    """Handlers that run the deployed functions through the Lambda Invoke API, for an emulator that
    can run Lambda code (LocalStack with Docker); moto cannot, so in-process is the default."""
    import boto3
    from botocore.config import Config

    client = boto3.client("lambda", endpoint_url=endpoint, config=Config(
        read_timeout=LAMBDA_TIMEOUT_S + 5, connect_timeout=2, retries={"max_attempts": 1}))

    def invoker(function_name: str) -> Handler:
        def invoke(event: dict, _context) -> Any:
            response = client.invoke(FunctionName=function_name, Payload=json.dumps(event).encode())
            raw = response["Payload"].read()
            result = json.loads(raw) if raw else None
            if response.get("FunctionError"):
                message = result.get("errorMessage", "") if isinstance(result, dict) else str(result)
                raise LambdaFunctionError(message)
            return result
        return invoke

    return {route: invoker(function_names[module]) for route, module in ROUTES.items()
            if module in function_names}


# ---------- secrets out of the logs ----------
# A query value whose name says token (token, access_token, id_token, ...) or password, and anything
# shaped like a JWT wherever it appears (a token in a URL, a header, an exception's text).
_SECRET_QUERY = re.compile(r"(?i)([?&;](?:[a-z0-9_.-]*token|password|secret)=)[^&\s\"'#]*")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
REDACTED = "REDACTED"
# The gateway's own logger and aiohttp's (the access log writes each request line, query included).
GATEWAY_LOGGERS = ("cloudia.gateway", "aiohttp.access", "aiohttp.server", "aiohttp.web", "aiohttp.websocket")


def redact(text: str) -> str:
    """`text` with every connection token replaced by REDACTED."""
    return _JWT.sub(REDACTED, _SECRET_QUERY.sub(lambda m: m.group(1) + REDACTED, text))


class RedactSecrets(logging.Filter):
    """Rewrites a record's message (and its traceback's text) with the tokens redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


def install_log_redaction(*handlers: logging.Handler) -> None:
    """On the gateway's loggers (whatever handlers the process has) and on `handlers` (the process's own,
    so a line any library logs is redacted too). Idempotent."""
    targets = [logging.getLogger(name) for name in GATEWAY_LOGGERS] + list(handlers)
    for target in targets:
        if not any(isinstance(f, RedactSecrets) for f in target.filters):
            target.addFilter(RedactSecrets())


@dataclass
class Connection:
    connection_id: str
    ws: web.WebSocketResponse
    source_ip: str
    user_agent: str
    connected_at_s: float
    last_active_s: float
    authorizer: dict | None = None  # the authorizer's context, on every event of the connection
    closed_by_gateway: str = ""  # why the gateway closed it (disconnectReason)
    close_code: int | None = None  # the code the gateway closed it with (disconnectStatusCode)
    transport: asyncio.Transport | None = None  # to drop a client that does not answer a close
    closing: bool = False  # the gateway is closing it, or it is gone: no frame is invoked, nothing sent
    in_flight: set = field(default_factory=set)  # its frames whose handlers have not returned
    # What is accepted for it and not yet written to its socket: (data, size); one writer sends them
    # in order, so a connection's memory is these bytes, not one buffer per frame.
    outbox: collections.deque = field(default_factory=collections.deque)
    outbox_ready: asyncio.Event = field(default_factory=asyncio.Event)
    pending_bytes: int = 0
    writer: asyncio.Task | None = None


class Gateway:
    def __init__(self, config: GatewayConfig, handlers: Mapping[str, Handler], env: Mapping[str, str]):
        self.config = config
        self._handlers = dict(handlers)
        self._env = dict(env)
        self._connections: dict[str, Connection] = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=config.handler_threads, thread_name_prefix="lambda"
        )
        self._reaper: asyncio.Task | None = None
        self._closings: set[asyncio.Task] = set()
        install_log_redaction()

    # ---------- app ----------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.max_payload_bytes + 1024)
        app.router.add_get("/", self.page)
        app.router.add_get("/config.json", self.page_config)
        app.router.add_get("/ws", self.websocket)
        app.router.add_get("/dev/token", self.dev_token)
        app.router.add_get("/healthz", self.healthz)
        # boto3 posts to {endpoint}/@connections/{id}; an endpoint with the stage adds /{stage}.
        for prefix in ("", "/{stage}"):
            app.router.add_post(prefix + "/@connections/{connection_id}", self.post_to_connection)
            app.router.add_get(prefix + "/@connections/{connection_id}", self.get_connection)
            app.router.add_delete(prefix + "/@connections/{connection_id}", self.delete_connection)
        # The page's files at the site root, as CloudFront serves them on AWS.
        for path in sorted(self.config.web_dir.glob("*.*")) if self.config.web_dir.is_dir() else ():
            if path.name != "index.html":
                app.router.add_get("/" + path.name, functools.partial(self.page_file, path))
        app.on_startup.append(self._start_reaper)
        app.on_shutdown.append(self._close_all)
        app.on_cleanup.append(self._stop)
        return app

    async def _start_reaper(self, _app) -> None:
        self._reaper = asyncio.create_task(self._reap_forever())

    async def _close_all(self, _app) -> None:
        await asyncio.gather(*(self._close(conn, WSCloseCode.GOING_AWAY, "Going away")
                               for conn in list(self._connections.values())))

    async def _stop(self, _app) -> None:
        if self._reaper:
            self._reaper.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ---------- HTTP ----------
    async def page(self, _request: web.Request) -> web.StreamResponse:
        index = self.config.web_dir / "index.html"
        if not index.is_file():
            return web.Response(status=404, text="the chat page is missing")
        return web.FileResponse(index, headers={"Cache-Control": "no-store"})

    async def page_file(self, path: Path, _request: web.Request) -> web.StreamResponse:
        return web.FileResponse(path, headers={"Cache-Control": "no-store"})

    async def page_config(self, request: web.Request) -> web.Response:
        """The page's endpoints (on AWS the stacks deploy the same keys beside the page)."""
        pool = self._user_pool()
        if pool is None:
            return web.json_response({"message": "no user pool: USER_POOL_ID is not set"}, status=503)
        return web.json_response(pool.page_config(f"ws://{request.host}/ws"), headers={"Cache-Control": "no-store"})

    def _user_pool(self):
        from local_runtime.identity import LocalUserPool

        if not self._env.get("USER_POOL_ID") or not self._env.get("AWS_ENDPOINT_URL"):
            return None
        return LocalUserPool(self._env["AWS_ENDPOINT_URL"], self._env["USER_POOL_ID"],
                             self._env.get("USER_POOL_CLIENT_ID", ""))

    async def healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "connections": len(self._connections)})

    async def dev_token(self, request: web.Request) -> web.Response:
        """An access token of the local user pool for user U, created on first use (with the password
        `local_runtime.identity.dev_password(U)`). Local only: the gateway binds loopback."""
        user = request.query.get("user", "").strip()
        pool = self._user_pool()
        if pool is None:
            return web.json_response({"message": "no user pool: USER_POOL_ID is not set"}, status=503)
        if not DEV_USER_PATTERN.fullmatch(user):
            return web.json_response({"message": "a user name is 1-64 letters, digits and _ . @ -"}, status=400)
        try:
            token, user_id = await asyncio.get_running_loop().run_in_executor(self._pool, pool.token_for, user)
        except Exception as exc:  # noqa: BLE001 - say why instead of a bare 500
            LOG.exception("dev token failed")
            return web.json_response({"message": f"cannot sign {user} in: {exc}"}, status=500)
        return web.json_response({"token": token, "user": user, "userId": user_id})

    # ---------- WebSocket ----------
    async def websocket(self, request: web.Request) -> web.StreamResponse:
        connection_id = apigw_events.new_connection_id()
        now = time.time()
        source_ip = request.remote or "127.0.0.1"
        user_agent = request.headers.get("User-Agent", "")
        context: dict[str, Any] = {"connectionId": connection_id, "connectedAt": int(now * 1000),
                                   "sourceIp": source_ip, "userAgent": user_agent}
        if AUTHORIZER in self._handlers:
            refused, authorizer = await self._authorize(request, context)
            if refused is not None:
                return refused
            context["authorizer"] = authorizer
        connect_event = self._event(CONNECT, "CONNECT", context, request=request)
        response = await self._invoke(CONNECT, connect_event)
        status = apigw_events.status_of(response)
        if not 200 <= status < 300:
            # API Gateway fails the handshake with the handler's status.
            LOG.info("connect refused: %s %s", status, connection_id)
            return web.Response(status=status if 400 <= status < 600 else 500,
                                text=apigw_events.body_of(response) or "Forbidden")

        ws = web.WebSocketResponse(
            heartbeat=self.config.heartbeat_s,
            # Frames over the limit get an error then close 1009 here; far larger ones aiohttp refuses.
            max_msg_size=self.config.max_frame_bytes * 4,
        )
        await ws.prepare(request)
        conn = Connection(connection_id, ws, source_ip, user_agent, now, now, context.get("authorizer"),
                          transport=request.transport)
        self._connections[connection_id] = conn
        conn.writer = asyncio.create_task(self._write_forever(conn))
        LOG.info("connected %s", connection_id)
        try:
            async for msg in ws:
                conn.last_active_s = time.time()
                if msg.type == WSMsgType.TEXT:
                    data, is_binary = msg.data.encode(), False
                elif msg.type == WSMsgType.BINARY:
                    data, is_binary = msg.data, True
                else:
                    continue
                if conn.closing:
                    continue  # the gateway is closing it: what it still sends is not invoked
                if len(data) > self.config.max_frame_bytes:
                    self._send(conn, protocol.dumps(protocol.error(
                        f"Frame too large: {len(data)} bytes, the limit is {self.config.max_frame_bytes}.",
                        reason="frame_too_large")))
                    await self._flushed(conn)  # the error goes out before the close
                    await self._close(conn, WSCloseCode.MESSAGE_TOO_BIG, "Message too big")
                    break
                if len(conn.in_flight) >= self.config.max_frames_in_flight:
                    self._shed(conn, f"Too many frames in flight (over {self.config.max_frames_in_flight})")
                    continue
                # Each frame is its own invocation, as on API Gateway: a slow send does not hold a ping.
                task = asyncio.create_task(self._on_frame(conn, data, is_binary))
                conn.in_flight.add(task)
                task.add_done_callback(conn.in_flight.discard)
        finally:
            self._connections.pop(connection_id, None)
            conn.closing = True
            if conn.writer:
                conn.writer.cancel()
            self._drop_outbox(conn)
            await self._disconnect(conn, context)
        return ws

    async def _on_frame(self, conn: Connection, data: bytes, is_binary: bool) -> None:
        body = base64.b64encode(data).decode() if is_binary else data.decode("utf-8", "replace")
        route = DEFAULT if is_binary else apigw_events.route_of(body)
        context = {"connectionId": conn.connection_id, "connectedAt": int(conn.connected_at_s * 1000),
                   "sourceIp": conn.source_ip, "userAgent": conn.user_agent, "authorizer": conn.authorizer}
        event = self._event(route, "MESSAGE", context, body=body, is_base64=is_binary)
        response = await self._invoke(route, event)
        if response is apigw_events.INVOCATION_FAILED:
            self._send(conn, protocol.dumps(protocol.error("Internal server error", reason="handler_failed")))
            return
        reply = apigw_events.body_of(response)
        if reply:
            self._reply(conn, route, event["requestContext"]["requestId"], reply)

    def _reply(self, conn: Connection, route: str, request_id: str, reply: str) -> None:
        """A route's reply, within API Gateway's message payload quota (128 KB, like any message it
        sends). One over it is not delivered: the integration response fails, and the client gets API
        Gateway's error frame for a failed integration, on a connection that stays open."""
        size = len(reply.encode("utf-8", "surrogatepass"))
        if size <= self.config.max_payload_bytes:
            self._send(conn, reply)
            return
        LOG.error("route reply of %s for %s not delivered: %d bytes, over the %d-byte message payload "
                  "quota (API Gateway sends the client an Internal server error instead)", route,
                  conn.connection_id, size, self.config.max_payload_bytes)
        self._send(conn, json.dumps({"message": "Internal server error", "connectionId": conn.connection_id,
                                     "requestId": request_id}))

    async def _disconnect(self, conn: Connection, context: dict) -> None:
        ws = conn.ws
        code = conn.close_code or ws.close_code
        code = code if code is not None else WSCloseCode.ABNORMAL_CLOSURE
        lost = code in (WSCloseCode.ABNORMAL_CLOSURE, None)
        reason = conn.closed_by_gateway or ("Connection lost" if lost else "Client closed")
        event = self._event(DISCONNECT, "DISCONNECT", context)
        event["requestContext"].update({"disconnectStatusCode": int(code), "disconnectReason": reason})
        LOG.info("disconnected %s (%s %s)", conn.connection_id, code, reason)
        await self._invoke(DISCONNECT, event)

    # ---------- sending: one ordered, bounded outbox per connection ----------
    def _send(self, conn: Connection, data: str | bytes) -> bool:
        """Accept `data` for the connection's writer; False if it is closing, or is shed now because
        this message would take it past its pending bounds (a reader that has fallen that far behind
        is not reading)."""
        if conn.closing or conn.ws.closed:
            return False
        size = len(data.encode("utf-8", "surrogatepass")) if isinstance(data, str) else len(data)
        if len(conn.outbox) + 1 > self.config.max_pending_send_messages:
            self._shed(conn, f"Slow reader: over {self.config.max_pending_send_messages} messages pending")
            return False
        if conn.pending_bytes + size > self.config.max_pending_send_bytes:
            self._shed(conn, f"Slow reader: over {self.config.max_pending_send_bytes} bytes pending")
            return False
        conn.outbox.append((data, size))
        conn.pending_bytes += size
        conn.outbox_ready.set()
        return True

    async def _flushed(self, conn: Connection) -> None:
        """Wait, at most the close timeout, until the outbox is written."""
        deadline = time.monotonic() + self.config.close_timeout_s
        while conn.outbox and not conn.closing and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def _write_forever(self, conn: Connection) -> None:
        """The connection's only writer: its messages in the order accepted, one at a time, so what
        waits for a slow reader is the outbox (bounded), never a buffer per frame in aiohttp."""
        ws = conn.ws
        while True:
            if not conn.outbox:
                conn.outbox_ready.clear()
                await conn.outbox_ready.wait()
                continue
            data, size = conn.outbox[0]
            try:
                if isinstance(data, str):
                    await ws.send_str(data)
                else:
                    await ws.send_bytes(data)
            except (ConnectionError, RuntimeError):
                pass  # the connection is going: its receive loop ends and cleans it up
            except Exception:  # noqa: BLE001 - one message that cannot be sent does not stop the rest
                LOG.exception("sending to %s failed", conn.connection_id)
            finally:
                if conn.outbox:
                    conn.outbox.popleft()
                    conn.pending_bytes -= size

    def _drop_outbox(self, conn: Connection) -> None:
        conn.outbox.clear()
        conn.pending_bytes = 0

    # ---------- closing ----------
    def _shed(self, conn: Connection, reason: str) -> None:
        """Close a connection that does not keep up; its `$disconnect` runs as for any close."""
        if conn.closing:
            return
        LOG.warning("shedding %s: %s (%d frames in flight, %d messages / %d bytes pending)",
                    conn.connection_id, reason, len(conn.in_flight), len(conn.outbox), conn.pending_bytes)
        self._close_later(conn, SHED_CLOSE_CODE, reason)

    def _close_later(self, conn: Connection, code: int, reason: str) -> None:
        if not self._begin_close(conn, code, reason):
            return
        task = asyncio.create_task(self._finish_close(conn, code, reason))
        self._closings.add(task)
        task.add_done_callback(self._closings.discard)

    async def _close(self, conn: Connection, code: int, reason: str) -> None:
        if self._begin_close(conn, code, reason):
            await self._finish_close(conn, code, reason)

    def _begin_close(self, conn: Connection, code: int, reason: str) -> bool:
        """From now on nothing is invoked for it or sent to it, and what waited to be sent is dropped.
        False if it was already closing."""
        if conn.closing:
            return False
        conn.closing = True
        conn.closed_by_gateway, conn.close_code = reason, int(code)
        if conn.writer:
            conn.writer.cancel()
        self._drop_outbox(conn)
        return True

    async def _finish_close(self, conn: Connection, code: int, reason: str) -> None:
        """Close with `code` and `reason`; a client that does not answer within the close timeout (one
        that does not read) has its socket dropped."""
        answered = False
        try:
            await asyncio.wait_for(conn.ws.close(code=code, message=reason.encode()[:123]),
                                   timeout=self.config.close_timeout_s)
            answered = True
        except asyncio.TimeoutError:
            pass
        except Exception:  # noqa: BLE001 - a close that fails still ends in a dropped socket
            LOG.debug("close of %s failed", conn.connection_id, exc_info=True)
        if not answered and conn.transport is not None:
            conn.transport.abort()

    def _event(self, route: str, event_type: str, ctx: dict, request: web.Request | None = None,
               body: str | None = None, is_base64: bool = False) -> dict:
        return apigw_events.websocket_event(route, event_type, ctx, f"{self.config.host}:{self.config.port}",
                                            self.config.stage, request, body, is_base64)

    async def _authorize(self, request: web.Request, ctx: dict) -> tuple[web.Response | None, dict | None]:
        """API Gateway's REQUEST authorizer on `$connect`: 401 on "Unauthorized", 403 on a Deny, else
        the policy's context (with principalId) for every later event of the connection."""
        event = self._event(CONNECT, "CONNECT", ctx, request=request)
        event.update({"type": "REQUEST", "stageVariables": {},
                      "methodArn": f"arn:aws:execute-api:us-east-1:123456789012:local/{self.config.stage}/$connect"})
        try:
            policy = await self._call(AUTHORIZER, event)
        except Exception as exc:  # noqa: BLE001 - what API Gateway does with an authorizer's failure
            if str(exc) == "Unauthorized":  # raised in-process, or the errorMessage through Lambda
                return web.json_response({"message": "Unauthorized"}, status=401), None
            LOG.exception("authorizer failed")
            return web.json_response({"message": "Internal server error"}, status=500), None
        statements = (policy or {}).get("policyDocument", {}).get("Statement", [])
        if not statements or any(st.get("Effect") != "Allow" for st in statements):
            return web.json_response({"message": "Forbidden"}, status=403), None
        return None, {**(policy.get("context") or {}), "principalId": policy.get("principalId", "")}

    async def _call(self, route: str, event: dict):
        """Run a handler in the pool with a Lambda context; its exceptions and timeout propagate."""
        handler = self._handlers.get(route) or self._handlers.get(DEFAULT)
        if handler is None:
            return {"statusCode": 200}
        name = ROUTES.get(route, route).strip("$")
        context = LambdaContext(function_name=f"cloudia-{self.config.stage}-{name}",
                                timeout_s=self.config.handler_timeout_s)
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._pool, handler, event, context)
        return await asyncio.wait_for(asyncio.shield(future), timeout=self.config.handler_timeout_s)

    async def _invoke(self, route: str, event: dict):
        try:
            return await self._call(route, event)
        except asyncio.TimeoutError:
            LOG.error("handler for %s timed out after %s s", route, self.config.handler_timeout_s)
            return apigw_events.INVOCATION_FAILED
        except Exception:  # noqa: BLE001 - a failing handler is the client's error event, not a crash
            LOG.exception("handler for %s failed", route)
            return apigw_events.INVOCATION_FAILED

    # ---------- Management API (@connections) ----------
    async def post_to_connection(self, request: web.Request) -> web.Response:
        conn = self._connections.get(request.match_info["connection_id"])
        data = await request.read()
        if len(data) > self.config.max_payload_bytes:
            return _aws_error(413, "PayloadTooLargeException", "Payload too large")
        if conn is None or conn.ws.closed:
            return _gone()
        try:
            message: str | bytes = data.decode("utf-8")
        except UnicodeDecodeError:
            message = data
        # Accepted for delivery, as API Gateway answers; a connection this takes past its pending
        # bounds is shed, and the post is answered as one to a closed connection.
        if not self._send(conn, message):
            return _gone()
        return web.Response(status=200)

    async def get_connection(self, request: web.Request) -> web.Response:
        conn = self._connections.get(request.match_info["connection_id"])
        if conn is None:
            return _gone()
        # API Gateway's wire names; boto3 gives them back as ConnectedAt, Identity.SourceIp, LastActiveAt.
        return web.json_response({
            "connectedAt": apigw_events.iso_time(conn.connected_at_s),
            "identity": {"sourceIp": conn.source_ip, "userAgent": conn.user_agent},
            "lastActiveAt": apigw_events.iso_time(conn.last_active_s),
        })

    async def delete_connection(self, request: web.Request) -> web.Response:
        conn = self._connections.get(request.match_info["connection_id"])
        if conn is None:
            return _gone()
        await self._close(conn, WSCloseCode.OK, "Connection deleted")
        return web.Response(status=204)

    # ---------- limits ----------
    async def _reap_forever(self) -> None:
        interval_s = max(0.2, min(self.config.idle_timeout_s, self.config.max_connection_s) / 10)
        while True:
            await asyncio.sleep(interval_s)
            now = time.time()
            for conn in list(self._connections.values()):
                if conn.closing:
                    continue
                if now - conn.connected_at_s >= self.config.max_connection_s:
                    reason = "Going away: maximum connection duration reached"
                elif now - conn.last_active_s >= self.config.idle_timeout_s:
                    reason = "Going away: idle timeout"
                else:
                    continue
                self._close_later(conn, WSCloseCode.GOING_AWAY, reason)  # never held by a stuck client

    @property
    def connection_ids(self) -> list[str]:
        return list(self._connections)


def _aws_error(status: int, code: str, message: str) -> web.Response:
    # boto3 reads the error code from this header (rest-json protocol).
    return web.json_response({"message": message}, status=status, headers={"x-amzn-ErrorType": code})


def _gone() -> web.Response:
    return _aws_error(410, "GoneException", "Gone")


def create_app(env: Mapping[str, str], config: GatewayConfig = GatewayConfig(),
               handlers: Mapping[str, Handler] | None = None) -> tuple[web.Application, Gateway]:
    """The gateway for a deployment whose functions run with `env`; `handlers` default to functions/."""
    gateway = Gateway(config, handlers if handlers is not None else load_handlers(env), env)
    return gateway.app(), gateway


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=os.environ.get("GATEWAY_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GATEWAY_PORT", DEFAULT_PORT)))
    parser.add_argument("--stage", default=os.environ.get("GATEWAY_STAGE", DEFAULT_STAGE))
    parser.add_argument("--idle-timeout-s", type=float, default=_env_float("GATEWAY_IDLE_TIMEOUT_S", IDLE_TIMEOUT_S))
    parser.add_argument("--max-connection-s", type=float,
                        default=_env_float("GATEWAY_MAX_CONNECTION_S", MAX_CONNECTION_S))
    parser.add_argument("--heartbeat-s", type=float, default=_env_float("GATEWAY_HEARTBEAT_S", HEARTBEAT_S))
    parser.add_argument("--max-frame-bytes", type=int,
                        default=int(os.environ.get("GATEWAY_MAX_FRAME_BYTES", MAX_FRAME_BYTES)))
    parser.add_argument("--max-frames-in-flight", type=int,
                        default=int(os.environ.get("GATEWAY_MAX_FRAMES_IN_FLIGHT", MAX_FRAMES_IN_FLIGHT)),
                        help="a connection with more frames being handled is closed (1008)")
    parser.add_argument("--max-pending-send-bytes", type=int,
                        default=int(os.environ.get("GATEWAY_MAX_PENDING_SEND_BYTES", MAX_PENDING_SEND_BYTES)),
                        help="a connection with more bytes waiting to be sent to it is closed (1008)")
    parser.add_argument("--max-pending-send-messages", type=int,
                        default=int(os.environ.get("GATEWAY_MAX_PENDING_SEND_MESSAGES", MAX_PENDING_SEND_MESSAGES)),
                        help="a connection with more messages waiting to be sent to it is closed (1008)")
    parser.add_argument("--invoke", choices=("in-process", "lambda"),
                        default=os.environ.get("GATEWAY_INVOKE", "in-process"),
                        help="run the functions' code in this process (moto), or call the deployed "
                             "functions through the Lambda Invoke API (an emulator that runs Lambda code)")
    parser.add_argument("--deploy-stage", default=os.environ.get("CLOUDIA_STAGE", "dev"),
                        help="the deployment whose functions --invoke lambda calls")
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("GATEWAY_LOG_LEVEL", "INFO"),
                        format="%(asctime)s gateway %(levelname)s %(message)s")
    install_log_redaction(*logging.getLogger().handlers)  # every line this process logs, any library's
    config = GatewayConfig(host=args.host, port=args.port, stage=args.stage, idle_timeout_s=args.idle_timeout_s,
                           max_connection_s=args.max_connection_s, heartbeat_s=args.heartbeat_s,
                           max_frame_bytes=args.max_frame_bytes, max_frames_in_flight=args.max_frames_in_flight,
                           max_pending_send_bytes=args.max_pending_send_bytes,
                           max_pending_send_messages=args.max_pending_send_messages)
    handlers = None
    if args.invoke == "lambda":
        endpoint = os.environ.get("AWS_ENDPOINT_URL")
        handlers = lambda_handlers(endpoint, deployed_function_names(endpoint, args.deploy_stage))
    app, _gateway = create_app(dict(os.environ), config, handlers)
    print(f"gateway listening on http://{config.host}:{config.port}/ (WebSocket /ws, @connections)", flush=True)
    # run_app stops on SIGINT and SIGTERM alike: every connection is closed with its $disconnect.
    web.run_app(app, host=config.host, port=config.port, print=None, handle_signals=True,
                shutdown_timeout=5)


if __name__ == "__main__":
    main()
