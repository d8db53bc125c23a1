"""The local gateway speaks API Gateway WebSocket: event shapes, routes, the @connections API, limits.

The handlers here are small recording functions of the test (the gateway is what is under test);
the end-to-end tests run it with the deployed functions.
"""
from __future__ import annotations

import base64
import json
import uuid
import socket
import threading
import time

import boto3
import pytest
from botocore.config import Config
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.local.gateway_thread import GatewayThread

pytestmark = pytest.mark.timeout(60)


class Recorder:
    """Handlers that record every event and answer like the deployed functions do."""

    def __init__(self):
        self.events: list[dict] = []
        self.disconnected = threading.Event()
        self.slow_s = 0.0

    def handlers(self) -> dict:
        return {
            "$connect": self.connect,
            "$disconnect": self.disconnect,
            "sendMessage": self.send_message,
            "ping": self.default,
            "history": self.default,
            "resume": self.default,
            "$default": self.default,
        }

    def connect(self, event, context):
        self.events.append(event)
        token = (event.get("queryStringParameters") or {}).get("token")
        if token != "good":
            return {"statusCode": 401, "body": "Unauthorized"}
        return {"statusCode": 200}

    def disconnect(self, event, context):
        self.events.append(event)
        self.disconnected.set()
        return {"statusCode": 200}

    def send_message(self, event, context):
        self.events.append(event)
        frame = json.loads(event["body"])
        if frame.get("message") == "boom":
            raise RuntimeError("handler bug")
        time.sleep(self.slow_s)
        return {"statusCode": 200, "body": json.dumps({"event": "queued", "jobId": "job-1",
                                                       "remainingMs": context.get_remaining_time_in_millis()})}

    def default(self, event, context):
        self.events.append(event)
        route = event["requestContext"]["routeKey"]
        if route == "ping":
            return {"statusCode": 200, "body": json.dumps({"event": "pong"})}
        return {"statusCode": 200, "body": json.dumps({"event": "error", "message": f"unknown route {route}"})}

    def of_route(self, route: str) -> list[dict]:
        return [e for e in self.events if e["requestContext"]["routeKey"] == route]


@pytest.fixture
def recorder():
    return Recorder()


@pytest.fixture
def gateway(recorder):
    server = GatewayThread(recorder.handlers()).start()
    yield server
    server.stop()


def management(gateway: GatewayThread):
    return boto3.client(
        "apigatewaymanagementapi", endpoint_url=gateway.http, region_name="us-east-1",
        aws_access_key_id="local", aws_secret_access_key="local",
        config=Config(retries={"max_attempts": 1}),
    )


def receive(ws) -> dict:
    return json.loads(ws.recv(timeout=10))


def test_connect_builds_an_api_gateway_event_with_the_query_string(gateway, recorder):
    # GIVEN a client with a token WHEN it connects
    with connect(f"{gateway.ws}?token=good&lang=pt"):
        pass
    # THEN $connect saw the query string and an API Gateway request context
    event = recorder.of_route("$connect")[0]
    assert event["queryStringParameters"] == {"token": "good", "lang": "pt"}
    ctx = event["requestContext"]
    assert ctx["eventType"] == "CONNECT"
    assert ctx["stage"] == "local"
    assert ctx["identity"]["sourceIp"] == "127.0.0.1"
    assert len(base64.urlsafe_b64decode(ctx["connectionId"])) == 11
    for key in ("requestId", "domainName", "connectedAt", "requestTimeEpoch"):
        assert ctx[key]
    assert event["isBase64Encoded"] is False


def test_a_refused_connect_fails_the_handshake_with_the_handlers_status(gateway, recorder):
    # GIVEN a bad token WHEN the client connects THEN the handshake fails with 401 and no $disconnect runs
    with pytest.raises(InvalidStatus) as refused:
        connect(f"{gateway.ws}?token=bad")
    assert refused.value.response.status_code == 401
    assert recorder.of_route("$disconnect") == []
    assert gateway.gateway.connection_ids == []


def test_frames_are_routed_by_their_action_and_the_reply_is_sent_back(gateway, recorder):
    with connect(f"{gateway.ws}?token=good") as ws:
        # WHEN the client sends a message, a ping and a frame that is not JSON
        ws.send(json.dumps({"action": "sendMessage", "message": "hi"}))
        queued = receive(ws)
        ws.send(json.dumps({"action": "ping"}))
        pong = receive(ws)
        ws.send("not json")
        error = receive(ws)
        ws.send("[" * 15_000 + "]" * 15_000)  # JSON nested too deep for the parser, within 32 KB
        deep = receive(ws)
    # THEN each went to its route and its handler's body reached the client
    assert queued["event"] == "queued"
    assert 0 < queued["remainingMs"] <= 29_000  # the handler got a Lambda context with the 29 s deadline
    assert pong == {"event": "pong"}
    assert error["message"] == "unknown route $default"
    message_event = recorder.of_route("sendMessage")[0]
    assert message_event["requestContext"]["eventType"] == "MESSAGE"
    assert json.loads(message_event["body"]) == {"action": "sendMessage", "message": "hi"}
    assert recorder.of_route("$default")[0]["body"] == "not json"
    assert deep["message"] == "unknown route $default"  # it went to $default, which answers it


