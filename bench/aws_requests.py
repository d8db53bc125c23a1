"""AWS requests per answered message, by role, service and operation, and the pushes to `@connections`.

    .venv/bin/python bench/aws_requests.py [--messages 10] [--burst] [--first-token-ms 500]
        [--tokens-per-s 45] [--answer-tokens N] [--message-chars 200]

Stands up moto, a redis-server, the fake LLM (a process of its own, writing `--answer-tokens` tokens at
a model's pace: `--first-token-ms` to the first, then `--tokens-per-s`; the default length is the mean
of the fake's `model` profile) and the `@connections` stand-in (a process of its own). In this process:
the real handlers (`functions/*.py`, warm, with API Gateway WebSocket events: the authorizer and
`$connect` once, then per message `sendMessage` and, after its answer, a `ping`, then `$disconnect`)
and the real worker (`worker_image/worker/app.py` `build_worker`, OpenAI provider over HTTP, the
deployed 20 s long poll). By default each message is sent once the previous one is answered; with
`--burst` all of them are sent first and the worker starts afterwards, so its receives (and any
batched calls) take several jobs at a time, as under load.

Every botocore call made in this process is counted (a wrapper around `BaseClient._make_api_call`, and
the `before-send` event for each HTTP attempt, retries included) with its role: the handler running
on the main thread, or `worker` for every other thread. Nothing is assumed about which calls the code
makes. Calls on the DLQ (the worker's periodic sweep) and long polls that came back empty are idle
costs of a running worker, printed apart and not per message. For pricing, each call also records
SQS's billed 64 KB chunks, the `@connections` payload (billed in 32 KB increments) and DynamoDB's
capacity units from the measured item sizes: each item a write touches is read outside the count (its
time and CPU are taken out of the figures), before unless already known and after an update, as
DynamoDB bills a write by the larger of the two sizes; transactional items count double.

Also measured, for `bench/price_per_message.py` (which imports `measure`): each handler's wall and
CPU time in this process (a local measurement, against the emulator on loopback), the bytes each role
writes to stdout (its CloudWatch Logs), the frames' sizes, the worker's CPU per job and how long each
job holds a worker slot (receive to delete; this one includes the read-backs, a few ms per write), and
the items each message leaves in each table. In a burst every message of the conversation is sent
before any answer, so each one's context is read from the history (none is cached yet).

What bounds the figures: the counts are our code's alone, for the answers' pace: the token pushes
follow the answer's length in time (one every `token_push_interval_ms`), an answer longer than
`job_heartbeat_s` (10 s) adds a heartbeat's calls, and long polls that time out are idle calls; none
depends on the emulator's speed. The durations and the CPU are bounded by moto's CPU on the same 2 cores
and by this machine; they are not Lambda's or Fargate's.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import json
import logging
import math
import os
import secrets
import statistics
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import botocore.client
from botocore.exceptions import ClientError

ROOT = Path(__file__).resolve().parents[1]

# DynamoDB bills a write per 1 KB of item, a read per 4 KB (strongly consistent; half for eventual).
WRITE_UNIT_BYTES = 1024
READ_UNIT_BYTES = 4096
# SQS bills each 64 KB chunk of a request's payload as one request.
SQS_CHUNK_BYTES = 64 * 1024
# API Gateway WebSocket bills messages in 32 KB increments.
WEBSOCKET_MESSAGE_BYTES = 32 * 1024
# The handlers' log level as the stacks deploy them (stacks/components/runtime_environment.py).
DEPLOYED_LOG_LEVEL = "INFO"
# The functions' Powertools settings as deployed (stacks/components/functions.py), but no X-Ray daemon
# here: tracing's own cost is not in the durations.
FUNCTION_ENV = {"LOG_LEVEL": DEPLOYED_LOG_LEVEL, "POWERTOOLS_SERVICE_NAME": "chat-api",
                "POWERTOOLS_METRICS_NAMESPACE": "CloudIa", "POWERTOOLS_TRACE_DISABLED": "true"}
# Users' limits raised so that no message of a run is refused (the admission's work is unchanged).
UNLIMITED = 10 ** 9
ANSWER_TIMEOUT_S = 120.0
# The user, conversation and the warm-up's short answer (the fake LLM honours `[answer_tokens=N]`).
USER = "bench-user"
CONVERSATION = "bench-conversation"
WARM_UP_MESSAGE = "warm up [answer_tokens=3]"


# -- DynamoDB item sizes and capacity units -----------------------------------------------------------
def number_size(text: str) -> int:
    """DynamoDB's size of a number: 1 byte per two significant digits, plus 1."""
    mantissa = text.lower().split("e")[0].lstrip("+-").replace(".", "")
    digits = mantissa.strip("0") or "0"
    return (len(digits) + 1) // 2 + 1


def value_size(value: dict) -> int:
    """The size DynamoDB counts for one attribute value in the low-level (typed) form."""
    (kind, v), = value.items()
    if kind == "S":
        return len(v.encode())
    if kind == "N":
        return number_size(v)
    if kind == "B":
        return len(v if isinstance(v, (bytes, bytearray)) else base64.b64decode(v))
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(s.encode()) for s in v)
    if kind == "NS":
        return sum(number_size(n) for n in v)
    if kind == "BS":
        return sum(len(b) for b in v)
    if kind == "L":
        return 3 + sum(1 + value_size(e) for e in v)
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + value_size(e) for k, e in v.items())
    raise ValueError(f"unknown DynamoDB type {kind!r}")


def item_size(item: dict | None) -> int:
    """An item's size as DynamoDB bills it: each attribute's name and value."""
    return sum(len(name.encode()) + value_size(value) for name, value in (item or {}).items())


def write_units(size: int) -> int:
    return max(1, math.ceil(size / WRITE_UNIT_BYTES))


def read_units(size: int, consistent: bool) -> float:
    units = max(1, math.ceil(size / READ_UNIT_BYTES))
    return float(units) if consistent else units / 2


def sqs_chunks(payload_bytes: int) -> int:
    return max(1, math.ceil(payload_bytes / SQS_CHUNK_BYTES))


