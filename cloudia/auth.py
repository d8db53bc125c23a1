"""Connection tokens: an HS256 JWT whose `sub` is the user id, with an expiry.

The same code checks a token in the `$connect` authorizer on AWS and in `$connect` itself locally
(the local gateway has no authorizer). The signing secret is configuration locally and a Secrets
Manager secret (its plain `SecretString`) on AWS, fetched once per process.
"""
from __future__ import annotations

import re
import time

import jwt

from cloudia import aws
from cloudia.settings import Settings

ALGORITHM = "HS256"
DEFAULT_TOKEN_TTL_S = 3600
# A user id goes into Redis keys and the history partition key, so it keeps to a safe charset.
USER_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")


class AuthError(Exception):
    """The caller is not authenticated; the message says why, for the caller."""

    reason = "unauthenticated"


class TokenMissing(AuthError):
    reason = "token_missing"


class TokenExpired(AuthError):
    reason = "token_expired"


class TokenInvalid(AuthError):
    reason = "token_invalid"


class SigningSecretMissing(RuntimeError):
    """A deployment fault (no AUTH_SECRET nor AUTH_SECRET_ARN), not the caller's."""


def issue_token(user_id: str, secret: str, ttl_s: int = DEFAULT_TOKEN_TTL_S) -> str:
    if not USER_ID_PATTERN.fullmatch(user_id or ""):
        raise ValueError("a user id is 1-128 characters of letters, digits and _ . : @ -")
    now_s = int(time.time())
    return jwt.encode({"sub": user_id, "iat": now_s, "exp": now_s + ttl_s}, secret, algorithm=ALGORITHM)


def verify_token(token: str | None, secret: str) -> str:
    """The user id of a valid, unexpired token; raises an `AuthError` that says why otherwise."""
    if not token:
        raise TokenMissing("no token: connect with ?token=...")
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], options={"require": ["sub", "exp"]})
    except jwt.ExpiredSignatureError:
        raise TokenExpired("the token has expired: get a new one and reconnect") from None
    except jwt.InvalidTokenError as exc:
        raise TokenInvalid(f"invalid token: {exc}") from None
    user_id = claims["sub"]
    if not isinstance(user_id, str) or not USER_ID_PATTERN.fullmatch(user_id):
        raise TokenInvalid("invalid token: its subject is not a valid user id")
    return user_id


def signing_secret(settings: Settings) -> str:
    secret = aws.given_or_secret(settings.auth_secret, settings.auth_secret_arn)
    if secret is None:
        raise SigningSecretMissing("neither AUTH_SECRET nor AUTH_SECRET_ARN is set")
    return secret