def test_a_slow_handler_does_not_hold_the_connections_other_frames(gateway, recorder):
    # GIVEN a sendMessage handler that takes a while
    recorder.slow_s = 1.5
    with connect(f"{gateway.ws}?token=good") as ws:
        # WHEN a ping follows the message
        ws.send(json.dumps({"action": "sendMessage", "message": "slow"}))
        ws.send(json.dumps({"action": "ping"}))
        # THEN the pong comes first, then the queued event
        assert receive(ws)["event"] == "pong"
        assert receive(ws)["event"] == "queued"


def test_a_failing_handler_gives_the_client_an_error_event_and_keeps_the_connection(gateway):
    with connect(f"{gateway.ws}?token=good") as ws:
        ws.send(json.dumps({"action": "sendMessage", "message": "boom"}))
        error = receive(ws)
        ws.send(json.dumps({"action": "ping"}))
        assert receive(ws) == {"event": "pong"}
    assert error["event"] == "error" and error["message"] == "Internal server error"


def test_post_to_connection_delivers_a_frame_and_unknown_connections_are_gone(gateway, recorder):
    api = management(gateway)
    with connect(f"{gateway.ws}?token=good") as ws:
        connection_id = recorder.of_route("$connect")[0]["requestContext"]["connectionId"]
        # WHEN the worker posts an answer to the connection through boto3
        api.post_to_connection(ConnectionId=connection_id, Data=json.dumps({"event": "answer", "jobId": "j"}).encode())
        # THEN the client receives exactly that frame
        assert receive(ws) == {"event": "answer", "jobId": "j"}
        # AND get_connection describes it as API Gateway does
        info = api.get_connection(ConnectionId=connection_id)
        assert info["Identity"]["SourceIp"] == "127.0.0.1"
        assert info["ConnectedAt"] <= info["LastActiveAt"]
    # WHEN the connection is gone THEN boto3 raises GoneException (the worker's signal to unregister it)
    recorder.disconnected.wait(5)
    with pytest.raises(api.exceptions.GoneException):
        api.post_to_connection(ConnectionId=connection_id, Data=b"{}")
    with pytest.raises(api.exceptions.GoneException):
        api.get_connection(ConnectionId=connection_id)


def test_delete_connection_closes_it_and_invokes_disconnect(gateway, recorder):
    api = management(gateway)
    with connect(f"{gateway.ws}?token=good") as ws:
        connection_id = recorder.of_route("$connect")[0]["requestContext"]["connectionId"]
        api.delete_connection(ConnectionId=connection_id)
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
    assert recorder.disconnected.wait(5)
    disconnect = recorder.of_route("$disconnect")[0]["requestContext"]
    assert disconnect["connectionId"] == connection_id
    assert disconnect["eventType"] == "DISCONNECT"


def test_a_frame_over_32_kb_gets_an_error_and_a_1009_close(gateway, recorder):
    with connect(f"{gateway.ws}?token=good", max_size=None) as ws:
        ws.send(json.dumps({"action": "sendMessage", "message": "x" * (33 * 1024)}))
        error = receive(ws)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
    assert error["event"] == "error" and "too large" in error["message"]
    assert closed.value.rcvd.code == 1009
    assert recorder.of_route("sendMessage") == []  # the handler never saw it
    assert recorder.disconnected.wait(5)


def test_idle_and_maximum_connection_time_close_with_going_away(recorder):
    # GIVEN a gateway whose idle timeout is 1 s and maximum connection time 2 s
    server = GatewayThread(recorder.handlers(), idle_timeout_s=1.0, max_connection_s=2.0).start()
    try:
        # WHEN a client stays idle THEN it is closed with 1001 and $disconnect runs
        with connect(f"{server.ws}?token=good") as idle:
            with pytest.raises(ConnectionClosed) as closed:
                idle.recv(timeout=10)
        assert closed.value.rcvd.code == 1001
        assert recorder.disconnected.wait(5)
        reason = recorder.of_route("$disconnect")[0]["requestContext"]["disconnectReason"]
        assert "idle" in reason
        # WHEN a client keeps talking THEN the maximum connection time still ends it
        with connect(f"{server.ws}?token=good") as busy:
            with pytest.raises(ConnectionClosed) as closed:
                for _ in range(100):
                    busy.send(json.dumps({"action": "ping"}))
                    busy.recv(timeout=5)
                    time.sleep(0.2)
        assert closed.value.rcvd.code == 1001
    finally:
        server.stop()
    reasons = [e["requestContext"]["disconnectReason"] for e in recorder.of_route("$disconnect")]
    assert any("maximum connection" in r for r in reasons)


