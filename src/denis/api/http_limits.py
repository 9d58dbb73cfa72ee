"""A cap on the request line and headers, which uvicorn's httptools parser does not have.

uvicorn with httptools (what ``uvicorn[standard]`` runs) accepts a header block of any size: a
client could send megabytes of headers and the server would buffer them all. ``BoundedHttpTools``
counts the bytes that arrive while a request's headers are still being read, and past
``MAX_HEADER_BYTES`` answers 431 ``too_large`` (the standard error body) and closes the
connection (after a short lingering close that drops, never buffers, what still arrives),
before the parser has seen the end of the headers or the app has run. Bodies are not counted
here (``denis.api.body.read_body`` and ``SecurityMiddleware`` limit them), and neither is a
WebSocket after its upgrade (uvicorn's ``ws_max_size`` caps frames).

It subclasses uvicorn's ``HttpToolsProtocol`` and overrides four of its hooks
(``data_received``, ``on_message_begin``, ``on_headers_complete``, ``on_message_complete``);
``tests/integration/test_hostile_process.py`` proves the cap on a real server (also on a
keep-alive connection's second request), so a uvicorn change that breaks it fails a test.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from denis.api.body import encode_json
from denis.api.errors import error_body
from denis.errors import TooLargeError

__all__ = ["MAX_HEADER_BYTES", "BoundedHttpTools"]

MAX_HEADER_BYTES = 64 * 1024  # request line and headers; browsers send under 8 KiB
_LINGER_S = 1.0

_BODY = encode_json(
    error_body(TooLargeError.code, f"headers must be at most {MAX_HEADER_BYTES} bytes")
)
_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: application/json\r\n"
    b"connection: close\r\n"
    b"content-length: " + str(len(_BODY)).encode() + b"\r\n\r\n" + _BODY
)


class BoundedHttpTools(HttpToolsProtocol):
    _header_bytes = 0
    _reading_headers = True  # a new connection starts with a request's headers

    _refused = False

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # dropped, never buffered
        if self._reading_headers:
            self._header_bytes += len(data)
            if self._header_bytes > MAX_HEADER_BYTES:
                self._refuse()
                return
        super().data_received(data)

    def _refuse(self) -> None:
        """431, then a lingering close: stop writing, drop what still arrives for up to
        ``_LINGER_S``, then close. Closing at once with unread data would reset the connection
        and the client might never read the 431."""
        self._refused = True
        self.transport.write(_TOO_LARGE)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(_LINGER_S, self.transport.close)

    def on_message_begin(self) -> None:
        self._reading_headers = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._reading_headers = False
        self._header_bytes = 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._reading_headers = True  # what arrives next is the next request's headers
        super().on_message_complete()
