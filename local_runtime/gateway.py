"""The local WebSocket gateway: API Gateway WebSocket for emulators that do not have it.

It accepts WebSocket connections, builds API Gateway-shaped events (the `$connect` REQUEST
authorizer and `$connect` with the query string, one event per inbound frame routed by the frame's
`action`, `$disconnect`; the authorizer's context on every event, as on AWS), invokes the
deployed handlers' code in-process (the emulator cannot run Lambda code without Docker) and serves
the API Gateway Management API (`POST`/`GET`/`DELETE /@connections/{id}`), so the worker's code is
the same as on AWS. It also serves the web chat page and a local-only token endpoint.

API Gateway's limits are kept: frame size, idle timeout, maximum connection time, and dead
connections are found by a heartbeat and cleaned up with a `$disconnect` each.

    python -m local_runtime.gateway --port 8080
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import datetime
import functools
import importlib
import json
import logging
import os
import re
import secrets
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from aiohttp import WSCloseCode, WSMsgType, web

from cloudia import protocol

LOG = logging.getLogger("cloudia.gateway")

ROOT = Path(__file__).resolve().parents[1]
DEV_USER_PATTERN = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
WEB_DIR = Path(__file__).resolve().parents[1] / "web"  # the page both targets serve

DEFAULT_PORT = 8080
DEFAULT_STAGE = "local"
# API Gateway WebSocket quotas (https://docs.aws.amazon.com/apigateway/latest/developerguide/limits.html).
MAX_FRAME_BYTES = 32 * 1024
MAX_PAYLOAD_BYTES = 128 * 1024  # a @connections POST body
IDLE_TIMEOUT_S = 600.0
MAX_CONNECTION_S = 7200.0
# Ping every 30 s; a connection that misses its pong is dead and gets its $disconnect.
HEARTBEAT_S = 30.0
# Handlers are sync and may block up to the Lambda timeout: a bounded pool, never the event loop.
HANDLER_THREADS = 16
LAMBDA_TIMEOUT_S = 29.0
LAMBDA_MEMORY_MB = 256

# Frame `action` -> route key, as the deployed API defines its routes; anything else is `$default`.
ACTION_ROUTES = ("sendMessage", "ping", "history", "resume")
# The `$connect` REQUEST authorizer, as on AWS: run before `$connect`; its context rides on every event.
AUTHORIZER = "$authorizer"
# Route key -> handler module in functions/ (the CDK app's functions).
ROUTE_MODULES = {
    AUTHORIZER: "authorizer",
    "$connect": "connect",
    "$disconnect": "disconnect",
    "sendMessage": "send_message",
    "ping": "default",
    "history": "default",
    "resume": "default",
    "$default": "default",
}

Handler = Callable[[dict, Any], Any]


@dataclass(frozen=True)
class GatewayConfig:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    stage: str = DEFAULT_STAGE
    max_frame_bytes: int = MAX_FRAME_BYTES
    idle_timeout_s: float = IDLE_TIMEOUT_S
    max_connection_s: float = MAX_CONNECTION_S
    heartbeat_s: float = HEARTBEAT_S
    handler_threads: int = HANDLER_THREADS
    handler_timeout_s: float = LAMBDA_TIMEOUT_S
    web_dir: Path = WEB_DIR


@dataclass
class LambdaContext:
    """What the Lambda runtime hands a handler (Powertools reads these attributes)."""

    function_name: str
    timeout_s: float
    memory_limit_in_mb: int = LAMBDA_MEMORY_MB
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    invoked_function_arn: str = ""
    log_group_name: str = ""
    log_stream_name: str = "local"
    _deadline: float = 0.0

    def __post_init__(self):
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self._deadline = time.monotonic() + self.timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def load_handlers(env: Mapping[str, str]) -> dict[str, Handler]:
    """Import the deployed functions' code with the environment they are deployed with.

    The handlers read their settings at import, so the environment is set first.
    """
    os.environ.update(env)
    for path in (str(ROOT / "functions"), str(ROOT)):
        if path not in sys.path:
            sys.path.insert(0, path)
    modules = {}
    for name in set(ROUTE_MODULES.values()):
        if name == "authorizer" and not (ROOT / "functions" / "authorizer.py").exists():
            continue  # a deployment without an authorizer: `$connect` checks the token itself
        modules[name] = importlib.import_module(name)
    return {route: modules[name].handler for route, name in ROUTE_MODULES.items() if name in modules}


class LambdaFunctionError(Exception):
    """A function invoked through the Lambda API failed; the message is its errorMessage."""


def _pascal(module: str) -> str:
    return "".join(part.capitalize() for part in module.split("_"))


def deployed_function_names(endpoint: str, stage: str) -> dict[str, str]:
    """Handler module -> deployed function name, read from the emulator (never hard-coded)."""
    from local_runtime import discovery

    by_logical_id = discovery.deployed_functions(endpoint, stage)
    names = {}
    for module in set(ROUTE_MODULES.values()):
        marker = f"{_pascal(module)}Function"
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

    return {route: invoker(function_names[module]) for route, module in ROUTE_MODULES.items()
            if module in function_names}


def new_connection_id() -> str:
    # API Gateway's ids look like "L0SM9cOFvHcCIhw=": 11 random bytes in base64 (URL-safe here).
    return base64.urlsafe_b64encode(secrets.token_bytes(11)).decode()


def _iso(epoch_s: float) -> str:
    return datetime.datetime.fromtimestamp(epoch_s, datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def _request_time(epoch_s: float) -> str:
    return datetime.datetime.fromtimestamp(epoch_s, datetime.timezone.utc).strftime("%d/%b/%Y:%H:%M:%S +0000")


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

    # ---------- app ----------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_PAYLOAD_BYTES + 1024)
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
        for conn in list(self._connections.values()):
            conn.closed_by_gateway = "Going away"
            await conn.ws.close(code=WSCloseCode.GOING_AWAY, message=b"Going away")

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
        connection_id = new_connection_id()
        now = time.time()
        source_ip = request.remote or "127.0.0.1"
        user_agent = request.headers.get("User-Agent", "")
        context = {"connectionId": connection_id, "connectedAt": int(now * 1000), "sourceIp": source_ip,
                   "userAgent": user_agent}
        if AUTHORIZER in self._handlers:
            refused, authorizer = await self._authorize(request, context)
            if refused is not None:
                return refused
            context["authorizer"] = authorizer
        connect_event = self._event("$connect", "CONNECT", context, request=request)
        response = await self._invoke("$connect", connect_event)
        status = _status_of(response)
        if not 200 <= status < 300:
            # API Gateway fails the handshake with the handler's status.
            LOG.info("connect refused: %s %s", status, connection_id)
            return web.Response(status=status if 400 <= status < 600 else 500,
                                text=_body_of(response) or "Forbidden")

        ws = web.WebSocketResponse(
            heartbeat=self.config.heartbeat_s,
            # Frames over the limit get an error then close 1009 here; far larger ones aiohttp refuses.
            max_msg_size=self.config.max_frame_bytes * 4,
        )
        await ws.prepare(request)
        conn = Connection(connection_id, ws, source_ip, user_agent, now, now, context.get("authorizer"))
        self._connections[connection_id] = conn
        LOG.info("connected %s", connection_id)
        in_flight: set[asyncio.Task] = set()
        try:
            async for msg in ws:
                conn.last_active_s = time.time()
                if msg.type == WSMsgType.TEXT:
                    data, is_binary = msg.data.encode(), False
                elif msg.type == WSMsgType.BINARY:
                    data, is_binary = msg.data, True
                else:
                    continue
                if len(data) > self.config.max_frame_bytes:
                    await self._send(conn, protocol.dumps(protocol.error(
                        f"Frame too large: {len(data)} bytes, the limit is {self.config.max_frame_bytes}.",
                        reason="frame_too_large")))
                    conn.closed_by_gateway = "Message too big"
                    await ws.close(code=WSCloseCode.MESSAGE_TOO_BIG, message=b"Message too big")
                    break
                # Each frame is its own invocation, as on API Gateway: a slow send does not hold a ping.
                task = asyncio.create_task(self._on_frame(conn, data, is_binary))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
        finally:
            self._connections.pop(connection_id, None)
            await self._disconnect(conn, context)
        return ws

    async def _on_frame(self, conn: Connection, data: bytes, is_binary: bool) -> None:
        body = base64.b64encode(data).decode() if is_binary else data.decode("utf-8", "replace")
        route = "$default" if is_binary else _route_of(body)
        context = {"connectionId": conn.connection_id, "connectedAt": int(conn.connected_at_s * 1000),
                   "sourceIp": conn.source_ip, "userAgent": conn.user_agent, "authorizer": conn.authorizer}
        event = self._event(route, "MESSAGE", context, body=body, is_base64=is_binary)
        response = await self._invoke(route, event)
        if response is _FAILED:
            await self._send(conn, protocol.dumps(protocol.error(
                "Internal server error", reason="handler_failed")))
            return
        reply = _body_of(response)
        if reply:
            await self._send(conn, reply)

    async def _disconnect(self, conn: Connection, context: dict) -> None:
        ws = conn.ws
        code = ws.close_code if ws.close_code is not None else WSCloseCode.ABNORMAL_CLOSURE
        lost = code in (WSCloseCode.ABNORMAL_CLOSURE, None)
        reason = conn.closed_by_gateway or ("Connection lost" if lost else "Client closed")
        event = self._event("$disconnect", "DISCONNECT", context)
        event["requestContext"].update({"disconnectStatusCode": int(code), "disconnectReason": reason})
        LOG.info("disconnected %s (%s %s)", conn.connection_id, code, reason)
        await self._invoke("$disconnect", event)

    async def _send(self, conn: Connection, text: str) -> bool:
        if conn.ws.closed:
            return False
        try:
            await conn.ws.send_str(text)
            return True
        except (ConnectionError, RuntimeError):
            return False

    def _event(self, route: str, event_type: str, ctx: dict, request: web.Request | None = None,
               body: str | None = None, is_base64: bool = False) -> dict:
        now = time.time()
        request_context = {
            "routeKey": route,
            "eventType": event_type,
            "messageDirection": "IN",
            "connectionId": ctx["connectionId"],
            "connectedAt": ctx["connectedAt"],
            "requestId": base64.urlsafe_b64encode(secrets.token_bytes(12)).decode(),
            "extendedRequestId": str(uuid.uuid4()),
            "requestTime": _request_time(now),
            "requestTimeEpoch": int(now * 1000),
            "domainName": f"{self.config.host}:{self.config.port}",
            "stage": self.config.stage,
            "apiId": "local",
            "identity": {"sourceIp": ctx["sourceIp"], "userAgent": ctx["userAgent"]},
        }
        if ctx.get("authorizer"):
            request_context["authorizer"] = ctx["authorizer"]
        event: dict[str, Any] = {"requestContext": request_context, "isBase64Encoded": is_base64}
        if event_type == "MESSAGE":
            request_context["messageId"] = base64.urlsafe_b64encode(secrets.token_bytes(12)).decode()
            event["body"] = body
        if request is not None:
            event["headers"] = dict(request.headers)
            event["multiValueHeaders"] = {k: request.headers.getall(k) for k in request.headers.keys()}
            query = request.query
            event["queryStringParameters"] = {k: query[k] for k in query.keys()} or None
            event["multiValueQueryStringParameters"] = {k: query.getall(k) for k in query.keys()} or None
        return event

    async def _authorize(self, request: web.Request, ctx: dict) -> tuple[web.Response | None, dict | None]:
        """API Gateway's REQUEST authorizer on `$connect`: 401 on "Unauthorized", 403 on a Deny, else
        the policy's context (with principalId) for every later event of the connection."""
        event = self._event("$connect", "CONNECT", ctx, request=request)
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
        handler = self._handlers.get(route) or self._handlers.get("$default")
        if handler is None:
            return {"statusCode": 200}
        name = ROUTE_MODULES.get(route, route).strip("$")
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
            return _FAILED
        except Exception:  # noqa: BLE001 - a failing handler is the client's error event, not a crash
            LOG.exception("handler for %s failed", route)
            return _FAILED

    # ---------- Management API (@connections) ----------
    async def post_to_connection(self, request: web.Request) -> web.Response:
        conn = self._connections.get(request.match_info["connection_id"])
        data = await request.read()
        if len(data) > MAX_PAYLOAD_BYTES:
            return _aws_error(413, "PayloadTooLargeException", "Payload too large")
        if conn is None or conn.ws.closed:
            return _gone()
        try:
            await conn.ws.send_str(data.decode("utf-8"))
        except UnicodeDecodeError:
            await conn.ws.send_bytes(data)
        except (ConnectionError, RuntimeError):
            return _gone()
        return web.Response(status=200)

    async def get_connection(self, request: web.Request) -> web.Response:
        conn = self._connections.get(request.match_info["connection_id"])
        if conn is None:
            return _gone()
        # API Gateway's wire names; boto3 gives them back as ConnectedAt, Identity.SourceIp, LastActiveAt.
        return web.json_response({
            "connectedAt": _iso(conn.connected_at_s),
            "identity": {"sourceIp": conn.source_ip, "userAgent": conn.user_agent},
            "lastActiveAt": _iso(conn.last_active_s),
        })

    async def delete_connection(self, request: web.Request) -> web.Response:
        conn = self._connections.get(request.match_info["connection_id"])
        if conn is None:
            return _gone()
        conn.closed_by_gateway = "Connection deleted"
        await conn.ws.close(code=WSCloseCode.OK, message=b"Connection deleted")
        return web.Response(status=204)

    # ---------- limits ----------
    async def _reap_forever(self) -> None:
        interval_s = max(0.2, min(self.config.idle_timeout_s, self.config.max_connection_s) / 10)
        while True:
            await asyncio.sleep(interval_s)
            now = time.time()
            for conn in list(self._connections.values()):
                if now - conn.connected_at_s >= self.config.max_connection_s:
                    reason = "Going away: maximum connection duration reached"
                elif now - conn.last_active_s >= self.config.idle_timeout_s:
                    reason = "Going away: idle timeout"
                else:
                    continue
                conn.closed_by_gateway = reason
                await conn.ws.close(code=WSCloseCode.GOING_AWAY, message=reason.encode())

    @property
    def connection_ids(self) -> list[str]:
        return list(self._connections)


