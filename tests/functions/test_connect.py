"""$connect, the authorizer and $disconnect: who may connect, and the registration in Redis."""
from __future__ import annotations

import pytest

from cloudia.schema import connection_key
from tests.functions.conftest import (
    lambda_context,
    authorizer_event,
    body_of,
    connect_event,
    disconnect_event,
)

def test_connect_with_a_valid_token_registers_the_user_with_the_connection_ttl(functions):
    # GIVEN a token for alice
    token = functions.token("alice")
    # WHEN she connects with it
    response = functions.connect.handler(connect_event("conn-1=", token), lambda_context())
    # THEN she is accepted and her connection is registered with the connection TTL
    assert response["statusCode"] == 200
    assert body_of(response) == {"event": "connected", "userId": "alice"}
    assert functions.service.connections.connections_of("alice") == ["conn-1="]
    ttl_s = functions.redis.ttl(connection_key("conn-1="))
    assert 0 < ttl_s <= functions.settings.resilience.connection_ttl_s


@pytest.mark.parametrize("token, reason", [
    (None, "token_missing"),
    ("", "token_missing"),
    ("not-a-jwt", "token_invalid"),
])
def test_connect_without_a_valid_token_is_refused(functions, token, reason):
    # GIVEN no token, or garbage WHEN connecting
    response = functions.connect.handler(connect_event("conn-x=", token), lambda_context())
    # THEN the connection is refused with the reason, and nothing is registered
    assert response["statusCode"] == 401
    assert body_of(response)["event"] == "error"
    assert body_of(response)["reason"] == reason
    assert functions.service.connections.user_of("conn-x=") is None


def test_connect_with_an_expired_token_is_refused_and_told_why(functions):
    # GIVEN a token that expired a minute ago
    expired = functions.token("alice", ttl_s=-60)
    # WHEN connecting with it
    response = functions.connect.handler(connect_event("conn-e=", expired), lambda_context())
    # THEN refused, and the message says it expired
    assert response["statusCode"] == 401
    body = body_of(response)
    assert body["reason"] == "token_expired"
    assert "expired" in body["message"]
    assert functions.service.connections.user_of("conn-e=") is None


def test_connect_takes_the_user_from_the_authorizer_context_on_aws(functions):
    # GIVEN API Gateway already ran the authorizer (no token is checked again)
    event = connect_event("conn-a=", token=None, authorizer={"userId": "bob"})
    # WHEN $connect runs
    response = functions.connect.handler(event, lambda_context())
    # THEN bob is registered
    assert response["statusCode"] == 200
    assert functions.service.connections.user_of("conn-a=") == "bob"


def test_authorizer_allows_a_valid_token_for_the_method_arn_with_the_user_in_its_context(functions):
    event = authorizer_event("conn-z=", functions.token("carol"))
    policy = functions.authorizer.handler(event, lambda_context())
    assert policy["principalId"] == "carol"
    assert policy["context"] == {"userId": "carol"}
    [statement] = policy["policyDocument"]["Statement"]
    assert statement == {"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": event["methodArn"]}


@pytest.mark.parametrize("token_of", [lambda f: None, lambda f: "garbage", lambda f: f.token("carol", ttl_s=-1)])
def test_authorizer_denies_a_missing_invalid_or_expired_token_as_api_gateway_expects(functions, token_of):
    event = authorizer_event("conn-z=", token_of(functions))
    with pytest.raises(Exception, match="^Unauthorized$"):
        functions.authorizer.handler(event, lambda_context())


def test_disconnect_unregisters_and_is_idempotent(functions):
    # GIVEN alice with two connections
    first = functions.open_connection("alice")
    second = functions.open_connection("alice")
    # WHEN the first disconnects, twice (API Gateway may deliver $disconnect again)
    responses = [functions.disconnect.handler(disconnect_event(first), lambda_context()) for _ in range(2)]
    # THEN both succeed, and only the second connection remains hers
    assert [r["statusCode"] for r in responses] == [200, 200]
    assert functions.service.connections.connections_of("alice") == [second]
    assert functions.redis.exists(connection_key(first)) == 0


def test_disconnect_of_a_connection_never_registered_succeeds(functions):
    response = functions.disconnect.handler(disconnect_event("never-seen="), lambda_context())
    assert response["statusCode"] == 200
    assert body_of(response) == {"event": "disconnected"}


def test_connect_while_redis_is_down_is_refused_with_a_controlled_error(functions_with, own_redis):
    functions = functions_with(redis_url=own_redis.url)
    own_redis.stop()
    response = functions.connect.handler(connect_event("conn-r=", functions.token("alice")), lambda_context())
    assert response["statusCode"] == 503
    assert body_of(response)["reason"] == "session_store_unavailable"