def websocket_messages(payload_bytes: int) -> int:
    return max(1, math.ceil(payload_bytes / WEBSOCKET_MESSAGE_BYTES))


def _sqs_attributes_size(attributes: dict | None) -> int:
    size = 0
    for name, value in (attributes or {}).items():
        size += len(name.encode()) + len(str(value.get("DataType", "")).encode())
        size += len(str(value.get("StringValue", "")).encode()) + len(value.get("BinaryValue", b"") or b"")
    return size


def _http_bytes(headers, body) -> int:
    size = sum(len(str(k)) + len(str(v)) + 4 for k, v in (headers or {}).items())
    if isinstance(body, (bytes, bytearray)):
        size += len(body)
    elif isinstance(body, str):
        size += len(body.encode())
    return size


# -- one counted call ---------------------------------------------------------------------------------
@dataclass
class Call:
    service: str  # botocore's service name: dynamodb, sqs, apigatewaymanagementapi, ...
    operation: str
    role: str  # the handler on the main thread, or "worker"
    attempts: int = 0  # HTTP attempts, retries included
    request_bytes: int = 0  # HTTP headers and bodies, every attempt
    response_bytes: int = 0
    error: str = ""
    billed_requests: int = 1  # SQS: 64 KB chunks of the payload
    write_units: float = 0.0
    read_units: float = 0.0
    transactional: bool = False
    queue_url: str = ""
    messages: int | None = None  # ReceiveMessage: how many came back
    receipts: tuple[str, ...] = ()  # SQS receipt handles received, or deleted
    payload_bytes: int = 0  # PostToConnection: the frame's bytes
    frame_event: str = ""  # PostToConnection: the event pushed (token, answer, ...)
    ended_at: float = 0.0


class _Thread(threading.local):
    call: Call | None = None
    probing: bool = False
    hook_cpu_s: float = 0.0  # the counter's own time on this thread, taken out of the figures
    hook_wall_s: float = 0.0


