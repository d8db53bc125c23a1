"""The local gateway's bounds, as API Gateway's: the 128 KB message quota on route replies, a client that
does not keep up is shed (and the gateway's memory stays flat), and no token in its logs.

The handlers are `SizedReplies` (the gateway is what is under test). The memory and log tests run the
gateway in its own process, as `make up` does, and read its RSS from /proc and its log file.
"""
from __future__ import annotations

import base64
import json
import logging
import secrets
import socket
import time

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from local_runtime.gateway import MAX_PAYLOAD_BYTES, MAX_PENDING_SEND_BYTES
from tests.local.gateway_thread import GatewayProcess, GatewayThread, SizedReplies

pytestmark = pytest.mark.timeout(60)

KB = 1024


def receive(ws, timeout: float = 10) -> dict:
    return json.loads(ws.recv(timeout=timeout))


def history(ws, size: int, **extra) -> None:
    ws.send(json.dumps({"action": "history", "bytes": size, **extra}))


# ---------- a client that never reads: a raw socket, a tiny receive window ----------
def raw_client(port: int, token: str, rcvbuf: int = 16 * KB) -> socket.socket:
    """A WebSocket client that completes the handshake and will never read a frame."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: the window it offers
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(secrets.token_bytes(16)).decode()
    sock.sendall((f"GET /ws?token={token} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def client_frame(text: str) -> bytes:
    """A masked text frame, as a client sends it (payloads under 64 KB)."""
    payload = text.encode()
    mask = secrets.token_bytes(4)
    size = len(payload)
    header = bytes([0x81, 0x80 | size]) if size < 126 else bytes([0x81, 0x80 | 126]) + size.to_bytes(2, "big")
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def flood(sock: socket.socket, frames: int, reply_bytes: int, pace_s: float = 0.0) -> int:
    """Send `frames` history frames, one each `pace_s`, without reading a byte; how many went before
    the gateway cut it."""
    frame = client_frame(json.dumps({"action": "history", "bytes": reply_bytes}))
    for sent in range(frames):
        try:
            sock.sendall(frame)
        except OSError:  # reset by the gateway: it was shed
            return sent
        if pace_s:
            time.sleep(pace_s)
    return frames


@pytest.fixture
def recorder():
    return SizedReplies()


# ---------- 1. the 128 KB message quota on route replies ----------
def test_a_route_reply_over_128_kb_is_refused_as_api_gateway_does_and_one_within_it_is_delivered(recorder, caplog):
    caplog.set_level(logging.ERROR, logger="cloudia.gateway")
    server = GatewayThread(recorder.handlers()).start()
    try:
        with connect(f"{server.ws}?token=good", max_size=None) as ws:
            connection_id = recorder.of_route("$connect")[0]["requestContext"]["connectionId"]
            # WHEN a route replies with exactly 128 KB THEN the client gets it whole
            history(ws, MAX_PAYLOAD_BYTES)
            assert len(ws.recv(timeout=10).encode()) == MAX_PAYLOAD_BYTES
            # WHEN a route replies with one byte more, or with the 202,502 bytes of issue 13
            refused = []
            for size in (MAX_PAYLOAD_BYTES + 1, 202_502):
                history(ws, size)
                refused.append(receive(ws))
            # THEN neither is delivered: the client gets API Gateway's error frame for a failed
            # integration, naming its connection and the request
            request_ids = [e["requestContext"]["requestId"] for e in recorder.of_route("history")[1:]]
            assert refused == [{"message": "Internal server error", "connectionId": connection_id,
                                "requestId": rid} for rid in request_ids]
            # AND the connection stays open
            ws.send(json.dumps({"action": "ping"}))
            assert receive(ws) == {"event": "pong"}
    finally:
        server.stop()
    # AND the gateway logged each refusal, with its size
    refusals = [r.getMessage() for r in caplog.records if "not delivered" in r.getMessage()]
    assert len(refusals) == 2 and str(MAX_PAYLOAD_BYTES + 1) in refusals[0] and "202502" in refusals[1]


# ---------- 2. frames in flight ----------
def test_a_client_past_the_bound_on_frames_in_flight_is_closed_and_one_at_it_is_not(recorder):
    # GIVEN a gateway allowing 4 frames in flight per connection, and handlers that hold until released
    server = GatewayThread(recorder.handlers(), max_frames_in_flight=4).start()
    recorder.release.clear()
    try:
        with connect(f"{server.ws}?token=good") as steady, connect(f"{server.ws}?token=good") as flooder:
            # WHEN one client has 4 frames in flight, and another sends a 5th while its 4 are held
            for _ in range(4):
                history(steady, 100, hold=True)
            for _ in range(5):
                history(flooder, 100, hold=True)
            # THEN the second is closed with 1008 and says why
            with pytest.raises(ConnectionClosed) as closed:
                flooder.recv(timeout=5)
            assert closed.value.rcvd.code == 1008
            assert "frames in flight" in closed.value.rcvd.reason
            # AND the first, within the bound, gets its 4 replies once the handlers return
            recorder.release.set()
            assert [receive(steady)["event"] for _ in range(4)] == ["history"] * 4
            steady.send(json.dumps({"action": "ping"}))
            assert receive(steady) == {"event": "pong"}
        # AND $disconnect ran for the shed connection with the code and reason
        assert wait_for(lambda: len(recorder.of_route("$disconnect")) == 2)
        shed = [e["requestContext"] for e in recorder.of_route("$disconnect")
                if e["requestContext"]["disconnectStatusCode"] == 1008]
        assert len(shed) == 1 and "frames in flight" in shed[0]["disconnectReason"]
    finally:
        recorder.release.set()
        server.stop()


# ---------- 3. the send queue of a client that does not read ----------
def test_a_client_that_stops_reading_is_closed_at_the_bound_on_its_pending_sends(recorder):
    # GIVEN a gateway whose only bound in reach is the send queue's (1 MiB, the default)
    server = GatewayThread(recorder.handlers(), max_frames_in_flight=10_000).start()
    sock = raw_client(server.port, "good")
    try:
        # WHEN a client asks for 200 replies of 100 KB (20 MB) and reads none
        flood(sock, 200, 100 * KB)
        # THEN once its socket's buffers are full and 1 MiB waits for it, it is closed
        assert wait_for(lambda: recorder.of_route("$disconnect"), 15), "the non-reading client was never closed"
        ctx = recorder.of_route("$disconnect")[0]["requestContext"]
        assert ctx["disconnectStatusCode"] == 1008
        assert ctx["disconnectReason"] == f"Slow reader: over {MAX_PENDING_SEND_BYTES} bytes pending"
        assert server.gateway.connection_ids == []
    finally:
        sock.close()
        server.stop()


# ---------- 4 and 5. the gateway as its own process: its memory and its log ----------
TOKEN = "eyJraWQiOiJsb2NhbCJ9." + base64.urlsafe_b64encode(secrets.token_bytes(48)).decode().rstrip("=") + ".sig"


@pytest.fixture(scope="module")
def gateway_process(tmp_path_factory):
    process = GatewayProcess(tmp_path_factory.mktemp("gateway") / "gateway.log", TOKEN).start()
    yield process
    process.stop()


# The bound on the gateway's growth, from the defaults, per shed connection: its send queue (1 MiB),
# its socket's user-space buffer (aiohttp writes at most 64 KB past the transport's high-water mark,
# plus one message of at most 128 KB), the replies of the handlers running for it (16 threads × 128 KB,
# each a str and its UTF-8 copy: 4 MiB) and its 64 frames in flight (small here): about 6 MiB, and
# the allocator's slack on top. Measured: +10 MB. Before the bounds, this probe grew it by 163 MB and
# the flooder was never closed.
MEMORY_BOUND_MB = 24


def test_a_non_reading_client_that_floods_is_closed_and_the_gateway_memory_stays_flat(gateway_process):
    gw = gateway_process
    reply_bytes = 120 * KB  # within the 128 KB quota: every one would be sent
    with connect(f"{gw.ws}?token={TOKEN}", max_size=None) as normal:
        # GIVEN a gateway that has served replies of this size already (its allocator warm)
        for _ in range(30):
            history(normal, reply_bytes)
            assert len(normal.recv(timeout=10)) == reply_bytes
        before_kb = gw.memory_kb("VmRSS")
        exact_peak = gw.reset_peak()
        # WHEN a client sends 600 history frames (72 MB of replies) at once and never reads, and then
        # another sends them one each 2 ms (its frames answered as they come, so only its replies pile up)
        closed_in_s = []
        for pace_s in (0.0, 0.002):
            flooder = raw_client(gw.port, TOKEN)
            try:
                started = time.monotonic()
                flood(flooder, 600, reply_bytes, pace_s)
                # AND a normal client on the same gateway goes on asking meanwhile
                answered = 0
                while time.monotonic() - started < 20 and (answered < 5 or gw.connections() > 1):
                    history(normal, reply_bytes)
                    assert len(normal.recv(timeout=10)) == reply_bytes
                    answered += 1
                # THEN the flooder is closed within seconds
                assert gw.connections() == 1, f"the non-reading client (one frame each {pace_s} s) was never closed"
                closed_in_s.append(round(time.monotonic() - started, 2))
            finally:
                flooder.close()
        peak_kb = gw.memory_kb("VmHWM")
        # AND the normal client was served throughout, and still is
        normal.send(json.dumps({"action": "ping"}))
        assert receive(normal) == {"event": "pong"}
    growth_mb = (peak_kb - before_kb) / 1024
    print(f"flooders closed in {closed_in_s} s; gateway RSS {before_kb / 1024:.0f} MB before, peak "
          f"{peak_kb / 1024:.0f} MB ({'reset' if exact_peak else 'since start'}): +{growth_mb:.1f} MB")
    # AND the gateway's peak memory grew by a few MB, not by the replies it was asked for
    assert growth_mb < MEMORY_BOUND_MB
    # AND each got its $disconnect with 1008: the paced one for its pending replies, the burst for
    # its frames in flight (or its replies, on a machine that answers 600 frames faster than they come)
    assert gw.wait_until(lambda: gw.log().count("recorded $disconnect") >= 2, 5)
    shed = [line for line in gw.log().splitlines() if "recorded $disconnect" in line and " 1008 " in line]
    assert len(shed) == 2, shed
    assert "frames in flight" in shed[0] or "Slow reader" in shed[0]
    assert "Slow reader" in shed[1]


def test_the_token_never_appears_in_the_gateway_log(gateway_process):
    gw = gateway_process
    wrong = TOKEN[:-3] + "bad"
    # GIVEN a client that connects with its token in the query string, as the page does, and talks
    with connect(f"{gw.ws}?token={TOKEN}&lang=pt") as ws:
        ws.send(json.dumps({"action": "ping"}))
        assert receive(ws) == {"event": "pong"}
    # AND one refused with another token
    with pytest.raises(InvalidStatus):
        connect(f"{gw.ws}?token={wrong}")
    # WHEN the gateway has written its access log lines for both
    # (aiohttp writes an access line once its response is done: the refused one's comes a moment later)
    assert gw.wait_until(lambda: "GET /ws?token=REDACTED HTTP/1.1\" 401" in gw.log()
                         and "GET /ws?token=REDACTED&lang=pt HTTP/1.1\" 101" in gw.log(), 10), gw.log()[-2000:]
    log = gw.log()
    # THEN neither token, nor any part of one, is in its log; the rest of the line is
    assert TOKEN not in log and wrong not in log and TOKEN.split(".")[1] not in log
    assert "GET /ws?token=REDACTED&lang=pt HTTP/1.1\" 101" in log
    assert "GET /ws?token=REDACTED HTTP/1.1\" 401" in log
    assert "connected " in log  # its own lines are there too


def wait_for(check, timeout_s: float = 5) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return bool(check())


def test_redaction_covers_the_shapes_a_token_takes():
    from local_runtime.gateway import redact

    line = ('127.0.0.1 "GET /ws?lang=pt&token=abc.def-ghi&access_token=x1 HTTP/1.1" 101 '
            f'"Referer: http://h/?id_token=zz#frag" bearer {TOKEN}')
    clean = redact(line)
    assert "abc.def-ghi" not in clean and "x1 " not in clean and "zz" not in clean and TOKEN not in clean
    assert "lang=pt&token=REDACTED&access_token=REDACTED HTTP/1.1" in clean
