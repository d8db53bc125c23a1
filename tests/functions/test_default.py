"""The default function: `ping` (heartbeat), `history`/`resume`, and an error for any other frame."""
from __future__ import annotations

import json

import pytest

from cloudia.history import ASSISTANT, USER
from cloudia.schema import connection_key, user_connections_key
from tests.functions.conftest import body_of

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")


def test_ping_answers_pong_and_renews_the_connection_ttl(functions):
    # GIVEN alice's registration about to expire
    connection = functions.open_connection("alice")
    functions.redis.expire(connection_key(connection), 5)
    functions.redis.expire(user_connections_key("alice"), 5)
    # WHEN her client pings
    response = functions.send(connection, {"action": "ping"}, route_key="ping")
    # THEN it hears pong, and both keys live for the full connection TTL again
    assert response["statusCode"] == 200
    assert body_of(response) == {"event": "pong"}
    full_ttl_s = functions.settings.resilience.connection_ttl_s
    assert functions.redis.ttl(connection_key(connection)) > full_ttl_s - 5
    assert functions.redis.ttl(user_connections_key("alice")) > full_ttl_s - 5


def test_ping_from_an_expired_registration_asks_the_client_to_reconnect(functions):
    response = functions.send("expired-conn=", {"action": "ping"}, route_key="ping")
    assert response["statusCode"] == 401
    assert body_of(response)["reason"] == "unauthenticated"
    assert "reconnect" in body_of(response)["message"]


def test_ping_with_the_authorizer_user_registers_an_expired_connection_again(functions):
    response = functions.send("conn-aws=", {"action": "ping"}, route_key="ping", authorizer={"userId": "dave"})
    assert response["statusCode"] == 200
    assert functions.service.connections.connections_of("dave") == ["conn-aws="]
    # AND the pong tells the client to read the history it may have missed, only this once
    assert body_of(response) == {"event": "pong", "resume": True}
    again = functions.send("conn-aws=", {"action": "ping"}, route_key="ping", authorizer={"userId": "dave"})
    assert body_of(again) == {"event": "pong"}


@pytest.mark.parametrize("action", ["history", "resume"])
def test_history_returns_the_conversation_since_a_point(functions, action):
    # GIVEN alice's conversation: two questions, two answers, at known times
    history = functions.service.history
    for at_ms, job_id, role, text in [(1000, "job-1", USER, "q1"), (1500, "job-1", ASSISTANT, "a1"),
                                      (2000, "job-2", USER, "q2"), (2500, "job-2", ASSISTANT, "a2")]:
        history.append("alice", "conv-1", job_id, role, text, created_at_ms=at_ms)
    connection = functions.open_connection("alice")
    # WHEN her reconnected client asks for what came after the first answer
    response = functions.send(connection, {"action": action, "conversationId": "conv-1", "since": 1500},
                              route_key=action)
    # THEN it gets the later question and its answer, oldest first
    assert response["statusCode"] == 200
    event = body_of(response)
    assert event["event"] == "history" and event["conversationId"] == "conv-1"
    assert event["messages"] == [
        {"jobId": "job-2", "role": USER, "message": "q2", "at": 2000},
        {"jobId": "job-2", "role": ASSISTANT, "message": "a2", "at": 2500},
    ]


def test_history_without_since_returns_everything_and_only_the_users_own(functions):
    functions.service.history.append("alice", "conv-1", "job-1", USER, "mine", created_at_ms=1000)
    bob = functions.open_connection("bob")
    alice = functions.open_connection("alice")
    theirs = body_of(functions.send(bob, {"action": "history", "conversationId": "conv-1"}, route_key="history"))
    mine = body_of(functions.send(alice, {"action": "history", "conversationId": "conv-1"}, route_key="history"))
    assert theirs["messages"] == []
    assert [m["message"] for m in mine["messages"]] == ["mine"]


def test_a_send_message_frame_reaching_the_default_route_is_refused_not_queued(functions):
    # The sendMessage route's function alone has the grants to queue a job.
    connection = functions.open_connection("alice")
    frame = {"action": "sendMessage", "conversationId": "c", "clientMessageId": "m", "message": "hi"}
    response = functions.send(connection, frame, route_key="$default")
    assert response["statusCode"] == 400
    assert body_of(response)["reason"] == "unexpected_action"
    assert functions.queued_jobs() == []


@pytest.mark.parametrize("body, reason", [
    ("not json at all", "malformed_json"),
    ("42", "not_an_object"),
    (json.dumps({"action": "dance"}), "unknown_action"),
    (json.dumps({"hello": "world"}), "missing_action"),
    (json.dumps({"action": "history"}), "missing_field"),
    (json.dumps({"action": "history", "conversationId": "c", "since": -1}), "invalid_field"),
    (json.dumps({"action": "history", "conversationId": "c", "since": "yesterday"}), "invalid_field"),
    (None, "empty_frame"),
])
def test_any_other_frame_gets_an_error_event_that_says_why(functions, body, reason):
    connection = functions.open_connection("alice")
    response = functions.send(connection, body, route_key="$default")
    assert response["statusCode"] == 400
    event = body_of(response)
    assert event["event"] == "error" and event["reason"] == reason and event["message"]


def test_an_event_without_a_connection_id_is_an_error_not_a_crash(functions, ):
    from tests.functions.conftest import lambda_context

    for module in (functions.default, functions.send_message, functions.connect, functions.disconnect):
        response = module.handler({"body": "{}"}, lambda_context())
        assert response["statusCode"] == 400
        assert body_of(response)["reason"] == "missing_connection_id"
