"""The HTTP protocol ``denis serve`` runs: uvicorn's httptools protocol with the header cap of
``denis.api.http_limits``, each response's head and first body part sent in one write, and the
security headers written into every response head.

uvicorn writes a response's status line and headers when the app sends
``http.response.start`` and the body when it sends ``http.response.body``: two writes, two
``send`` system calls and two TCP segments for every reply, and a reply of Denis is one small
JSON body. ``_HeadWithBody`` holds the head until the first body part (or a close) and writes
them together; every later part is written as it comes, so a streamed response still streams.
Measured under load (``benchmarks/RESULTS.md`` section 1, fifth round): about 10 to 20 µs less
of the event loop's CPU a request. The interim ``100 Continue``, which the client waits for
before sending a body, is never held.

It wraps the transport of each request's ``RequestResponseCycle`` only, the one object that
writes a response; the connection's own transport (flow control, the 431 refusal, a WebSocket
upgrade) is untouched. ``tests/unit/test_http_protocol.py`` checks the writes on a real server.

The same wrapper puts ``SECURITY_HEAD`` (the six constant security headers, encoded once) at the
end of each response head, and the request's scope carries ``SECURITY_HEADERS_EXTENSION`` so
``TraceMiddleware`` does not add them as ASGI headers: uvicorn checks every header of a reply
with two regular expressions, about 3 µs for these six a reply, and they never change. Every
response the request cycle writes gets them, uvicorn's own 500 included.

Once a request's last byte is parsed, its scope also carries ``BODY_COMPLETE_EXTENSION``: for a
request that arrives whole (almost every chat turn) this happens before the app runs, and
``read_body`` then reads the buffered body without arming a timer for the deadline.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from denis.api.body import BODY_COMPLETE_EXTENSION
from denis.api.http_limits import BoundedHttpTools
from denis.api.security import SECURITY_HEAD, SECURITY_HEADERS_EXTENSION

__all__ = ["DenisHttpTools"]

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"  # what uvicorn writes, at once


class _HeadWithBody:
    """The write side of one response: the first write (its head) waits for the second."""

    __slots__ = ("_held", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._held: bytes | None = None  # None: nothing written yet; b"": the head went out

    def write(self, data: bytes) -> None:
        if self._held is None and data != _CONTINUE:
            self._held = data[:-2] + SECURITY_HEAD + b"\r\n"  # the head ends in an empty line
            return
        if self._held:
            data = self._held + data
            self._held = b""
        self._transport.write(data)

    def close(self) -> None:
        if self._held:
            self._transport.write(self._held)
            self._held = b""
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # is_closing, get_extra_info, ...
        return getattr(self._transport, name)


class DenisHttpTools(BoundedHttpTools):
    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle = self._own_cycle()
        if cycle is not None:
            cycle.transport = _HeadWithBody(self.transport)  # type: ignore[assignment]
            self._mark(SECURITY_HEADERS_EXTENSION)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        cycle = self._own_cycle()
        if cycle is not None and not cycle.more_body:
            self._mark(BODY_COMPLETE_EXTENSION)

    def _own_cycle(self) -> RequestResponseCycle | None:
        """The response cycle of the request being parsed; None, or a finished cycle's, when
        the request was an upgrade (a WebSocket)."""
        cycle = self.cycle
        return cycle if cycle is not None and cycle.scope is self.scope else None

    def _mark(self, extension: str) -> None:
        self.scope.setdefault("extensions", {})[extension] = {}
