"""Per-user bounds beyond messages (issue 13): a cap on a user's open connections, refusing the next
`$connect` with a reason, and a rate limit on `ping`/`history` frames answered with a reason and a
retry-after, so one user cannot spend the stage-wide throttle for everyone."""
from __future__ import annotations

import dataclasses
import math
import threading
import time
import types

import pytest

from cloudia import limits
from cloudia.history import USER
from cloudia.schema import connection_key
from tests.functions.conftest import lambda_context, body_of, connect_event, disconnect_event

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")


def with_resilience(functions_with, settings, **changes):
    return functions_with(resilience=dataclasses.replace(settings.resilience, **changes))


def connect(functions, connection_id: str, user: str = "alice") -> dict:
    return functions.connect.handler(connect_event(connection_id, functions.token(user)), lambda_context())


def connect_on_aws(functions, connection_id: str, user: str = "alice") -> dict:
    return functions.connect.handler(connect_event(connection_id, authorizer={"userId": user}), lambda_context())


def disconnect(functions, connection_id: str) -> dict:
    return functions.disconnect.handler(disconnect_event(connection_id), lambda_context())


@pytest.fixture
def clock(monkeypatch):
    """The limits' clock, frozen at 15 s into a minute (the window is the UTC minute) and movable."""
    now = [(math.floor(time.time() / 60) + 1) * 60 + 15.0]
    fake = types.SimpleNamespace(time=lambda: now[0], gmtime=time.gmtime, strftime=time.strftime)
    monkeypatch.setattr(limits, "time", fake)
    return now


# -- connections ---------------------------------------------------------------------------------------
def test_the_connection_past_the_default_cap_is_refused_with_a_reason(functions):
    cap = 10  # the default (cloudia/settings.py), checked at the end
    # GIVEN alice with as many connections open as the cap
    opened = [functions.open_connection("alice") for _ in range(cap)]
    # WHEN she opens one more
    response = connect(functions, "conn-over=")
    # THEN it is refused with a reason and a message a person understands, and is not registered
    assert response["statusCode"] == 429
    event = body_of(response)
    assert event["event"] == "error" and event["reason"] == "too_many_connections"
    assert f"at most {cap}" in event["message"]
    assert functions.redis.exists(connection_key("conn-over=")) == 0
    assert sorted(functions.service.connections.connections_of("alice")) == sorted(opened)
    # AND another user is not affected
    assert connect(functions, "conn-bob=", "bob")["statusCode"] == 200
    assert functions.settings.resilience.max_connections_per_user == cap


def test_a_closed_or_expired_connection_frees_its_place(functions_with, settings):
    functions = with_resilience(functions_with, settings, max_connections_per_user=2)
    first, second = functions.open_connection("alice"), functions.open_connection("alice")
    assert connect(functions, "conn-3=")["statusCode"] == 429
    # WHEN one disconnects THEN a new one is accepted, and the cap holds again
    disconnect(functions, first)
    assert connect(functions, "conn-3=")["statusCode"] == 200
    assert connect(functions, "conn-4=")["statusCode"] == 429
    # WHEN one's registration expires (its TTL: no ping for 2 h, no $disconnect) THEN its place is free
    functions.redis.pexpire(connection_key(second), 1)
    time.sleep(0.05)
    assert connect(functions, "conn-4=")["statusCode"] == 200
    assert sorted(functions.service.connections.connections_of("alice")) == ["conn-3=", "conn-4="]


def test_a_page_that_reconnects_again_and_again_is_never_refused(functions):
    # Each reconnect's $disconnect frees the place the next $connect takes.
    connection = functions.open_connection("alice")
    for n in range(3 * functions.settings.resilience.max_connections_per_user):
        disconnect(functions, connection)
        connection = functions.open_connection("alice")
    assert functions.service.connections.connections_of("alice") == [connection]


def test_concurrent_connects_admit_exactly_the_cap(functions):
    cap = functions.settings.resilience.max_connections_per_user
    start = threading.Barrier(2 * cap)
    statuses = {}

    def open_one(n):
        start.wait(timeout=30)
        statuses[n] = connect_on_aws(functions, f"conn-burst-{n}=")["statusCode"]

    threads = [threading.Thread(target=open_one, args=(n,)) for n in range(2 * cap)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(statuses.values()) == [200] * cap + [429] * cap
    assert len(functions.service.connections.connections_of("alice")) == cap


# -- ping and history frames ---------------------------------------------------------------------------
def ping(functions, connection):
    return functions.send(connection, {"action": "ping"}, route_key="ping")


def history(functions, connection):
    return functions.send(connection, {"action": "history", "conversationId": "conv-1"}, route_key="history")


def test_ping_and_history_past_the_frame_limit_are_refused_with_a_retry_after(functions_with, settings, clock):
    functions = with_resilience(functions_with, settings, frame_rate_limit_per_minute=5)
    functions.service.history.append("alice", "conv-1", "job-1", USER, "q1", created_at_ms=1000)
    alice, bob = functions.open_connection("alice"), functions.open_connection("bob")
    # GIVEN alice's pings and history requests, counted together, up to the limit
    answered = [ping(functions, alice), history(functions, alice), ping(functions, alice),
                history(functions, alice), ping(functions, alice)]
    assert [r["statusCode"] for r in answered] == [200] * 5
    # WHEN she sends one more of either within the minute
    for action, response in (("ping", ping(functions, alice)), ("history", history(functions, alice))):
        # THEN it is refused with the reason, the frame's action and when to try again (the next
        # minute, 45 s away)
        assert response["statusCode"] == 429
        event = body_of(response)
        assert event["event"] == "error" and event["reason"] == "rate_limited" and event["action"] == action
        assert event["retryAfter"] == 45
        assert "at most 5 a minute" in event["message"] and "45 s" in event["message"]
    # AND bob is not affected, nor alice's messages (their own limit)
    assert body_of(ping(functions, bob)) == {"event": "pong"}
    sent = functions.send(alice, {"action": "sendMessage", "conversationId": "conv-1", "clientMessageId": "m-1",
                                  "message": "still there?"})
    assert body_of(sent)["event"] == "queued"
    # AND in the next minute she is answered again
    clock[0] += 45
    assert body_of(ping(functions, alice)) == {"event": "pong"}
    assert body_of(history(functions, alice))["event"] == "history"


def test_a_rate_limited_history_request_reads_no_history(functions_with, settings, clock, monkeypatch):
    functions = with_resilience(functions_with, settings, frame_rate_limit_per_minute=1)
    alice = functions.open_connection("alice")
    assert history(functions, alice)["statusCode"] == 200
    reads = []
    monkeypatch.setattr(functions.service.history, "since", lambda *a, **k: reads.append(a) or [])
    assert history(functions, alice)["statusCode"] == 429
    assert reads == []


def test_a_normal_page_never_meets_the_default_frame_limit(functions, clock):
    # Ten tabs of one person, each pinging every 30 s and asking for the history once, in one minute.
    resilience = functions.settings.resilience
    tabs = [functions.open_connection("alice") for _ in range(resilience.max_connections_per_user)]
    responses = []
    for tab in tabs:
        responses.append(history(functions, tab))
        responses += [ping(functions, tab), ping(functions, tab)]
    assert {r["statusCode"] for r in responses} == {200}
    assert resilience.frame_rate_limit_per_minute >= len(responses)
