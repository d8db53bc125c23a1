"""The SDK clients' HTTP transport: aiohttp under the SDKs' `httpx2` client, reading a streamed body
in paced pieces.

The SDKs accept any `httpx2.AsyncClient` (`http_client=`), and both ship an aiohttp-based one
(`DefaultAioHttpClient`); this transport is the same idea, with two differences that matter to a
worker streaming hundreds of answers at once:
- a body is read at most once every `read_interval_s` after its first piece, and the socket is not
  watched in between: the tokens that arrive meanwhile wait in the kernel and come in one read
  (one wake-up of the event loop, one `recv`) instead of one each. httpx2's own transport parses
  every HTTP chunk in Python (h11) and wakes the loop per token, which is most of what a token costs
  once the SDK's typed objects are gone;
- aiohttp's failures map to the `httpx2` exception the SDK expects for what happened (a connection
  reset is a connection error, not a connect timeout as in the SDKs' vendored transport), so
  `cloudia.llm._errors.classify` sees the same classes as with the default client.

The SDK still builds and sends the request (auth, base URL, headers, timeouts, status errors)."""
from __future__ import annotations

import asyncio
import contextlib
from typing import AsyncIterator, Iterator

import aiohttp
import yarl

from cloudia.llm._errors import httpx

# Connections kept per provider: the worker's concurrency bounds the calls in flight, this only
# caps a runaway (the SDKs' own default).
MAX_CONNECTIONS = 1000
# An idle connection is closed after this (seconds; httpx's default keep-alive expiry).
KEEPALIVE_S = 5.0


@contextlib.contextmanager
def _mapped(connecting: bool) -> Iterator[None]:
    """aiohttp's errors as the `httpx2` ones the SDKs translate (APITimeoutError, APIConnectionError)."""
    try:
        yield
    except aiohttp.ConnectionTimeoutError as error:
        raise httpx.ConnectTimeout(str(error)) from error
    except (aiohttp.ServerTimeoutError, asyncio.TimeoutError) as error:
        raise (httpx.ConnectTimeout if connecting else httpx.ReadTimeout)(str(error) or "timed out") from error
    except aiohttp.ClientConnectorError as error:
        raise httpx.ConnectError(str(error)) from error
    except aiohttp.ClientResponseError as error:  # a reply that is not HTTP
        raise httpx.RemoteProtocolError(str(error)) from error
    except (aiohttp.ClientError, ConnectionError) as error:  # reset, closed mid-body, cut payload
        raise httpx.ReadError(str(error) or type(error).__name__) from error


class PacedBody(httpx.AsyncByteStream):
    """An aiohttp response body as `httpx2` reads it: every read takes all that has arrived, and
    after the first one the next comes no sooner than `interval_s` after the last, the socket
    unwatched meanwhile."""

    def __init__(self, response: aiohttp.ClientResponse, interval_s: float):
        self._response = response
        self._interval_s = interval_s

    async def __aiter__(self) -> AsyncIterator[bytes]:
        content = self._response.content
        connection = self._response.connection
        transport = connection.transport if connection is not None else None
        loop = asyncio.get_running_loop()
        while True:
            with _mapped(connecting=False):
                data = await content.readany()
            if not data:
                return
            read_at = loop.time()
            yield data
            wait_s = read_at + self._interval_s - loop.time()
            if wait_s > 0 and transport is not None and not content.is_eof():
                transport.pause_reading()
                try:
                    await asyncio.sleep(wait_s)
                finally:
                    if not transport.is_closing():
                        transport.resume_reading()

    async def aclose(self) -> None:
        # A body read to its end gives its connection back to the pool; one cut short closes it.
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


class PacedAiohttpTransport(httpx.AsyncBaseTransport):
    """An `httpx2` transport over one aiohttp session, made on first use on the running loop (a
    session belongs to its loop)."""

    def __init__(self, read_interval_s: float):
        self._read_interval_s = read_interval_s
        # The SDKs' TLS defaults (httpx2's context: certifi, SSL_CERT_FILE), made once (tens of ms).
        self._ssl = httpx.create_ssl_context()
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _session_now(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            self._loop = loop
            # aiohttp leaves the body as sent (httpx2 decodes a Content-Encoding); proxies are
            # httpx2's (trust_env).
            connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS, keepalive_timeout=KEEPALIVE_S, ssl=self._ssl)
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False, trust_env=False)
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout") or {}
        connect_s, read_s, pool_s = timeout.get("connect"), timeout.get("read"), timeout.get("pool")
        body = await request.aread()
        with _mapped(connecting=True):
            response = await self._session_now().request(
                request.method, yarl.URL(str(request.url), encoded=True), headers=request.headers.multi_items(),
                data=body or None,
                allow_redirects=False,  # httpx2's client follows them
                timeout=aiohttp.ClientTimeout(
                    sock_connect=connect_s, sock_read=read_s,
                    connect=None if pool_s is None or connect_s is None else pool_s + connect_s),
                server_hostname=request.extensions.get("sni_hostname"))
        return httpx.Response(status_code=response.status, headers=response.raw_headers,
                              stream=PacedBody(response, self._read_interval_s), request=request,
                              extensions={"http_version": b"HTTP/1.1",
                                          **({"reason_phrase": response.reason.encode()} if response.reason else {})})

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def paced_http_client(read_interval_s: float) -> httpx.AsyncClient:
    """An `httpx2` client for an SDK (`http_client=`): its transport paced as above, redirects
    followed as the SDKs' default client does."""
    return httpx.AsyncClient(transport=PacedAiohttpTransport(read_interval_s), follow_redirects=True)