_FAILED = object()


def _status_of(response) -> int:
    if response is _FAILED:
        return 500
    if isinstance(response, dict):
        try:
            return int(response.get("statusCode", 200))
        except (TypeError, ValueError):
            return 500
    return 200


def _body_of(response) -> str:
    if response is _FAILED or response is None:
        return ""
    if isinstance(response, dict):
        body = response.get("body")
        if body is None:
            return ""
        return body if isinstance(body, str) else json.dumps(body)
    return response if isinstance(response, str) else json.dumps(response)


def _route_of(body: str) -> str:
    """API Gateway's route selection expression `$request.body.action`."""
    try:
        frame = json.loads(body)
    except (ValueError, RecursionError):  # not JSON, or nested too deep to read: `$default` says why
        return "$default"
    action = frame.get("action") if isinstance(frame, dict) else None
    return action if isinstance(action, str) and action in ACTION_ROUTES else "$default"


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
    parser.add_argument("--invoke", choices=("in-process", "lambda"),
                        default=os.environ.get("GATEWAY_INVOKE", "in-process"),
                        help="run the functions' code in this process (moto), or call the deployed "
                             "functions through the Lambda Invoke API (an emulator that runs Lambda code)")
    parser.add_argument("--deploy-stage", default=os.environ.get("CLOUDIA_STAGE", "dev"),
                        help="the deployment whose functions --invoke lambda calls")
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("GATEWAY_LOG_LEVEL", "INFO"),
                        format="%(asctime)s gateway %(levelname)s %(message)s")
    config = GatewayConfig(host=args.host, port=args.port, stage=args.stage, idle_timeout_s=args.idle_timeout_s,
                           max_connection_s=args.max_connection_s, heartbeat_s=args.heartbeat_s,
                           max_frame_bytes=args.max_frame_bytes)
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
