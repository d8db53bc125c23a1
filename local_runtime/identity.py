"""The local target's Cognito user pool, created in the emulator through the cognito-idp API.

moto's CloudFormation creates no Cognito resources, so the local runtime stands in for that part of
the stacks (as it does for the gateway and the worker): one pool named as on AWS, its public app
client with the flows the page uses, and users signed in with the very calls the page makes. The
functions verify its tokens with the same code as on AWS (`cloudia/auth.py`); only the key set's URL
points at the emulator.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import boto3

from cloudia.auth import PASSWORD_POLICY, user_pool_name
from local_runtime.emulator import EMULATOR_REGION

APP_CLIENT_NAME = "web"
AUTH_FLOWS = ["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"]
DEMO_USER = "demo"


def cognito(endpoint: str):
    return boto3.client("cognito-idp", endpoint_url=endpoint, region_name=EMULATOR_REGION,
                        aws_access_key_id="test", aws_secret_access_key="test")


def dev_password(user: str) -> str:
    """The password of a user the local runtime creates: derived from the name, so any local tool can
    sign that user in (the emulator is loopback only; nothing on AWS has such a user)."""
    return f"Local-{hashlib.sha256(user.encode()).hexdigest()[:12]}-9!"


@dataclass(frozen=True)
class LocalUserPool:
    endpoint: str
    pool_id: str
    client_id: str

    @property
    def jwks_url(self) -> str:
        return f"{self.endpoint.rstrip('/')}/{self.pool_id}/.well-known/jwks.json"

    def env(self) -> dict[str, str]:
        """What the functions need to verify this pool's tokens (see cloudia/settings.py)."""
        return {"USER_POOL_ID": self.pool_id, "USER_POOL_CLIENT_ID": self.client_id,
                "COGNITO_JWKS_URL": self.jwks_url}

    def page_config(self, websocket_url: str) -> dict[str, str]:
        """The page's config.json (the stacks write the same keys on AWS)."""
        return {"websocketUrl": websocket_url, "region": EMULATOR_REGION, "userPoolId": self.pool_id,
                "userPoolClientId": self.client_id, "cognitoEndpoint": self.endpoint.rstrip("/") + "/"}

    def ensure_user(self, user: str, password: str | None = None) -> None:
        """Create `user` with a permanent password (`dev_password(user)` unless given), if missing."""
        client = cognito(self.endpoint)
        try:
            client.admin_get_user(UserPoolId=self.pool_id, Username=user)
            return
        except client.exceptions.UserNotFoundException:
            pass
        client.admin_create_user(UserPoolId=self.pool_id, Username=user, MessageAction="SUPPRESS")
        client.admin_set_user_password(UserPoolId=self.pool_id, Username=user,
                                       Password=password or dev_password(user), Permanent=True)

    def sign_in(self, user: str, password: str | None = None) -> dict[str, str]:
        """The page's sign-in (InitiateAuth, USER_PASSWORD_AUTH): AccessToken, IdToken, RefreshToken."""
        result = cognito(self.endpoint).initiate_auth(
            ClientId=self.client_id, AuthFlow="USER_PASSWORD_AUTH",
            AuthParameters={"USERNAME": user, "PASSWORD": password or dev_password(user)})
        if "AuthenticationResult" not in result:
            raise ValueError(f"user {user!r} must answer the {result.get('ChallengeName')} challenge first")
        return result["AuthenticationResult"]

    def token_for(self, user: str) -> tuple[str, str]:
        """(an access token, the user id it carries) for `user`, created on first use."""
        self.ensure_user(user)
        token = self.sign_in(user)["AccessToken"]
        attributes = cognito(self.endpoint).admin_get_user(UserPoolId=self.pool_id, Username=user)["UserAttributes"]
        return token, next(a["Value"] for a in attributes if a["Name"] == "sub")


def ensure_user_pool(endpoint: str, stage: str = "dev") -> LocalUserPool:
    """The local pool and its app client, created if the emulator has none by that name."""
    client = cognito(endpoint)
    name = user_pool_name("local", stage)
    pools = [p for page in client.get_paginator("list_user_pools").paginate(MaxResults=60)
             for p in page["UserPools"] if p["Name"] == name]
    if pools:
        pool_id = pools[0]["Id"]
    else:
        pool_id = client.create_user_pool(
            PoolName=name, Policies={"PasswordPolicy": PASSWORD_POLICY},
            AdminCreateUserConfig={"AllowAdminCreateUserOnly": True},
            AutoVerifiedAttributes=["email"])["UserPool"]["Id"]
    clients = client.list_user_pool_clients(UserPoolId=pool_id, MaxResults=60)["UserPoolClients"]
    client_id = next((c["ClientId"] for c in clients if c["ClientName"] == APP_CLIENT_NAME), None)
    if client_id is None:
        client_id = client.create_user_pool_client(
            UserPoolId=pool_id, ClientName=APP_CLIENT_NAME, GenerateSecret=False,
            ExplicitAuthFlows=AUTH_FLOWS, PreventUserExistenceErrors="ENABLED",
            EnableTokenRevocation=True)["UserPoolClient"]["ClientId"]
    return LocalUserPool(endpoint, pool_id, client_id)