class AwsCallCounter:
    """Counts every botocore call of this process while installed; see the module docstring."""

    def __init__(self):
        self.calls: list[Call] = []
        self.window_open = False
        self.main_role: str | None = None  # None: the main thread is setting up, not counted
        self._lock = threading.Lock()
        self._thread = _Thread()
        self._original: Callable[..., Any] | None = None  # botocore's _make_api_call while installed
        self._original_post: Callable[..., Any] | None = None  # the worker's push (cloudia.push), likewise
        self._sizes: dict[tuple[str, str], int] = {}  # (table, key) -> the item's size now
        self.created: dict[tuple[str, str], str] = {}  # items first written while the window was open
        self._key_names: dict[str, tuple[str, ...]] = {}
        self.worker_hook_cpu_s = 0.0
        self.receive_times: dict[str, float] = {}
        self.delete_times: dict[str, float] = {}
        self.posts_delivered = 0  # every PostToConnection answered 200, counted or not (a check)

    # -- installing ---------------------------------------------------------------------------
    def install(self) -> "AwsCallCounter":
        self._original = botocore.client.BaseClient._make_api_call
        counter = self

        def _make_api_call(client, operation_name, api_params):
            return counter._counted(client, operation_name, api_params)

        botocore.client.BaseClient._make_api_call = _make_api_call
        # The worker pushes with an HTTP POST of its own (signed as boto3 signs it), not botocore's.
        from cloudia.push import ConnectionsApi

        self._original_post = ConnectionsApi.post

        async def post(api, connection_id: str, data: bytes) -> int:
            return await counter._counted_post(api, connection_id, data)

        ConnectionsApi.post = post  # type: ignore[method-assign,assignment]
        return self

    def uninstall(self) -> None:
        if self._original is not None:
            botocore.client.BaseClient._make_api_call = self._original
            self._original = None
        if self._original_post is not None:
            from cloudia.push import ConnectionsApi

            ConnectionsApi.post = self._original_post  # type: ignore[method-assign]
            self._original_post = None

    def role(self) -> str | None:
        return self.main_role if threading.current_thread() is threading.main_thread() else "worker"

    @contextlib.contextmanager
    def acting_as(self, role: str) -> Iterator[None]:
        previous, self.main_role = self.main_role, role
        try:
            yield
        finally:
            self.main_role = previous

    def take_hook_time(self) -> tuple[float, float]:
        """This thread's counter overhead (CPU s, wall s) since the last call, and reset it."""
        taken = self._thread.hook_cpu_s, self._thread.hook_wall_s
        self._thread.hook_cpu_s = self._thread.hook_wall_s = 0.0
        return taken

    # -- the wrapper ----------------------------------------------------------------------------
    def _call(self, client, operation: str, params: dict) -> Any:
        """The call as botocore makes it, uncounted."""
        if self._original is None:
            raise RuntimeError("the AWS call counter is not installed")
        return self._original(client, operation, params)

    def _counted(self, client, operation: str, params: dict):
        local = self._thread
        role = self.role()
        if role is None or local.probing or local.call is not None:
            return self._call(client, operation, params)
        cpu0, wall0 = time.thread_time(), time.perf_counter()
        self._hook(client)
        call = Call(client.meta.service_model.service_name, operation, role)
        before = self._before(client, call, params)
        local.call = call
        cpu1, wall1 = time.thread_time(), time.perf_counter()
        outcome: Any = None
        try:
            outcome = self._call(client, operation, params)
            return outcome
        except ClientError as error:
            call.error = error.response.get("Error", {}).get("Code", "ClientError")
            raise
        except Exception as error:  # noqa: BLE001 - recorded, then raised to our code unchanged
            call.error = type(error).__name__
            raise
        finally:
            local.call = None
            cpu2, wall2 = time.thread_time(), time.perf_counter()
            try:
                self._after(client, call, params, outcome if isinstance(outcome, dict) else {}, before)
            finally:
                call.ended_at = time.monotonic()
                cpu_s = (cpu1 - cpu0) + (time.thread_time() - cpu2)
                local.hook_cpu_s += cpu_s
                local.hook_wall_s += (wall1 - wall0) + (time.perf_counter() - wall2)
                with self._lock:
                    if role == "worker":
                        self.worker_hook_cpu_s += cpu_s
                    if self.window_open:
                        self.calls.append(call)

    async def _counted_post(self, api, connection_id: str, data: bytes) -> int:
        """A push, counted as the PostToConnection it is (one attempt: its own retry is not seen)."""
        if self._original_post is None:
            raise RuntimeError("the AWS call counter is not installed")
        role = self.role()
        if role is None:
            return await self._original_post(api, connection_id, data)
        cpu0 = time.thread_time()
        call = Call("apigatewaymanagementapi", "PostToConnection", role, attempts=1, payload_bytes=len(data))
        # Its bytes on the wire, as the worker signs it (the NAT gateway carries them).
        url, headers = api.request(connection_id, data, await api._current_credentials())
        call.request_bytes = len("POST") + len(url) + _http_bytes(headers, data)
        try:
            call.frame_event = str(json.loads(data).get("event", ""))
        except (ValueError, AttributeError):
            call.frame_event = "?"
        cpu_s = time.thread_time() - cpu0  # the counter's own, taken out of the worker's CPU
        self._thread.hook_cpu_s += cpu_s
        with self._lock:
            if role == "worker":
                self.worker_hook_cpu_s += cpu_s
        try:
            status = await self._original_post(api, connection_id, data)
        except Exception as error:  # noqa: BLE001 - recorded, then raised to our code unchanged
            call.error = type(error).__name__
            raise
        finally:
            call.ended_at = time.monotonic()
            with self._lock:
                if self.window_open:
                    self.calls.append(call)
        if status == 200:
            with self._lock:
                self.posts_delivered += 1
        else:
            call.error = f"HTTP {status}"
        return status

    def _hook(self, client) -> None:
        events = client.meta.events
        events.register("before-send", self._on_send, unique_id="cloudia-bench-count-send")
        events.register("response-received", self._on_response, unique_id="cloudia-bench-count-response")

    def _on_send(self, request, **_kwargs):
        call = self._thread.call
        if call is not None:
            call.attempts += 1
            call.request_bytes += len(request.method) + len(request.url) + _http_bytes(request.headers, request.body)
        return None

    def _on_response(self, response_dict=None, **_kwargs):
        call = self._thread.call
        if call is not None and response_dict:
            call.response_bytes += _http_bytes(response_dict.get("headers"), response_dict.get("body"))

    # -- what a call is billed --------------------------------------------------------------------
    def _probe(self, client, operation: str, params: dict) -> dict:
        self._thread.probing = True
        try:
            return self._call(client, operation, params)
        finally:
            self._thread.probing = False

    def _keys(self, client, table: str) -> tuple[str, ...]:
        if table not in self._key_names:
            described = self._probe(client, "DescribeTable", {"TableName": table})["Table"]
            self._key_names[table] = tuple(k["AttributeName"] for k in described["KeySchema"])
        return self._key_names[table]

    def _key_of(self, client, table: str, item_or_key: dict) -> tuple[dict, str]:
        key = {name: item_or_key[name] for name in self._keys(client, table) if name in item_or_key}
        return key, json.dumps(key, sort_keys=True, default=str)

    def _size_now(self, client, table: str, key: dict, key_text: str) -> int:
        """The item's size as stored now (read outside the count when this process has not seen it)."""
        known = self._sizes.get((table, key_text))
        if known is None:
            item = self._probe(client, "GetItem", {"TableName": table, "Key": key, "ConsistentRead": True}).get("Item")
            known = item_size(item)
            self._sizes[(table, key_text)] = known
        return known

    def _writes_of(self, operation: str, params: dict) -> list[tuple[str, str, dict]]:
        """(kind, table, item-or-key) of every item a DynamoDB write touches."""
        if operation == "PutItem":
            return [("Put", params["TableName"], params["Item"])]
        if operation in ("UpdateItem", "DeleteItem"):
            return [(operation[:-4], params["TableName"], params["Key"])]
        if operation == "TransactWriteItems":
            writes = []
            for entry in params.get("TransactItems", []):
                (kind, body), = entry.items()
                writes.append((kind, body["TableName"], body.get("Item") or body.get("Key")))
            return writes
        if operation == "BatchWriteItem":
            writes = []
            for table, requests in params.get("RequestItems", {}).items():
                for request in requests:
                    if "PutRequest" in request:
                        writes.append(("Put", table, request["PutRequest"]["Item"]))
                    else:
                        writes.append(("Delete", table, request["DeleteRequest"]["Key"]))
            return writes
        return []

    def _before(self, client, call: Call, params: dict) -> Any:
        if call.service == "dynamodb":
            sized = []
            for kind, table, data in self._writes_of(call.operation, params):
                key, key_text = self._key_of(client, table, data)
                sized.append((kind, table, data, key, key_text, self._size_now(client, table, key, key_text)))
            return sized
        return None

    def _after(self, client, call: Call, params: dict, response: dict, before: Any) -> None:
        if call.service == "dynamodb":
            self._dynamodb_units(client, call, params, response, before or [])
        elif call.service == "sqs":
            self._sqs(call, params, response)
        elif call.service == "apigatewaymanagementapi" and call.operation == "PostToConnection":
            data = params.get("Data") or b""
            data = data.encode() if isinstance(data, str) else bytes(data)
            call.payload_bytes = len(data)
            if not call.error:
                with self._lock:
                    self.posts_delivered += 1
            try:
                call.frame_event = str(json.loads(data).get("event", ""))
            except (ValueError, AttributeError):
                call.frame_event = "?"

    def _dynamodb_units(self, client, call: Call, params: dict, response: dict, sized: list) -> None:
        operation = call.operation
        call.transactional = operation.startswith("Transact")
        factor = 2 if call.transactional else 1
        failed = bool(call.error)
        for kind, table, data, key, key_text, size_before in sized:
            if kind == "Put":
                size_after = size_before if failed else item_size(data)
            elif kind == "Update" and not failed:
                size_after = item_size(self._probe(client, "GetItem", {
                    "TableName": table, "Key": key, "ConsistentRead": True}).get("Item"))
            elif kind == "Delete" and not failed:
                size_after = 0
            else:  # a ConditionCheck, or a write its condition refused: the item is as it was
                size_after = size_before
            call.write_units += factor * write_units(max(size_before, size_after))
            self._sizes[(table, key_text)] = size_after
            if self.window_open and not size_before and size_after:
                self.created[(table, key_text)] = table
        consistent = bool(params.get("ConsistentRead"))
        if operation == "GetItem":
            call.read_units = read_units(self._read_size(client, params["TableName"], response.get("Item"),
                                                         params, params["Key"]), consistent)
        elif operation in ("Query", "Scan"):
            total = sum(self._read_size(client, params["TableName"], item, params, item)
                        for item in response.get("Items", []))
            call.read_units = read_units(total, consistent)
        elif operation == "BatchGetItem":
            for table, items in response.get("Responses", {}).items():
                table_consistent = bool(params["RequestItems"].get(table, {}).get("ConsistentRead"))
                for item in items:
                    call.read_units += read_units(self._read_size(client, table, item, params, item), table_consistent)
        elif operation == "TransactGetItems":
            for entry, got in zip(params.get("TransactItems", []), response.get("Responses", [])):
                body = entry["Get"]
                call.read_units += 2 * read_units(
                    self._read_size(client, body["TableName"], got.get("Item"), body, body["Key"]), True)

    def _read_size(self, client, table: str, returned: dict | None, params: dict, key_source: dict | None) -> int:
        """A read is billed by the whole item's size, whatever a projection returns."""
        if returned is None:
            return 0
        if not params.get("ProjectionExpression") and not params.get("AttributesToGet"):
            size = item_size(returned)
            key, key_text = self._key_of(client, table, returned)
            self._sizes[(table, key_text)] = size
            return size
        key, key_text = self._key_of(client, table, key_source or returned)
        return self._size_now(client, table, key, key_text)

    def _sqs(self, call: Call, params: dict, response: dict) -> None:
        call.queue_url = params.get("QueueUrl", "")
        now = time.monotonic()
        if call.operation == "SendMessage":
            call.billed_requests = sqs_chunks(len(params.get("MessageBody", "").encode())
                                              + _sqs_attributes_size(params.get("MessageAttributes")))
        elif call.operation == "SendMessageBatch":
            call.billed_requests = sqs_chunks(sum(len(e.get("MessageBody", "").encode())
                                                  + _sqs_attributes_size(e.get("MessageAttributes"))
                                                  for e in params.get("Entries", [])))
        elif call.operation == "ReceiveMessage":
            messages = response.get("Messages", [])
            call.messages = len(messages)
            call.billed_requests = sqs_chunks(sum(len(m.get("Body", "").encode())
                                                  + _sqs_attributes_size(m.get("MessageAttributes"))
                                                  for m in messages))
            call.receipts = tuple(m["ReceiptHandle"] for m in messages)
            with self._lock:
                for receipt in call.receipts:
                    self.receive_times.setdefault(receipt, now)
        elif call.operation in ("DeleteMessage", "DeleteMessageBatch") and not call.error:
            receipts = [params["ReceiptHandle"]] if "ReceiptHandle" in params else \
                [e["ReceiptHandle"] for e in params.get("Entries", [])]
            call.receipts = tuple(receipts)
            with self._lock:
                for receipt in receipts:
                    self.delete_times.setdefault(receipt, now)


