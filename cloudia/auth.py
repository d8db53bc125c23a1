"""Connection tokens: Amazon Cognito user pool tokens (RS256), checked against the pool's key set.

The same code checks a token in the `$connect` authorizer on AWS and in `$connect` itself locally
(the local gateway has no authorizer). A token is accepted when its signature verifies with a key of
the pool's JWKS, it has not expired, its issuer is the pool, it is an ID or an access token, and it was
issued to the app client (`aud` for an ID token, `client_id` for an access token). The user id is the
token's `sub`.

The issuer is always the AWS one (`https://cognito-idp.{region}.amazonaws.com/{pool}`); only where the
key set is fetched from may change, and only to a loopback address (the local emulator serves the
pool's JWKS): no setting can make a deployed function trust another key set.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TypedDict
from urllib.parse import urlparse

import jwt

from cloudia.once import built_once
from cloudia.settings import Settings

ALGORITHMS = ["RS256"]
TOKEN_USES = ("id", "access")
# A user id goes into Redis keys and the history partition key, so it keeps to a safe charset.
USER_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")
# A Cognito pool id is "{region}_{id}".
POOL_ID_PATTERN = re.compile(r"^(?P<region>[a-z]{2}(-[a-z]+)+-\d)_[A-Za-z0-9]+$")
# The key set is fetched once per warm process and again only for a key id it does not hold.
JWKS_CACHE_S = 3600
JWKS_TIMEOUT_S = 3
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


class PasswordPolicy(TypedDict):
    """cognito-idp's PasswordPolicyType, the part the pool sets."""
    MinimumLength: int
    RequireUppercase: bool
    RequireLowercase: bool
    RequireNumbers: bool
    RequireSymbols: bool


# The pool's password policy (cognito-idp's shape), the same on both targets: the stacks give it to
# the aws pool, `make up` to the emulator's.
PASSWORD_POLICY: PasswordPolicy = {"MinimumLength": 12, "RequireUppercase": True, "RequireLowercase": True,
                                   "RequireNumbers": True, "RequireSymbols": True}


def user_pool_name(target: str, stage: str) -> str:
    """The user pool's name: the stacks create it on AWS, `make up` in the emulator."""
    return f"cloudia-{target}-{stage}-users"


class AuthError(Exception):
    """The caller is not authenticated; the message says why, for the caller."""

    reason = "unauthenticated"


class TokenMissing(AuthError):
    reason = "token_missing"


class TokenExpired(AuthError):
    reason = "token_expired"


class TokenInvalid(AuthError):
    reason = "token_invalid"


class IdentityNotConfigured(RuntimeError):
    """A deployment fault (no user pool, or a key set URL that is not loopback), not the caller's."""


@dataclass(frozen=True)
class UserPool:
    pool_id: str
    client_id: str
    jwks_url: str

    @property
    def region(self) -> str:
        match = POOL_ID_PATTERN.fullmatch(self.pool_id)
        if match is None:
            raise ValueError(f"not a Cognito user pool id: {self.pool_id!r}")
        return match["region"]

    @property
    def issuer(self) -> str:
        return f"https://cognito-idp.{self.region}.amazonaws.com/{self.pool_id}"


def user_pool(settings: Settings) -> UserPool:
    """The pool the deployment trusts, from its settings; raises `IdentityNotConfigured` if unusable."""
    pool_id, client_id = settings.user_pool_id, settings.user_pool_client_id
    if not POOL_ID_PATTERN.fullmatch(pool_id or "") or not client_id:
        raise IdentityNotConfigured("USER_POOL_ID ({region}_{id}) and USER_POOL_CLIENT_ID must be set")
    pool = UserPool(pool_id, client_id, "")
    jwks_url = settings.cognito_jwks_url or f"{pool.issuer}/.well-known/jwks.json"
    if settings.cognito_jwks_url and urlparse(jwks_url).hostname not in LOOPBACK_HOSTS:
        raise IdentityNotConfigured("COGNITO_JWKS_URL may only point at a local emulator (a loopback address)")
    return UserPool(pool_id, client_id, jwks_url)


@built_once(maxsize=4)
def _jwks_client(url: str) -> jwt.PyJWKClient:
    # Cached across warm invocations: one fetch per process, unless a token names an unknown key.
    return jwt.PyJWKClient(url, cache_jwk_set=True, lifespan=JWKS_CACHE_S, timeout=JWKS_TIMEOUT_S)


def verify_token(token: str | None, pool: UserPool) -> str:
    """The user id (`sub`) of a valid, unexpired token of `pool`'s app client; raises an `AuthError`
    that says why otherwise."""
    if not token:
        raise TokenMissing("no token: sign in and connect with ?token=...")
    try:
        signing_key = _jwks_client(pool.jwks_url).get_signing_key_from_jwt(token)
        claims = jwt.decode(token, signing_key.key, algorithms=ALGORITHMS, issuer=pool.issuer,
                            options={"require": ["sub", "exp", "iss", "token_use"], "verify_aud": False})
    except jwt.ExpiredSignatureError:
        raise TokenExpired("the token has expired: sign in again and reconnect") from None
    except jwt.PyJWKClientConnectionError as exc:
        raise IdentityNotConfigured(f"the user pool's key set cannot be fetched: {exc}") from None
    except (jwt.InvalidTokenError, jwt.PyJWKClientError) as exc:
        raise TokenInvalid(f"invalid token: {exc}") from None
    token_use = claims["token_use"]
    if token_use not in TOKEN_USES:
        raise TokenInvalid(f"invalid token: token_use {token_use!r} is neither an ID nor an access token")
    audience = claims.get("aud") if token_use == "id" else claims.get("client_id")
    if audience != pool.client_id:
        raise TokenInvalid("invalid token: it was issued to another app client")
    user_id = claims["sub"]
    if not isinstance(user_id, str) or not USER_ID_PATTERN.fullmatch(user_id):
        raise TokenInvalid("invalid token: its subject is not a valid user id")
    return user_id
