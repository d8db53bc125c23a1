"""The authorizer and `$connect` against tokens of the emulator's Cognito user pool: the ones a user
gets by signing in are accepted; every other kind is refused with 401 and its reason in the log."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cloudia import auth
from local_runtime.identity import LocalUserPool, cognito
from tests.functions.conftest import lambda_context, authorizer_event, body_of, connect_event
from tests.support.cognito_tokens import emulator_signing_key, mint


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segments(token: str) -> list[str]:
    return token.split(".")


def _claims(token: str) -> dict:
    payload = _segments(token)[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


@pytest.fixture
def signed_in(functions):
    """A user of the deployment's pool, signed in as the page signs in: (tokens, their sub)."""
    pool = functions.user_pool
    user = f"user-{uuid.uuid4().hex[:8]}"
    pool.ensure_user(user)
    tokens = pool.sign_in(user)
    return tokens, _claims(tokens["AccessToken"])["sub"]


def _refused_by_both(functions, token: str, caplog) -> list[str]:
    """Try `token` with the authorizer (AWS) and `$connect` (local); both must refuse: the reasons."""
    with pytest.raises(Exception, match="^Unauthorized$"):
        functions.authorizer.handler(authorizer_event("conn-a=", token), lambda_context())
    authorizer_reason = next(r.reason for r in reversed(caplog.records) if r.getMessage() == "connection refused")
    caplog.clear()
    response = functions.connect.handler(connect_event("conn-c=", token), lambda_context())
    assert response["statusCode"] == 401
    assert functions.service.connections.user_of("conn-c=") is None
    return [authorizer_reason, body_of(response)["reason"]]


@pytest.mark.parametrize("kind", ["AccessToken", "IdToken"])
def test_a_signed_in_users_id_and_access_tokens_open_a_connection_as_their_sub(functions, signed_in, kind):
    tokens, sub = signed_in
    policy = functions.authorizer.handler(authorizer_event("conn-1=", tokens[kind]), lambda_context())
    assert policy["principalId"] == sub and policy["context"] == {"userId": sub}
    response = functions.connect.handler(connect_event("conn-2=", tokens[kind]), lambda_context())
    assert response["statusCode"] == 200
    assert functions.service.connections.user_of("conn-2=") == sub


def test_an_expired_token_is_refused_as_expired(functions, caplog):
    token = mint(functions.user_pool, "alice", ttl_s=-60)
    assert _refused_by_both(functions, token, caplog) == ["token_expired", "token_expired"]