# -- what the handlers log ----------------------------------------------------------------------------
class LogBytes:
    """A stand-in for stdout that counts what each role writes (its CloudWatch Logs) and keeps none."""

    encoding = "utf-8"
    errors = "replace"

    def __init__(self, counter: AwsCallCounter):
        self._counter = counter
        self._lock = threading.Lock()
        self.bytes: Counter[str] = Counter()

    def write(self, text: str) -> int:
        role = self._counter.role() or "setup"
        with self._lock:
            self.bytes[role] += len(text.encode("utf-8", "replace"))
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True


@contextlib.contextmanager
def stdout_counted(stream: LogBytes) -> Iterator[None]:
    """stdout, and every logging handler already bound to it, write to `stream` meanwhile."""
    original = sys.stdout
    rebound = []
    loggers = [logging.getLogger()] + [lg for lg in logging.Logger.manager.loggerDict.values()
                                       if isinstance(lg, logging.Logger)]
    for lg in loggers:
        for handler in lg.handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream in (original, sys.__stdout__):
                rebound.append((handler, handler.stream))
                handler.setStream(stream)
    sys.stdout = stream
    try:
        yield
    finally:
        sys.stdout = original
        for handler, previous in rebound:
            handler.setStream(previous)


def rebind_new_handlers(stream: LogBytes) -> None:
    """Loggers made after `stdout_counted` started (modules imported since) write to `stream` too."""
    for lg in [logging.getLogger()] + [lg for lg in logging.Logger.manager.loggerDict.values()
                                       if isinstance(lg, logging.Logger)]:
        for handler in lg.handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is sys.__stdout__:
                handler.setStream(stream)


# -- API Gateway WebSocket events ---------------------------------------------------------------------
API_ID, STAGE, REGION, ACCOUNT = "bench0api1", "prod", "us-east-1", "123456789012"


def _request_id() -> str:
    return base64.b64encode(secrets.token_bytes(12)).decode()


def request_context(route: str, event_type: str, connection_id: str, connected_at_ms: int,
                    authorizer: dict | None) -> dict:
    now = time.time()
    context = {
        "routeKey": route, "eventType": event_type, "messageDirection": "IN", "connectionId": connection_id,
        "connectedAt": connected_at_ms, "requestId": _request_id(), "extendedRequestId": _request_id(),
        "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
        "requestTimeEpoch": int(now * 1000), "domainName": f"{API_ID}.execute-api.{REGION}.amazonaws.com",
        "stage": STAGE, "apiId": API_ID, "identity": {"sourceIp": "203.0.113.10", "userAgent": "Mozilla/5.0"},
    }
    if event_type == "MESSAGE":
        context["messageId"] = _request_id()
    if authorizer:
        context["authorizer"] = authorizer
    return context


