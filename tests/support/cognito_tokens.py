"""Tokens as the emulator's user pool issues them, for any subject, expiry or claim a test needs.

moto signs every pool's tokens with one RSA key it ships (its JWKS serves the public half); a token
minted here with that key and moto's claims is one the emulator could have issued, so the verifier
under test (`cloudia/auth.py`) runs unchanged. Real sign-ins (`LocalUserPool.sign_in`) give the same
tokens, but only for a random `sub` and a one-hour lifetime.
"""
from __future__ import annotations

import functools
import json
import time
import uuid

import jwt
from moto.utilities.utils import load_resource

from local_runtime.identity import LocalUserPool
from local_runtime.emulator import EMULATOR_REGION

EMULATOR_KID = "dummy"  # the key id in moto's jwks-public.json


@functools.lru_cache(maxsize=1)
def emulator_signing_key():
    return jwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(load_resource("cognitoidp/resources/jwks-private.json")))


def issuer(pool_id: str) -> str:
    return f"https://cognito-idp.{EMULATOR_REGION}.amazonaws.com/{pool_id}"


def mint(pool: LocalUserPool, sub: str, token_use: str = "access", ttl_s: int = 3600, key=None,
         headers: dict | None = None, algorithm: str = "RS256", **claims) -> str:
    """A token of `pool`'s app client for `sub` (claims override moto's), signed with the emulator's
    key unless `key` is given."""
    now = int(time.time())
    body = {"iss": issuer(pool.pool_id), "sub": sub, "token_use": token_use, "iat": now, "auth_time": now,
            "exp": now + ttl_s, "jti": str(uuid.uuid4()),
            ("client_id" if token_use == "access" else "aud"): pool.client_id,
            ("username" if token_use == "access" else "cognito:username"): sub}
    body.update(claims)
    return jwt.encode(body, emulator_signing_key() if key is None else key, algorithm=algorithm,
                      headers={"kid": EMULATOR_KID, **(headers or {})})
