"""Post events to a user's current WebSocket connections through the API Gateway Management API.

The endpoint is API Gateway's `https://{api}.execute-api.{region}.amazonaws.com/{stage}` on AWS and the
local gateway (`http://localhost:8080`, serving the same `/@connections/{id}`) locally. A gone connection
(410 GoneException) is not a failure: the user reconnected or left, the answer stays in the history for
`resume`, and the stale registration is dropped.

A push is one small POST on the worker's event loop (`ConnectionsApi`), not boto3's blocking
`post_to_connection` in a thread: boto3 spends most of its CPU around such a call (parameter
validation, endpoint rules, event hooks, the thread hand-off). `ConnectionsApi` builds the request
boto3 would (its URL as boto3's serializer makes it, signed by botocore's own SigV4 signer for
`execute-api` with the session's credentials) and sends it on a kept-alive aiohttp connection.
"""
from __future__ import annotations

import asyncio
import logging
import random
from typing import Callable
from urllib.parse import urlsplit

import aiohttp
import yarl
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials
from botocore.utils import percent_encode

from cloudia import protocol
# Attempts per post, the first included: the boto3 clients' own.
from cloudia.aws import MAX_ATTEMPTS
from cloudia.connections import ConnectionRegistry

logger = logging.getLogger(__name__)

# The signing name of the Management API (`apigatewaymanagementapi` signs as `execute-api`).
SIGNING_SERVICE = "execute-api"
# Statuses worth a second attempt: throttled (LimitExceededException) and the service's own errors.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# The pause before a second attempt, drawn up to this (seconds): a token's push is worth little late.
RETRY_JITTER_S = 0.1
# Frozen credentials are reused this long (seconds), then taken again from the refreshing provider
# (off the loop: a refresh is an HTTP call); botocore refreshes at least 10 minutes before expiry.
CREDENTIALS_REUSE_S = 60.0
GONE = 410
# What SigV4 adds to a request; the rest of botocore's request (its Content-Type) is not sent.
SIGNED_HEADERS = ("Authorization", "X-Amz-Date", "X-Amz-Security-Token")


class ConnectionsApi:
    """`POST {endpoint}/@connections/{id}`, SigV4-signed, on one aiohttp session (made on first use,
    on the running loop: a session belongs to its loop)."""

    def __init__(self, endpoint_url: str, region: str, credentials: Callable[[], ReadOnlyCredentials | None],
                 timeout_s: float, max_connections: int = 100):
        """`credentials()`: the current frozen credentials (botocore's `get_frozen_credentials`), None
        when there are none (unsigned: the local gateway does not check)."""
        self._base = endpoint_url.rstrip("/") + "/@connections/"
        self._region = region
        self._credentials = credentials
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._max_connections = max_connections
        self._frozen: ReadOnlyCredentials | None = None
        self._frozen_until = float("-inf")
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def of(cls, endpoint_url: str, session, timeout_s: float, max_connections: int = 100) -> "ConnectionsApi":
        """For a boto3 session: its credentials (refreshed as boto3's are) and its region, else the
        endpoint's (`{api}.execute-api.{region}.amazonaws.com`)."""
        credentials: Credentials | None = session.get_credentials()
        labels = (urlsplit(endpoint_url).hostname or "").split(".")
        region = session.region_name or (labels[2] if len(labels) > 3 and labels[1] == "execute-api" else "us-east-1")
        frozen = (lambda: credentials.get_frozen_credentials()) if credentials else (lambda: None)
        return cls(endpoint_url, region, frozen, timeout_s, max_connections)

    def request(self, connection_id: str, data: bytes,
                credentials: ReadOnlyCredentials | None) -> tuple[str, dict]:
        """The URL and headers of one post (the connection id encoded as boto3's serializer does)."""
        url = self._base + percent_encode(connection_id)
        if credentials is None:
            return url, {}
        signed = AWSRequest(method="POST", url=url, data=data)
        SigV4Auth(credentials, SIGNING_SERVICE, self._region).add_auth(signed)
        return url, {name: signed.headers[name] for name in SIGNED_HEADERS if name in signed.headers}

    async def _current_credentials(self) -> ReadOnlyCredentials | None:
        now = asyncio.get_running_loop().time()
        if now >= self._frozen_until:
            self._frozen = await asyncio.to_thread(self._credentials)
            self._frozen_until = now + CREDENTIALS_REUSE_S
        return self._frozen

    def _session_now(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            self._loop = loop
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections), timeout=self._timeout,
                skip_auto_headers=("User-Agent", "Content-Type"))
        return self._session

    async def post(self, connection_id: str, data: bytes) -> int:
        """The status of the POST (200 delivered, 410 gone, ...), after a second attempt for a
        throttled or failed one; raises `aiohttp.ClientError` or `TimeoutError` if none was answered."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            url, headers = self.request(connection_id, data, await self._current_credentials())
            try:
                # Sent as encoded: yarl would decode "%3D" (connection ids end in "="), and the path
                # API Gateway checks the signature against must be the one signed.
                async with self._session_now().post(yarl.URL(url, encoded=True), data=data, headers=headers) as reply:
                    await reply.read()
                    status = reply.status
            except (aiohttp.ClientError, asyncio.TimeoutError):
                if attempt == MAX_ATTEMPTS:
                    raise
            else:
                if status not in RETRY_STATUSES or attempt == MAX_ATTEMPTS:
                    return status
            await asyncio.sleep(random.uniform(0, RETRY_JITTER_S))
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class Pusher:
    def __init__(self, connections_api: ConnectionsApi, registry: ConnectionRegistry):
        self._api = connections_api
        self._registry = registry

    def connections_of(self, user_id: str) -> list[str]:
        try:
            return self._registry.connections_of(user_id)
        except Exception as error:  # noqa: BLE001 - Redis down: nobody to tell now, history keeps it
            logger.warning("connections of %s unknown (Redis): %s", user_id, error)
            return []

    def _forget(self, connection_id: str) -> None:
        logger.info("connection %s is gone", connection_id)
        try:
            self._registry.unregister(connection_id)
        except Exception:  # noqa: BLE001 - the TTL removes it anyway
            pass

    async def post(self, connection_id: str, frame: dict | bytes) -> bool:
        """Send one frame (a dict, or already encoded) to one connection; True if it was delivered."""
        data = frame if isinstance(frame, bytes) else protocol.dumps(frame).encode()
        try:
            status = await self._api.post(connection_id, data)
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            logger.warning("push to %s failed: %r", connection_id, error)
            return False
        if status == GONE:
            await asyncio.to_thread(self._forget, connection_id)  # Redis, off the loop (rare)
            return False
        if status >= 300:
            logger.warning("push to %s failed: HTTP %s", connection_id, status)
            return False
        return True

    async def push(self, user_id: str, frame: dict, connection_ids: list[str] | None = None) -> int:
        """Send `frame` to the user's current connections (or the ones given), all at once; how many
        got it. Without `connection_ids` the user's are read from Redis, in a thread."""
        targets = await asyncio.to_thread(self.connections_of, user_id) if connection_ids is None else connection_ids
        if not targets:
            return 0
        data = protocol.dumps(frame).encode()
        if len(targets) == 1:
            return int(await self.post(targets[0], data))
        return sum(await asyncio.gather(*(self.post(c, data) for c in targets)))

    async def aclose(self) -> None:
        """Close the HTTP session (on the loop that used it)."""
        await self._api.aclose()