@dataclass
class Connection:
    connection_id: str
    connected_at_ms: int
    authorizer: dict | None = None

    def connect_event(self, token: str, authorizer_call: bool = False) -> dict:
        event = {"headers": {"Host": f"{API_ID}.execute-api.{REGION}.amazonaws.com", "Sec-WebSocket-Version": "13"},
                 "multiValueHeaders": {}, "queryStringParameters": {"token": token},
                 "requestContext": request_context("$connect", "CONNECT", self.connection_id, self.connected_at_ms,
                                                   None if authorizer_call else self.authorizer),
                 "isBase64Encoded": False}
        if authorizer_call:
            event.update({"type": "REQUEST", "stageVariables": {},
                          "methodArn": f"arn:aws:execute-api:{REGION}:{ACCOUNT}:{API_ID}/{STAGE}/$connect"})
        return event

    def message_event(self, route: str, body: str) -> dict:
        return {"requestContext": request_context(route, "MESSAGE", self.connection_id, self.connected_at_ms,
                                                  self.authorizer),
                "body": body, "isBase64Encoded": False}

    def disconnect_event(self) -> dict:
        context = request_context("$disconnect", "DISCONNECT", self.connection_id, self.connected_at_ms,
                                  self.authorizer)
        context.update({"disconnectStatusCode": 1001, "disconnectReason": "Going away"})
        return {"headers": {"Host": f"{API_ID}.execute-api.{REGION}.amazonaws.com"}, "requestContext": context,
                "isBase64Encoded": False}


# -- the measurement ----------------------------------------------------------------------------------
@dataclass
class Invocation:
    """One handler invocation, timed in this process with the counter's own time taken out."""

    role: str
    wall_ms: float
    cpu_ms: float
    log_bytes: int
    frame_bytes: int  # the frame the client sent (0 for $connect/$disconnect)
    reply_bytes: int  # the route response sent back to the client (0 when none is sent)
    status: int


@dataclass
class Measurement:
    mode: str  # "sequential" | "burst"
    messages: int
    answered: int
    first_token_ms: int
    tokens_per_s: float
    answer_tokens: int
    message_chars: int
    worker_concurrency: int
    worker_poll_wait_s: int
    calls: list[Call]
    invocations: list[Invocation]
    worker_log_bytes: int
    worker_cpu_s: float  # the worker's threads during the answers, the counter's own time taken out
    job_hold_s: list[float]  # per job: its message received -> deleted
    outcomes: dict[str, int]
    stored_items: dict[str, list[int]]  # table's logical name -> the final sizes of the items written
    push_count_at_gateway: int  # what the `@connections` stand-in received (warm-up included), as a check
    posts_delivered: int  # PostToConnection calls answered 200 (warm-up included), for that check
    dlq_url: str = ""
    table_names: dict[str, str] = field(default_factory=dict)  # logical -> physical

    # -- reading it ---------------------------------------------------------------------------
    def is_idle(self, call: Call) -> bool:
        """A running worker's cost whatever the traffic: the DLQ sweep, and long polls that found nothing."""
        return (call.service == "sqs" and bool(self.dlq_url) and call.queue_url == self.dlq_url) or \
            (call.operation == "ReceiveMessage" and call.messages == 0)

    def per_message_calls(self) -> list[Call]:
        return [c for c in self.calls if c.role in ("sendMessage", "worker") and not self.is_idle(c)]

    def idle_calls(self) -> list[Call]:
        return [c for c in self.calls if c.role == "worker" and self.is_idle(c)]

    def session_calls(self, role: str) -> list[Call]:
        return [c for c in self.calls if c.role == role]

    def invocations_of(self, role: str) -> list[Invocation]:
        return [i for i in self.invocations if i.role == role]

    def per_answer(self, value: float) -> float:
        return value / self.answered if self.answered else float("nan")

    def by_operation(self, calls: list[Call] | None = None) -> dict[tuple[str, str, str], dict[str, float]]:
        """(role, service, operation) -> calls, attempts, billed requests, write and read units (totals)."""
        # A Counter sums floats as well (a missing key reads 0); typeshed types its counts as int.
        table: dict[tuple[str, str, str], dict[str, float]] = defaultdict(Counter)  # type: ignore[arg-type]
        for call in self.per_message_calls() if calls is None else calls:
            row = table[(call.role, call.service, call.operation)]
            row["calls"] += 1
            row["attempts"] += call.attempts
            row["billed"] += call.billed_requests
            row["write_units"] += call.write_units
            row["read_units"] += call.read_units
            row["errors"] += bool(call.error)
        return table

    def pushes(self) -> list[Call]:
        return [c for c in self.per_message_calls() if c.operation == "PostToConnection"]

    def http_bytes(self, services: set[str] | None = None, roles: set[str] | None = None) -> int:
        return sum(c.request_bytes + c.response_bytes for c in self.per_message_calls()
                   if (services is None or c.service in services) and (roles is None or c.role in roles))


def _settings_env(settings) -> dict[str, str]:
    from cloudia.settings import resilience_env

    env = {f.name.upper(): str(getattr(settings, f.name)) for f in dataclasses.fields(settings)
           if f.name != "resilience" and getattr(settings, f.name)}
    env.update(resilience_env(settings.resilience))
    return env


def table_names(settings) -> dict[str, str]:
    """The deployment's tables, by the name of their setting (`history_table` -> "history")."""
    return {f.name[:-len("_table")]: getattr(settings, f.name) for f in dataclasses.fields(settings)
            if f.name.endswith("_table") and getattr(settings, f.name)}


def default_answer_tokens() -> int:
    """The mean length of the fake LLM's `model` profile (a triangular draw, mode a third of the way up)."""
    from local_runtime.fake_llm import PROFILES

    model = PROFILES["model"]
    mode = model.answer_tokens_min + (model.answer_tokens_max - model.answer_tokens_min) / 3
    return round((model.answer_tokens_min + model.answer_tokens_max + mode) / 3)


