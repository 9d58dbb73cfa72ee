"""``DenisHttpTools`` on a real uvicorn server over loopback: a response's head and body go out
in one write, a streamed response still streams, ``100 Continue`` is never held, the
security headers are in every reply exactly once, and the scope says when the body is whole.

Each connection's transport is wrapped (in a test subclass) to record what the server writes;
the protocol, parser, response cycle and sockets are uvicorn's own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from denis.api.body import BODY_COMPLETE_EXTENSION
from denis.api.http_protocol import DenisHttpTools
from denis.api.security import SECURITY_HEADERS
from denis.api.trace import TraceMiddleware
from servers import free_port, wait_for_port

pytestmark = pytest.mark.timeout(30)

_BODY = b'{"reply":"hello"}'


class _Recorded:
    def __init__(self, transport: Any, writes: list[bytes]) -> None:
        self._transport = transport
        self._writes = writes

    def write(self, data: bytes) -> None:
        self._writes.append(bytes(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def recording(writes: list[bytes]) -> type[DenisHttpTools]:
    class Recording(DenisHttpTools):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self.transport = _Recorded(transport, writes)  # type: ignore[assignment]

    return Recording


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"one", b"two", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
            await scope["state"]["next"].wait()
            scope["state"]["next"].clear()
        await send({"type": "http.response.body", "body": b""})
        return
    reply = body or _BODY
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(reply))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": reply})


@pytest.fixture
async def server() -> AsyncIterator[tuple[int, list[bytes], asyncio.Event]]:
    writes: list[bytes] = []
    step = asyncio.Event()

    async def with_state(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope["state"] = {"next": step}
        await app(scope, receive, send)

    port = free_port()
    config = uvicorn.Config(
        with_state,
        host="127.0.0.1",
        port=port,
        http=recording(writes),
        lifespan="off",
        log_config=None,
    )
    srv = uvicorn.Server(config)
    task = asyncio.create_task(srv.serve())
    await asyncio.to_thread(wait_for_port, port)
    try:
        yield port, writes, step
    finally:
        srv.should_exit = True
        await task


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    return head, await reader.readexactly(length)


async def test_a_response_head_and_body_go_out_in_one_write(server) -> None:
    port, writes, _ = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = b"GET /chat HTTP/1.1\r\nhost: x\r\n\r\n"
    for _ in range(2):  # and again on the same keep-alive connection
        writer.write(request)
        head, body = await read_response(reader)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert body == _BODY
    writer.close()
    assert len(writes) == 2
    assert all(
        w.startswith(b"HTTP/1.1 200 OK\r\n") and w.endswith(b"\r\n\r\n" + _BODY) for w in writes
    )


async def test_a_streamed_response_still_streams(server) -> None:
    port, writes, step = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n")
    await reader.readuntil(b"\r\n\r\n")
    # each part arrives before the app is let to send the next
    for part in (b"one", b"two", b"three"):
        size = int(await reader.readuntil(b"\r\n"), 16)
        assert await reader.readexactly(size + 2) == part + b"\r\n"
        step.set()
    assert await reader.readuntil(b"0\r\n\r\n") == b"0\r\n\r\n"
    writer.close()
    assert writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert writes[0].endswith(b"\r\n\r\n3\r\none\r\n")  # the head with the first part
    assert writes[1:] == [b"3\r\ntwo\r\n", b"5\r\nthree\r\n", b"0\r\n\r\n"]


async def test_100_continue_is_sent_at_once(server) -> None:
    port, writes, _ = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = b'{"text":"hi"}'
    writer.write(
        b"POST /chat HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\n"
        b"content-length: %d\r\n\r\n" % len(body)
    )
    # the server answers 100 before the client sends the body (the client waits for it)
    assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(body)
    head, reply = await read_response(reader)
    writer.close()
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert reply == body
    assert writes[0] == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert len(writes) == 2
    assert writes[1].endswith(b"\r\n\r\n" + body)


@contextlib.asynccontextmanager
async def _running(app_: Any, http: Any) -> AsyncIterator[tuple[asyncio.StreamReader, Any]]:
    """uvicorn serving ``app_`` with protocol ``http``, and one connection to it."""
    port = free_port()
    config = uvicorn.Config(
        app_, host="127.0.0.1", port=port, http=http, lifespan="off", log_config=None
    )
    srv = uvicorn.Server(config)
    task = asyncio.create_task(srv.serve())
    await asyncio.to_thread(wait_for_port, port)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        yield reader, writer
        writer.close()
    finally:
        srv.should_exit = True
        await task


async def _serve_once(app_: Any, http: Any, path: bytes) -> bytes:
    """GET ``path`` from ``app_`` served with protocol ``http``; the reply's head."""
    async with _running(app_, http) as (reader, writer):
        writer.write(b"GET " + path + b" HTTP/1.1\r\nhost: x\r\n\r\n")
        head, _ = await read_response(reader)
    return head


def _header_names(head: bytes) -> list[bytes]:
    return [line.split(b":", 1)[0].lower() for line in head.split(b"\r\n")[1:] if line]


@pytest.mark.parametrize("protocol", ["denis", "stock"])
async def test_the_security_headers_are_in_every_reply_exactly_once(protocol: str) -> None:
    """Under ``denis serve`` the protocol writes them and ``TraceMiddleware`` adds none; under
    any other server (uvicorn's own protocol here) the middleware adds them."""
    http = DenisHttpTools if protocol == "denis" else HttpToolsProtocol
    head = await _serve_once(TraceMiddleware(app), http, b"/chat")
    names = _header_names(head)
    for name, value in SECURITY_HEADERS:
        assert names.count(name) == 1, (name, head)
        assert name + b": " + value + b"\r\n" in head
    assert names.count(b"x-trace-id") == 1


async def test_uvicorns_own_500_carries_the_security_headers() -> None:
    async def broken(scope: dict[str, Any], receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    head = await _serve_once(broken, DenisHttpTools, b"/")
    assert head.startswith(b"HTTP/1.1 500 ")
    assert all(_header_names(head).count(name) == 1 for name, _ in SECURITY_HEADERS)


async def test_the_scope_says_when_the_body_arrived_whole_before_the_app_ran() -> None:
    seen: list[bool] = []
    running = asyncio.Event()

    async def flag_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        seen.append(BODY_COMPLETE_EXTENSION in scope.get("extensions", {}))
        running.set()
        await app(scope, receive, send)

    async with _running(flag_app, DenisHttpTools) as (reader, writer):
        body = b'{"text":"hi"}'
        head = b"POST /chat HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % len(body)
        writer.write(head + body)  # whole
        assert (await read_response(reader))[1] == body
        running.clear()
        writer.write(head + body[:4])  # the rest only once the app is running
        await running.wait()
        writer.write(body[4:])
        assert (await read_response(reader))[1] == body
    assert seen == [True, False]