def test_a_dead_connection_is_found_by_the_heartbeat_and_cleaned_up(recorder):
    # GIVEN a gateway pinging every 0.5 s and a client that completes the handshake, then never answers
    server = GatewayThread(recorder.handlers(), heartbeat_s=0.5).start()
    try:
        raw = socket.create_connection(("127.0.0.1", server.port))
        key = base64.b64encode(b"0123456789abcdef").decode()
        raw.sendall((f"GET /ws?token=good HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                     f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        assert b"101" in raw.recv(1024).split(b"\r\n")[0]
        # THEN the gateway drops it and invokes $disconnect for it
        assert recorder.disconnected.wait(10)
        assert server.gateway.connection_ids == []
        raw.close()
    finally:
        server.stop()
    assert recorder.of_route("$disconnect")[0]["requestContext"]["disconnectReason"] == "Connection lost"


def test_dev_token_signs_a_user_of_the_local_pool_in_and_config_json_names_the_pool(recorder, resources):
    import urllib.error
    import urllib.request

    from cloudia import auth

    # GIVEN a gateway for a deployment with the emulator's user pool
    pool = resources.user_pool
    server = GatewayThread(recorder.handlers(), env={**pool.env(), "AWS_ENDPOINT_URL": pool.endpoint}).start()
    try:
        # WHEN the page asks for a token for a new user THEN the pool signs them in, and the token
        # verifies as theirs with the functions' own check
        user = f"alice-{uuid.uuid4().hex[:6]}"
        with urllib.request.urlopen(f"{server.http}/dev/token?user={user}", timeout=5) as response:
            issued = json.load(response)
        assert auth.verify_token(issued["token"], auth.user_pool(resources.settings)) == issued["userId"]
        # AND a name that cannot be a user is refused with a reason
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{server.http}/dev/token?user=a%20b", timeout=5)
        assert refused.value.code == 400
        # AND config.json gives the page its endpoints, the same keys as on AWS
        with urllib.request.urlopen(f"{server.http}/config.json", timeout=5) as response:
            config = json.load(response)
        assert config == {"websocketUrl": f"ws://localhost:{server.port}/ws", "region": "us-east-1",
                          "userPoolId": pool.pool_id, "userPoolClientId": pool.client_id,
                          "cognitoEndpoint": pool.endpoint.rstrip("/") + "/"}
    finally:
        server.stop()


def test_the_chat_page_and_its_assets_are_served(gateway):
    import urllib.request

    with urllib.request.urlopen(f"{gateway.http}/", timeout=5) as response:
        page = response.read().decode()
    assert 'src="app.js"' in page and 'href="style.css"' in page
    # At the site root, as CloudFront serves them on AWS
    with urllib.request.urlopen(f"{gateway.http}/app.js", timeout=5) as response:
        assert "sendMessage" in response.read().decode()
    with urllib.request.urlopen(f"{gateway.http}/style.css", timeout=5) as response:
        assert response.status == 200


def test_the_authorizer_runs_before_connect_and_its_context_rides_on_every_event(recorder):
    # GIVEN a deployment with a REQUEST authorizer on $connect, as on AWS
    authorized: list[dict] = []

    def authorizer(event, context):
        authorized.append(event)
        if (event.get("queryStringParameters") or {}).get("token") != "good":
            raise Exception("Unauthorized")
        return {"principalId": "alice", "context": {"userId": "alice"},
                "policyDocument": {"Version": "2012-10-17", "Statement": [
                    {"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": event["methodArn"]}]}}

    server = GatewayThread({**recorder.handlers(), "$authorizer": authorizer}).start()
    try:
        # WHEN a bad token connects THEN the authorizer refuses it with 401 and $connect never runs
        with pytest.raises(InvalidStatus) as refused:
            connect(f"{server.ws}?token=bad")
        assert refused.value.response.status_code == 401
        assert recorder.of_route("$connect") == []
        # WHEN a good token connects and sends a message
        with connect(f"{server.ws}?token=good") as ws:
            ws.send(json.dumps({"action": "sendMessage", "message": "hi"}))
            receive(ws)
    finally:
        server.stop()
    # THEN the authorizer saw a REQUEST event for $connect, and its context reached every later event
    assert authorized[-1]["type"] == "REQUEST" and authorized[-1]["methodArn"].endswith("/$connect")
    for route in ("$connect", "sendMessage", "$disconnect"):
        assert recorder.of_route(route)[0]["requestContext"]["authorizer"] == {"userId": "alice",
                                                                              "principalId": "alice"}


def test_stopping_the_gateway_closes_each_connection_with_its_disconnect(recorder):
    # GIVEN a connected client
    server = GatewayThread(recorder.handlers()).start()
    ws = connect(f"{server.ws}?token=good")
    try:
        # WHEN the gateway stops
        server.stop()
        # THEN the client is told it is going away, and $disconnect ran for its connection
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd.code == 1001
    finally:
        ws.close()
    assert [e["requestContext"]["disconnectReason"] for e in recorder.of_route("$disconnect")] == ["Going away"]
