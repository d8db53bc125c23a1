"""The gateway's other way to run the functions: the Lambda Invoke API, for an emulator that runs
Lambda code. moto cannot (it needs Docker), so a small real HTTP server here speaks the Invoke API
(`POST /2015-03-31/functions/{name}/invocations`) and runs a handler per function name."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from local_runtime.gateway import lambda_handlers
from tests.local.gateway_thread import GatewayThread

pytestmark = pytest.mark.timeout(60)


class LambdaService:
    """Lambda's Invoke API over HTTP: unhandled errors come back as `X-Amz-Function-Error`."""

    def __init__(self, functions: dict):
        self.functions = functions
        self.invoked: list[tuple[str, dict]] = []
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                name = unquote(self.path.split("/functions/")[1].split("/")[0])
                event = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                service.invoked.append((name, event))
                headers = {}
                try:
                    result = service.functions[name](event)
                except Exception as exc:  # noqa: BLE001 - what the Lambda runtime reports
                    result = {"errorMessage": str(exc), "errorType": type(exc).__name__}
                    headers["X-Amz-Function-Error"] = "Unhandled"
                body = json.dumps(result).encode()
                self.send_response(200)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://localhost:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self):
        self._server.shutdown()


def allow(event):
    if (event.get("queryStringParameters") or {}).get("token") != "good":
        raise Exception("Unauthorized")
    return {"principalId": "dana", "context": {"userId": "dana"},
            "policyDocument": {"Statement": [{"Effect": "Allow", "Resource": event["methodArn"]}]}}


def test_the_gateway_calls_the_deployed_functions_through_the_lambda_invoke_api(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    # GIVEN deployed functions behind the Invoke API
    lambdas = LambdaService({
        "fn-authorizer": allow,
        "fn-connect": lambda event: {"statusCode": 200},
        "fn-disconnect": lambda event: {"statusCode": 200},
        "fn-send": lambda event: {"statusCode": 200, "body": json.dumps(
            {"event": "queued", "jobId": "j-1", "user": event["requestContext"]["authorizer"]["userId"]})},
        "fn-default": lambda event: {"statusCode": 200, "body": json.dumps({"event": "pong"})},
    })
    names = {"authorizer": "fn-authorizer", "connect": "fn-connect", "disconnect": "fn-disconnect",
             "send_message": "fn-send", "default": "fn-default"}
    server = GatewayThread(lambda_handlers(lambdas.endpoint, names)).start()
    try:
        # WHEN the authorizer function fails with "Unauthorized" THEN the handshake gets 401
        with pytest.raises(InvalidStatus) as refused:
            connect(f"{server.ws}?token=bad")
        assert refused.value.response.status_code == 401
        # WHEN an authorized client sends frames THEN each reaches its function and the reply comes back
        with connect(f"{server.ws}?token=good") as ws:
            ws.send(json.dumps({"action": "sendMessage", "message": "hi"}))
            assert json.loads(ws.recv(timeout=10)) == {"event": "queued", "jobId": "j-1", "user": "dana"}
            ws.send(json.dumps({"action": "ping"}))
            assert json.loads(ws.recv(timeout=10)) == {"event": "pong"}
    finally:
        server.stop()
        lambdas.stop()
    invoked = [name for name, _ in lambdas.invoked]
    assert invoked[:3] == ["fn-authorizer", "fn-authorizer", "fn-connect"]
    assert {"fn-send", "fn-default", "fn-disconnect"} <= set(invoked)
