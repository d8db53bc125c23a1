"""Server-sent events read straight from a streamed HTTP response, for the SDK providers.

The SDKs' own stream readers build a typed (pydantic) object for every event, which is most of the
CPU a streamed answer costs (about 0.8 ms a token through the OpenAI SDK). The providers still send
the request through the official SDK clients (auth, base URL, timeouts, status errors), then read the
body here: events split from the bytes, and each event's JSON left to the provider, which reads the
few fields it uses. A piece of the body may hold many events (`cloudia.llm._http` reads the body
in paced pieces): they are split here at no cost per piece beyond the bytes' own."""
from __future__ import annotations

import json
from typing import AsyncIterator

# (event name or None, data): the data lines of one event joined with "\n", undecoded.
Event = tuple[bytes | None, bytes]

_LINE_ENDS = (b"\n", b"\r")


class EventDecoder:
    """An incremental decoder of the `text/event-stream` format: only `event:` and `data:` are kept
    (`id:`, `retry:` and comments are not used); an event is dispatched at its blank line."""

    def __init__(self) -> None:
        self._rest = b""
        self._event: bytes | None = None
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[Event]:
        """The events completed by `chunk`."""
        buffer = self._rest + chunk if self._rest else chunk
        lines = buffer.splitlines(True)
        # A last line without its end, or ending in "\r" (its "\n" may be in the next chunk), waits.
        if lines and (lines[-1][-1:] == b"\r" or not lines[-1].endswith(_LINE_ENDS)):
            self._rest = lines.pop()
        else:
            self._rest = b""
        events: list[Event] = []
        for line in lines:
            line = line.rstrip(b"\r\n")
            if not line:
                if self._data:
                    events.append((self._event, self._data[0] if len(self._data) == 1 else b"\n".join(self._data)))
                self._event, self._data = None, []
            elif line.startswith(b"data:"):
                value = line[5:]
                self._data.append(value[1:] if value[:1] == b" " else value)
            elif line.startswith(b"event:"):
                value = line[6:]
                self._event = value[1:] if value[:1] == b" " else value
        return events

    def close(self) -> list[Event]:
        """The events a body ending without its last line end completes (an unterminated event is
        dropped, as the format says)."""
        rest, self._rest = self._rest, b""
        return self.feed(rest + b"\n") if rest.endswith(b"\r") else []


def parse_json(datas: list[bytes]) -> list:
    """The JSON values of several events' data, parsed in one call (one decode, one parser run: half
    the cost of one call each); a data that is not JSON raises `ValueError`."""
    if len(datas) == 1:
        return [json.loads(datas[0])]
    return json.loads(b"[" + b",".join(datas) + b"]") if datas else []


async def read_events(response) -> AsyncIterator[list[Event]]:
    """The events of a streamed `httpx2` response, as lists: those each piece of the body completed."""
    decoder = EventDecoder()
    # The raw bytes when the body is not encoded (as streams are): no decoder to pass them through.
    body = response.aiter_bytes() if response.headers.get("content-encoding") else response.aiter_raw()
    async for chunk in body:
        events = decoder.feed(chunk)
        if events:
            yield events
    events = decoder.close()
    if events:
        yield events
