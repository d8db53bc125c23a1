"""No zombie registrations: a frame still being handled when its connection's `$disconnect` runs must not
register the connection again (issue 13: 100 ping-then-close cycles left 92 registrations alive for 2 h).

On AWS the authorizer's user rides on every event, and the handlers register a connection whose
registration is missing (`heartbeat` for ping, `current_user` for sendMessage and history). The races are
made deterministic: the `$disconnect` lands before the handler reads the registry, or between the
handler's read (registration missing) and its write.
"""
from __future__ import annotations

import threading

import pytest

from cloudia.schema import connection_key, user_connections_key
from tests.functions.conftest import lambda_context, body_of, connect_event, disconnect_event

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

USER = "alice"
AUTHORIZER = {"userId": USER}
FRAMES = {
    "ping": ("ping", {"action": "ping"}),
    "sendMessage": ("sendMessage", {"action": "sendMessage", "conversationId": "conv-1",
                                    "clientMessageId": "m-1", "message": "hello"}),
    "history": ("history", {"action": "history", "conversationId": "conv-1"}),
}


def open_on_aws(functions, connection_id: str) -> str:
    """A connection as API Gateway opens it: the authorizer ran, `$connect` carries its user."""
    response = functions.connect.handler(connect_event(connection_id, authorizer=AUTHORIZER), lambda_context())
    assert response["statusCode"] == 200, response
    return connection_id


def disconnect(functions, connection_id: str) -> dict:
    return functions.disconnect.handler(disconnect_event(connection_id), lambda_context())


def in_flight(functions, connection_id: str, frame: str) -> dict:
    route, body = FRAMES[frame]
    return functions.send(connection_id, body, route_key=route, authorizer=AUTHORIZER)


def assert_not_registered(functions, connection_id: str) -> None:
    assert functions.redis.exists(connection_key(connection_id)) == 0, "the closed connection was registered again"
    assert functions.service.connections.connections_of(USER) == []


@pytest.mark.parametrize("frame", list(FRAMES))
def test_a_frame_handled_after_its_connections_disconnect_does_not_register_it_again(functions, frame):
    # GIVEN alice's connection, with a frame in flight when she closes it
    connection = open_on_aws(functions, "conn-race-1=")
    # WHEN its $disconnect runs before the frame's handler reads the registry
    assert disconnect(functions, connection)["statusCode"] == 200
    response = in_flight(functions, connection, frame)
    # THEN nothing is registered for it, and the frame is refused as from a closed connection
    assert_not_registered(functions, connection)
    assert functions.redis.smembers(user_connections_key(USER)) == set()
    assert response["statusCode"] == 401
    assert body_of(response)["reason"] == "connection_closed"
    # AND a sendMessage of it was not queued (the page resends it on its new connection)
    assert functions.queued_jobs() == []


@pytest.mark.parametrize("frame", list(FRAMES))
def test_a_disconnect_between_the_handlers_read_and_its_write_leaves_no_registration(functions, monkeypatch, frame):
    # GIVEN alice's connection whose registration expired while API Gateway kept it open
    connection = open_on_aws(functions, "conn-race-2=")
    functions.redis.delete(connection_key(connection))
    registry = functions.service.connections
    original = registry.register
    ran = []

    def disconnect_then_register(*args, **kwargs):
        # the handler read the registry (nothing there) and is about to register the connection again:
        # its $disconnect lands right now
        if not ran:
            ran.append(disconnect(functions, connection)["statusCode"])
        return original(*args, **kwargs)

    monkeypatch.setattr(registry, "register", disconnect_then_register)
    # WHEN a frame of it is handled with the disconnect landing between its read and its write
    response = in_flight(functions, connection, frame)
    # THEN the disconnect did run there, and the connection is not registered again
    assert ran == [200]
    assert_not_registered(functions, connection)
    assert response["statusCode"] == 401
    assert body_of(response)["reason"] == "connection_closed"


def test_a_hundred_ping_then_close_cycles_leave_no_registration(functions):
    # The probe: each client pings and closes at once; the gateway runs $disconnect first.
    for n in range(100):
        connection = open_on_aws(functions, f"conn-cycle-{n}=")
        disconnect(functions, connection)
        in_flight(functions, connection, "ping")
    assert functions.service.connections.connections_of(USER) == []
    assert functions.redis.smembers(user_connections_key(USER)) == set()
    assert not [key for key in functions.redis.scan_iter("conn:*")]


def test_concurrent_frames_and_disconnects_leave_no_registration(functions):
    # Real threads: for each connection a ping, a sendMessage, a history and its $disconnect race.
    connections = [open_on_aws(functions, f"conn-threads-{n}=") for n in range(10)]
    for connection in connections:
        functions.redis.delete(connection_key(connection))  # every frame's handler will want to register
    start = threading.Barrier(len(connections) * 4)
    errors = []

    def run(action):
        try:
            start.wait(timeout=30)
            action()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = []
    for n, connection in enumerate(connections):
        frames = [("ping", {"action": "ping"}),
                  ("sendMessage", {"action": "sendMessage", "conversationId": "c", "clientMessageId": f"m-{n}",
                                   "message": "hi"}),
                  ("history", {"action": "history", "conversationId": "c"})]
        for route, body in frames:
            threads.append(threading.Thread(target=run, args=(
                lambda c=connection, r=route, b=body: functions.send(c, b, route_key=r, authorizer=AUTHORIZER),)))
        threads.append(threading.Thread(target=run, args=(lambda c=connection: disconnect(functions, c),)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    # Whatever the interleaving, every connection is gone once its $disconnect ran.
    assert functions.service.connections.connections_of(USER) == []
    assert not [key for key in functions.redis.scan_iter("conn:*")]


def test_the_tombstone_outlives_any_handler_and_is_short_lived(functions):
    from cloudia.schema import connection_tombstone_key

    connection = open_on_aws(functions, "conn-tomb=")
    disconnect(functions, connection)
    resilience = functions.settings.resilience
    ttl_s = functions.redis.ttl(connection_tombstone_key(connection))
    # Longer than a frame can still be handled: a cold start's init (10 s) plus the function's timeout.
    assert resilience.lambda_timeout_s + 10 < ttl_s <= resilience.connection_tombstone_s
    # AND a $disconnect delivered again is still fine, and the user's next connection registers as usual
    assert disconnect(functions, connection)["statusCode"] == 200
    again = open_on_aws(functions, "conn-tomb-next=")
    assert functions.service.connections.connections_of(USER) == [again]


def test_a_ping_of_a_live_connection_still_renews_it_and_one_whose_registration_was_lost_is_registered(functions):
    # The fix refuses only closed connections: an open one whose registration was lost comes back.
    connection = open_on_aws(functions, "conn-live=")
    assert body_of(in_flight(functions, connection, "ping")) == {"event": "pong"}
    functions.redis.delete(connection_key(connection))
    assert body_of(in_flight(functions, connection, "ping")) == {"event": "pong", "resume": True}
    assert functions.service.connections.connections_of(USER) == [connection]