def test_a_token_of_another_pool_is_refused(functions, caplog):
    # A real sign-in to a second pool of the same emulator (same signing key: only the issuer differs).
    client = cognito(functions.user_pool.endpoint)
    other_id = client.create_user_pool(PoolName=f"other-{uuid.uuid4().hex[:6]}")["UserPool"]["Id"]
    other_client = client.create_user_pool_client(UserPoolId=other_id, ClientName="web",
                                                  ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH"])
    other = LocalUserPool(functions.user_pool.endpoint, other_id, other_client["UserPoolClient"]["ClientId"])
    other.ensure_user("mallory")
    token = other.sign_in("mallory")["AccessToken"]
    assert _refused_by_both(functions, token, caplog) == ["token_invalid", "token_invalid"]


@pytest.mark.parametrize("kind", ["AccessToken", "IdToken"])
def test_a_token_issued_to_another_app_client_of_the_pool_is_refused(functions, caplog, kind):
    pool = functions.user_pool
    other_client = cognito(pool.endpoint).create_user_pool_client(
        UserPoolId=pool.pool_id, ClientName=f"other-{uuid.uuid4().hex[:6]}",
        ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH"])["UserPoolClient"]["ClientId"]
    user = f"user-{uuid.uuid4().hex[:8]}"
    pool.ensure_user(user)
    token = LocalUserPool(pool.endpoint, pool.pool_id, other_client).sign_in(user)[kind]
    assert _refused_by_both(functions, token, caplog) == ["token_invalid", "token_invalid"]


def test_a_tampered_payload_is_refused(functions, signed_in, caplog):
    tokens, _sub = signed_in
    header, _payload, signature = _segments(tokens["AccessToken"])
    forged_claims = {**_claims(tokens["AccessToken"]), "sub": "someone-else"}
    forged = ".".join([header, _b64(json.dumps(forged_claims).encode()), signature])
    assert _refused_by_both(functions, forged, caplog) == ["token_invalid", "token_invalid"]


def test_an_unsigned_alg_none_token_is_refused(functions, signed_in, caplog):
    tokens, _sub = signed_in
    header = _b64(json.dumps({"alg": "none", "kid": "dummy", "typ": "JWT"}).encode())
    unsigned = ".".join([header, _segments(tokens["AccessToken"])[1], ""])
    assert _refused_by_both(functions, unsigned, caplog) == ["token_invalid", "token_invalid"]


def test_an_hs256_token_signed_with_the_public_key_is_refused(functions, signed_in, caplog):
    # Algorithm confusion: HMAC "signed" with the pool's public key, which anyone can fetch.
    tokens, _sub = signed_in
    public_pem = emulator_signing_key().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = ".".join([_b64(json.dumps({"alg": "HS256", "kid": "dummy", "typ": "JWT"}).encode()),
                              _segments(tokens["AccessToken"])[1]])
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    confused = signing_input + "." + _b64(signature)
    assert _refused_by_both(functions, confused, caplog) == ["token_invalid", "token_invalid"]


@pytest.mark.parametrize("kid", ["dummy", "a-key-the-pool-never-had"])
def test_a_token_signed_by_a_key_not_in_the_pools_key_set_is_refused(functions, caplog, kid):
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = mint(functions.user_pool, "alice", key=stranger, headers={"kid": kid})
    assert _refused_by_both(functions, token, caplog) == ["token_invalid", "token_invalid"]


def test_a_refresh_token_sent_as_an_access_token_is_refused(functions, signed_in, caplog):
    tokens, _sub = signed_in
    assert _refused_by_both(functions, tokens["RefreshToken"], caplog) == ["token_invalid", "token_invalid"]


def test_a_token_of_another_use_is_refused(functions, caplog):
    token = mint(functions.user_pool, "alice", token_use="refresh", client_id=functions.settings.user_pool_client_id)
    assert _refused_by_both(functions, token, caplog) == ["token_invalid", "token_invalid"]


@pytest.mark.parametrize("jwks_url", ["https://keys.example.com/jwks.json", "http://10.0.0.8:4566/p/.well-known/jwks.json"])
def test_the_key_set_can_be_moved_only_to_a_loopback_emulator(settings, jwks_url):
    import dataclasses

    with pytest.raises(auth.IdentityNotConfigured, match="loopback"):
        auth.user_pool(dataclasses.replace(settings, cognito_jwks_url=jwks_url))


def test_without_an_override_the_key_set_is_the_pools_own_on_aws(settings):
    import dataclasses

    pool = auth.user_pool(dataclasses.replace(settings, user_pool_id="eu-west-1_AbC123", cognito_jwks_url=""))
    assert pool.issuer == "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC123"
    assert pool.jwks_url == pool.issuer + "/.well-known/jwks.json"


def test_the_key_set_is_fetched_once_per_process(functions, signed_in):
    tokens, _sub = signed_in
    auth._jwks_client.cache_clear()
    for connection in ("conn-k1=", "conn-k2=", "conn-k3="):
        assert functions.connect.handler(connect_event(connection, tokens["AccessToken"]),
                                         lambda_context())["statusCode"] == 200
    client = auth._jwks_client(functions.user_pool.jwks_url)
    assert auth._jwks_client.cache_info().misses == 1
    assert client.jwk_set_cache is not None and not client.jwk_set_cache.is_expired()
