"""The Pusher (`push`, `post` over `ConnectionsApi`): the same request boto3 sends (URL, SigV4
signature), the same results (delivered, gone and dropped from Redis, failed), one more attempt for
a throttled or failing post, and an unreachable gateway that costs a bounded wait, not an error."""
from __future__ import annotations

import asyncio

import boto3
import pytest
import redis as redis_lib
from aiohttp import web
from botocore.credentials import ReadOnlyCredentials

from cloudia.connections import ConnectionRegistry
from cloudia.push import ConnectionsApi, Pusher
from tests.support.servers import free_port, serve_posts

FRAME = {"event": "token", "jobId": "job-1", "token": "Echo: hi", "attempt": 1}
# API Gateway's connection ids are base64-like and end in "=": boto3 sends it as "%3D".
CONNECTION = "L0SM9cOFvHcCIhw="


@pytest.mark.parametrize("endpoint, connection_id, token", [
    ("https://abc123.execute-api.eu-west-1.amazonaws.com/prod", CONNECTION, "session/token+="),
    ("https://abc123.execute-api.eu-west-1.amazonaws.com:8443/prod/", "a/b c~d", None),
])
def test_the_request_is_boto3s_own_post_to_connection(endpoint, connection_id, token):
    """The URL boto3's client posts to, and a SigV4 signature over it with the same credentials."""
    credentials = ReadOnlyCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    api = ConnectionsApi(endpoint, "eu-west-1", lambda: credentials, 2.0)
    sent = []
    client = boto3.client("apigatewaymanagementapi", endpoint_url=endpoint, region_name="eu-west-1",
                          aws_access_key_id=credentials.access_key, aws_secret_access_key=credentials.secret_key,
                          aws_session_token=token)

    def capture(request, **_):
        sent.append(request)
        raise _Sent  # nothing goes out

    client.meta.events.register("before-send", capture)
    with pytest.raises(_Sent):
        client.post_to_connection(ConnectionId=connection_id, Data=b'{"event": "token"}')
    (boto3s,) = sent

    url, headers = api.request(connection_id, b'{"event": "token"}', credentials)

    assert url == boto3s.url
    scope = boto3s.headers["Authorization"].decode().split("Credential=")[1].split(",")[0].split("/", 1)[1]
    assert headers["Authorization"].split("Credential=")[1].startswith(f"AKIDEXAMPLE/{scope}")
    assert headers.get("X-Amz-Security-Token") == (token if token else None)


def test_an_unsigned_endpoint_gets_no_signature():
    api = ConnectionsApi("http://localhost:8080", "us-east-1", lambda: None, 2.0)
    assert api.request("conn-1", b"{}", None) == ("http://localhost:8080/@connections/conn-1", {})


class _Sent(Exception):
    """boto3's request, stopped before it is sent."""


def pusher_for(url: str, registry: ConnectionRegistry | None, timeout_s: float = 2.0) -> Pusher:
    return Pusher(ConnectionsApi.of(url, boto3.session.Session(), timeout_s), registry)


def test_async_pushes_reach_the_connections_as_boto3s_and_drop_a_gone_one(settings, recorder):
    # GIVEN a user with two connections, one of them gone at the gateway (410)
    redis = redis_lib.Redis.from_url(settings.redis_url, decode_responses=True)
    registry = ConnectionRegistry(redis, 600)
    registry.register(CONNECTION, "ana")
    registry.register("gone-1", "ana")
    recorder.gone.add("gone-1")
    pusher = pusher_for(recorder.url, registry)

    async def run():
        try:
            return await pusher.push("ana", FRAME)  # the connections read from Redis
        finally:
            await pusher.aclose()

    # WHEN a frame is pushed
    delivered = asyncio.run(run())
    # AND one the way boto3 posts it
    boto3.client("apigatewaymanagementapi", endpoint_url=recorder.url).post_to_connection(
        ConnectionId=CONNECTION, Data=b'{"event": "token", "token": "by boto3"}')
    # THEN the live connection got both, at the same address, and the gone one is forgotten
    assert delivered == 1
    (address,) = recorder.posts  # boto3's encoding of the id, the Pusher's too
    assert [e["token"] for e in recorder.events(address)] == ["Echo: hi", "by boto3"]
    assert registry.connections_of("ana") == [CONNECTION]


async def _gateway(statuses: list[int]) -> tuple[web.AppRunner, str, list[str]]:
    """A gateway answering each POST with the next status (the last one ever after)."""
    paths: list[str] = []

    async def post(request: web.Request) -> web.Response:
        await request.read()
        paths.append(request.raw_path)
        return web.Response(status=statuses.pop(0) if len(statuses) > 1 else statuses[0])

    runner, url = await serve_posts(post)
    return runner, f"{url}/stage", paths


@pytest.mark.parametrize("statuses, delivered, attempts", [
    ([503, 200], True, 2),   # a failing post is tried once more
    ([429, 429], False, 2),  # a throttled one twice at most
    ([403], False, 1),       # a refusal is not retried
])
def test_a_throttled_or_failing_post_is_tried_once_more(aws_env, statuses, delivered, attempts):
    async def run():
        runner, url, paths = await _gateway(list(statuses))
        pusher = pusher_for(url, None)
        try:
            return await pusher.post(CONNECTION, FRAME), paths
        finally:
            await pusher.aclose()
            await runner.cleanup()

    got, paths = asyncio.run(run())
    assert got is delivered
    assert paths == ["/stage/@connections/L0SM9cOFvHcCIhw%3D"] * attempts  # the id as signed, not re-encoded


def test_an_unreachable_gateway_is_a_failed_push_within_the_timeout(aws_env):
    port = free_port()  # nothing listens there
    pusher = pusher_for(f"http://127.0.0.1:{port}", None, 0.5)

    async def run():
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            return await pusher.push("ana", FRAME, ["c1", "c2"]), loop.time() - started
        finally:
            await pusher.aclose()

    delivered, took_s = asyncio.run(run())
    assert delivered == 0 and took_s < 2.0