def _question(n: int, chars: int) -> str:
    text = f"Question {n}: how should a small team estimate the monthly cost of a chat backend on AWS? "
    return (text * (chars // len(text) + 1))[:chars]


class _Run:
    """One measurement's servers, handlers and workers; `measure` drives it."""

    def __init__(self, counter: AwsCallCounter, logs: LogBytes, settings, handlers: dict, token: str,
                 memory_mb: int):
        self.counter = counter
        self.logs = logs
        self.settings = settings
        self.handlers = handlers
        self.token = token
        self.memory_mb = memory_mb
        self.invocations: list[Invocation] = []

    def invoke(self, role: str, route: str, event: dict, frame_bytes: int = 0, replies: bool = True) -> dict:
        from local_runtime.lambda_runtime import LambdaContext

        context = LambdaContext(function_name=f"cloudia-bench-{role}",
                                timeout_s=self.settings.resilience.lambda_timeout_s, memory_limit_in_mb=self.memory_mb)
        self.counter.take_hook_time()
        logged_before = self.logs.bytes[role]
        with self.counter.acting_as(role):
            cpu0, wall0 = time.thread_time(), time.perf_counter()
            try:
                response = self.handlers[route](event, context)
            except Exception as error:  # noqa: BLE001 - an authorizer refuses by raising
                response = {"statusCode": 401, "error": str(error)}
            wall, cpu = time.perf_counter() - wall0, time.thread_time() - cpu0
        hook_cpu, hook_wall = self.counter.take_hook_time()
        body = response.get("body") if isinstance(response, dict) else None
        self.invocations.append(Invocation(
            role=role, wall_ms=(wall - hook_wall) * 1000, cpu_ms=(cpu - hook_cpu) * 1000,
            log_bytes=self.logs.bytes[role] - logged_before, frame_bytes=frame_bytes,
            reply_bytes=len(body.encode()) if replies and isinstance(body, str) else 0,
            status=int(response.get("statusCode", 200)) if isinstance(response, dict) else 200))
        return response

    def open_connection(self) -> Connection:
        from local_runtime.apigw_events import new_connection_id

        connection = Connection(new_connection_id(), int(time.time() * 1000))
        policy = self.invoke("authorizer", "$authorizer", connection.connect_event(self.token, authorizer_call=True),
                             replies=False)
        if "policyDocument" not in policy:
            raise RuntimeError(f"the authorizer refused the bench's token: {policy}")
        connection.authorizer = {**(policy.get("context") or {}), "principalId": policy.get("principalId", "")}
        # $connect's route has no route response: API Gateway sends its body to nobody.
        response = self.invoke("connect", "$connect", connection.connect_event(self.token), replies=False)
        if response.get("statusCode") != 200:
            raise RuntimeError(f"$connect refused: {response}")
        return connection

    def send(self, connection: Connection, text: str, conversation: str) -> str:
        frame = json.dumps({"action": "sendMessage", "conversationId": conversation,
                            "clientMessageId": uuid.uuid4().hex, "message": text}, ensure_ascii=False)
        response = self.invoke("sendMessage", "sendMessage", connection.message_event("sendMessage", frame),
                               frame_bytes=len(frame.encode()))
        reply = json.loads(response.get("body") or "{}")
        if reply.get("event") != "queued":
            raise RuntimeError(f"sendMessage was not queued: {reply}")
        return reply["jobId"]

    def ping(self, connection: Connection) -> None:
        frame = json.dumps({"action": "ping"})
        self.invoke("ping", "ping", connection.message_event("ping", frame), frame_bytes=len(frame.encode()))

    def disconnect(self, connection: Connection) -> None:
        self.invoke("disconnect", "$disconnect", connection.disconnect_event(), replies=False)


def _metrics_of_its_own(metrics_class: type) -> type:
    """Powertools' `Metrics` keeps one metric set per class, shared by its instances: the worker and
    the functions, separate processes when deployed, would flush each other's metrics here. The
    worker's get a class, and so a set, of their own."""
    return type("WorkerProcessMetrics", (metrics_class,), {
        "own_store": True, "_metrics": {}, "_dimensions": {}, "_metadata": {}, "_default_dimensions": {}})


class _WorkerThread:
    """The real worker (`build_worker`) on an event loop in a thread of its own, as `python -m worker` runs."""

    def __init__(self, settings, stream: LogBytes):
        from worker import telemetry
        from worker.app import build_worker

        if not getattr(telemetry.Metrics, "own_store", False):
            setattr(telemetry, "Metrics", _metrics_of_its_own(telemetry.Metrics))
        self.worker = build_worker(settings, health_path=f"/tmp/bench-aws-requests-{os.getpid()}")
        rebind_new_handlers(stream)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self.worker.run(),),
                                        name="worker-loop", daemon=True)

    def start(self) -> "_WorkerThread":
        self._thread.start()
        return self

    def done(self) -> int:
        return sum(self.worker.outcomes.values())

    def wait_for(self, count: int, timeout_s: float = ANSWER_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while self.done() < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the worker finished {self.worker.outcomes} of {count} jobs in {timeout_s} s")
            time.sleep(0.005)

    def stop(self, timeout_s: float = 60.0) -> None:
        """SIGTERM's path: stop taking jobs, let the open long poll end, flush the metrics."""
        self._loop.call_soon_threadsafe(self.worker.request_stop)
        self._thread.join(timeout_s)
        if not self._thread.is_alive():
            self._loop.close()


def measure(messages: int = 10, burst: bool = False, first_token_ms: int = 500, tokens_per_s: float = 45.0,
            answer_tokens: int | None = None, message_chars: int = 200) -> Measurement:
    """Send `messages` through the real sendMessage path, answer them with the real worker, and count
    (see the module docstring). Stands up and stops every server it needs."""
    saved_env = dict(os.environ)
    # As on Lambda, the functions' service name is set before any of our modules is imported (the
    # shared package's child loggers take their parent's name at import).
    os.environ.update(FUNCTION_ENV)
    from cloudia import chat
    from stacks.config import AppConfig
    from tests.support.aws_resources import create_resources
    from tests.support.cognito_tokens import mint
    from tests.support.servers import MotoServer, RedisServer
    from worker_throughput import start_fake_llm, start_gateway_stand_in

    answer_tokens = default_answer_tokens() if answer_tokens is None else answer_tokens
    config = AppConfig.from_context(json.loads((ROOT / "cdk.json").read_text())["context"])
    moto, redis = MotoServer().start(), RedisServer().start()
    fake_llm, fake_url = start_fake_llm(first_token_ms, tokens_per_s, answer_tokens)
    gateway, gateway_url = start_gateway_stand_in()
    os.environ.update(AWS_ENDPOINT_URL=moto.endpoint, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_DEFAULT_REGION=REGION, AWS_REGION=REGION)
    counter = AwsCallCounter().install()
    logs = LogBytes(counter)
    try:
        # The deployed resilience settings (cdk.json), with the users' limits out of the way.
        resilience = dataclasses.replace(config.resilience, rate_limit_per_minute=UNLIMITED,
                                         daily_token_budget=UNLIMITED, frame_rate_limit_per_minute=UNLIMITED)
        resources = create_resources(resilience, redis_url=redis.url)
        settings = dataclasses.replace(resources.settings, llm_provider="openai", llm_base_url=f"{fake_url}/v1",
                                       llm_api_key="bench", llm_model="fake", ws_management_endpoint=gateway_url)
        token = mint(resources.user_pool, USER)
        with stdout_counted(logs):
            from worker.telemetry import configure_logging

            configure_logging(DEPLOYED_LOG_LEVEL)
            from local_runtime.gateway import load_handlers

            chat.reload()
            handlers = load_handlers({**_settings_env(settings), **FUNCTION_ENV})
            rebind_new_handlers(logs)
            run = _Run(counter, logs, settings, handlers, token, config.function_memory_mb)
            _warm_up(run, settings, logs)
            measured = _measured_session(run, settings, logs, messages, burst, message_chars)
        gateway.terminate()
        pushed = int((gateway.communicate(timeout=10)[0] or "0").strip() or 0)
        names = table_names(settings)
        logical = {physical: name for name, physical in names.items()}
        stored: dict[str, list[int]] = defaultdict(list)
        for (table, key_text), _table in counter.created.items():
            size = counter._sizes.get((table, key_text), 0)
            if size:
                stored[logical.get(table, table)].append(size)
        return Measurement(
            mode="burst" if burst else "sequential", messages=messages, answered=measured["answered"],
            first_token_ms=first_token_ms, tokens_per_s=tokens_per_s, answer_tokens=answer_tokens,
            message_chars=message_chars, worker_concurrency=settings.resilience.worker_concurrency,
            worker_poll_wait_s=settings.worker_poll_wait_s, calls=list(counter.calls),
            invocations=[i for i in run.invocations if i.role in measured["roles_measured"]],
            worker_log_bytes=measured["worker_log_bytes"], worker_cpu_s=measured["worker_cpu_s"],
            job_hold_s=[counter.delete_times[r] - counter.receive_times[r]
                        for r in counter.delete_times if r in counter.receive_times and r in measured["receipts"]],
            outcomes=measured["outcomes"], stored_items=dict(stored), push_count_at_gateway=pushed,
            posts_delivered=counter.posts_delivered,
            dlq_url=settings.jobs_dlq_url, table_names=names)
    finally:
        counter.uninstall()
        if gateway.poll() is None:
            gateway.kill()
        fake_llm.terminate()
        fake_llm.wait(10)
        redis.stop()
        moto.stop()
        os.environ.clear()
        os.environ.update(saved_env)
        chat.reload()


def _warm_up(run: _Run, settings, logs: LogBytes) -> None:
    """One whole exchange first, uncounted: the handlers' and clients' caches warm, as on a warm Lambda."""
    warm_settings = dataclasses.replace(settings, worker_poll_wait_s=1)  # so that it stops at once
    warm = _WorkerThread(warm_settings, logs).start()
    connection = run.open_connection()
    run.send(connection, WARM_UP_MESSAGE, "bench-warm-up")
    warm.wait_for(1)
    run.ping(connection)
    run.disconnect(connection)
    warm.stop()
    run.invocations.clear()


def _measured_session(run: _Run, settings, logs: LogBytes, messages: int, burst: bool,
                      message_chars: int) -> dict:
    """The counted part: a new connection, the messages and their answers, pings, the worker's
    shutdown (its last metrics flush) and `$disconnect`."""
    from tests.support.cpu import own_cpu_s

    counter = run.counter
    counter.calls.clear()
    counter.created.clear()
    counter.receive_times.clear()
    counter.delete_times.clear()
    counter.window_open = True
    worker_logged_before = logs.bytes["worker"]
    worker = _WorkerThread(settings, logs)
    if not burst:
        worker.start()
        time.sleep(0.5)  # its first long poll is open, as a running worker's always is
    cpu0, main_cpu0, hook0 = own_cpu_s(), time.thread_time(), counter.worker_hook_cpu_s
    connection = run.open_connection()
    if burst:
        for n in range(messages):
            run.send(connection, _question(n + 1, message_chars), CONVERSATION)
        worker.start()
        worker.wait_for(messages)
        for _ in range(messages):
            run.ping(connection)
    else:
        for n in range(messages):
            run.send(connection, _question(n + 1, message_chars), CONVERSATION)
            worker.wait_for(n + 1)
            run.ping(connection)
    worker_cpu_s = (own_cpu_s() - cpu0) - (time.thread_time() - main_cpu0) \
        - (counter.worker_hook_cpu_s - hook0)
    receipts = set(counter.delete_times)
    worker.stop()
    run.disconnect(connection)
    counter.window_open = False
    outcomes = dict(worker.worker.outcomes)
    return {"answered": outcomes.get("answered", 0), "outcomes": outcomes, "worker_cpu_s": worker_cpu_s,
            "worker_log_bytes": logs.bytes["worker"] - worker_logged_before, "receipts": receipts,
            "roles_measured": {"authorizer", "connect", "sendMessage", "ping", "disconnect"}}


# -- printing -----------------------------------------------------------------------------------------
def describe_run(m: Measurement) -> str:
    how = "one at a time (each sent once the previous is answered)" if m.mode == "sequential" else \
        "in a burst (all sent first, then the worker starts)"
    answer_s = m.first_token_ms / 1000 + (m.answer_tokens / m.tokens_per_s if m.tokens_per_s else 0)
    return (f"{m.messages} messages of {m.message_chars} characters, {how}; fake LLM {m.first_token_ms} ms to the "
            f"first token, then {m.tokens_per_s:g} tokens/s, {m.answer_tokens}-token answers ({answer_s:.1f} s); "
            f"worker concurrency {m.worker_concurrency}, {m.worker_poll_wait_s} s long poll")


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(m: Measurement) -> None:
    print(f"AWS requests per answered message: {describe_run(m)}")
    print(f"  answered {m.answered} of {m.messages}; the worker's outcomes {m.outcomes}")
    table = m.by_operation()
    for role, title in (("sendMessage", "sendMessage function"), ("worker", "worker")):
        print(f"  {title}:")
        for (r, service, operation), row in sorted(table.items()):
            if r == role:
                extra = f"  ({row['errors']:.0f} refused by their condition)" if row["errors"] else ""
                print(f"    {service:<24} {operation:<26} {m.per_answer(row['calls']):6.1f}{extra}")
    print("  by service and operation (both):")
    merged: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for (_role, service, operation), row in table.items():
        merged[(service, operation)].update(row)
    services: dict[str, Counter] = defaultdict(Counter)
    for (service, operation), counts in sorted(merged.items()):
        services[service].update(counts)
        print(f"    {service} {operation} {m.per_answer(counts['calls']):.1f}")
    for service, counts in sorted(services.items()):
        print(f"    {service} total {m.per_answer(counts['calls']):.1f}")
    calls = sum(row["calls"] for row in merged.values())
    attempts = sum(row["attempts"] for row in merged.values())
    pushes = m.pushes()
    print(f"  total AWS requests per answer: {m.per_answer(calls):.1f} "
          f"(HTTP attempts {m.per_answer(attempts):.1f}; retries {m.per_answer(attempts - calls):.1f}), "
          f"of which @connections pushes {m.per_answer(len(pushes)):.1f}; "
          f"without them {m.per_answer(calls - len(pushes)):.1f}")
    by_event = Counter(c.frame_event for c in pushes)
    sizes = [c.payload_bytes for c in pushes]
    if pushes:
        print(f"  @connections pushes per answer: {m.per_answer(len(pushes)):.1f} ("
              + ", ".join(f"{event} {m.per_answer(n):.1f}" for event, n in sorted(by_event.items()))
              + f"); {statistics.mean(sizes):.0f} bytes on average, largest {max(sizes)} bytes "
              f"(the stand-in received {m.push_count_at_gateway} of the {m.posts_delivered} delivered, "
              "warm-up included)")
    writes = sum(c.write_units for c in m.per_message_calls())
    transactional = sum(c.write_units for c in m.per_message_calls() if c.transactional)
    reads = sum(c.read_units for c in m.per_message_calls())
    print(f"  DynamoDB capacity per answer, by the measured item sizes: {m.per_answer(writes):.1f} write units "
          f"({m.per_answer(transactional):.1f} of them transactional, counted double), "
          f"{m.per_answer(reads):.1f} read units")
    for table_name, sizes_ in sorted(m.stored_items.items()):
        print(f"    {table_name}: {m.per_answer(len(sizes_)):.1f} items stored per answer, "
              f"{statistics.mean(sizes_):.0f} bytes on average (largest {max(sizes_)})")
    sqs_billed = sum(c.billed_requests for c in m.per_message_calls() if c.service == "sqs")
    print(f"  SQS billed requests per answer (64 KB chunks): {m.per_answer(sqs_billed):.1f}")
    idle = Counter(("DLQ sweep" if c.queue_url == m.dlq_url else "empty long poll", c.operation)
                   for c in m.idle_calls())
    print("  not per message (a running worker's, per task and minute): "
          + (", ".join(f"{what} {operation} x{n}" for (what, operation), n in sorted(idle.items()))
             or "none in this run") + " during the run")
    session = []
    for role in ("authorizer", "connect", "ping", "disconnect"):
        runs = m.invocations_of(role)
        session.append(f"{role} {len(m.session_calls(role)) / max(1, len(runs)):.1f}")
    print("  AWS requests per invocation of the session's functions: " + ", ".join(session))
    print("Lambda handlers, warm, timed in this process (a local measurement; moto on loopback), median:")
    for role in ("sendMessage", "ping", "authorizer", "connect", "disconnect"):
        runs = m.invocations_of(role)
        if runs:
            print(f"  {role:<12} {_median([r.wall_ms for r in runs]):6.1f} ms wall, "
                  f"{_median([r.cpu_ms for r in runs]):6.1f} ms CPU, {_median([r.log_bytes for r in runs]):5.0f} "
                  f"log bytes, frame {_median([r.frame_bytes for r in runs]):.0f} B in, reply "
                  f"{_median([r.reply_bytes for r in runs]):.0f} B out, over {len(runs)}")
    holds = m.job_hold_s
    print(f"worker: {m.per_answer(m.worker_cpu_s) * 1000:.1f} CPU ms per job (this machine), "
          f"{m.per_answer(m.worker_log_bytes):.0f} log bytes per job, each job held its slot "
          f"{_median(holds):.2f} s (median receive -> delete over {len(holds)})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10)
    parser.add_argument("--burst", action="store_true", help="send them all first, then start the worker")
    parser.add_argument("--first-token-ms", type=int, default=500)
    parser.add_argument("--tokens-per-s", type=float, default=45.0)
    parser.add_argument("--answer-tokens", type=int, default=None,
                        help="each answer's length (default: the mean of the fake LLM's model profile)")
    parser.add_argument("--message-chars", type=int, default=200)
    args = parser.parse_args(argv)
    report(measure(args.messages, args.burst, args.first_token_ms, args.tokens_per_s, args.answer_tokens,
                   args.message_chars))


if __name__ == "__main__":
    main()
