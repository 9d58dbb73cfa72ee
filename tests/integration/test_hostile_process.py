"""Hostile input against a real ``denis serve`` (uvicorn + httptools): header sizes, WebSocket
frame size, Origin and connections per client, and no secret in the log, ``/metrics``,
``/status`` or any error body."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from denis.api.http_limits import MAX_HEADER_BYTES
from probes import ws_authenticate
from servers import DenisProcess, create_token, free_port

pytestmark = pytest.mark.integration

NO_HANG_S = 10.0  # generous: proves "did not hang"


def raw_request(proc: DenisProcess, request: bytes) -> bytes:
    """Send ``request`` on a fresh connection and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", proc.port), timeout=NO_HANG_S) as sock:
        with contextlib.suppress(OSError):  # the server may stop reading before the end
            sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def drain(ws: ClientConnection) -> None:
    while True:
        ws.recv(timeout=NO_HANG_S)


def close_code(ws: ClientConnection) -> tuple[int | None, str | None]:
    with pytest.raises(ConnectionClosed) as closed:
        drain(ws)
    rcvd = closed.value.rcvd
    return (rcvd.code, rcvd.reason) if rcvd else (None, None)


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(b"X-Big: " + b"a" * (2 * MAX_HEADER_BYTES) + b"\r\n", id="one-huge-header"),
        pytest.param(b"".join(b"X-%d: a\r\n" % i for i in range(20_000)), id="many-headers"),
        pytest.param(b"X-Big: " + b"a" * (8 * 1024 * 1024) + b"\r\n", id="eight-mib"),
    ],
)
def test_headers_over_the_limit_are_431_and_the_server_keeps_answering(
    denis_factory: Callable[..., DenisProcess], headers: bytes
) -> None:
    proc = denis_factory()
    answer = raw_request(proc, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431 ")
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert body["error"]["code"] == "too_large"
    assert httpx.get(f"{proc.url}/healthz", timeout=NO_HANG_S).status_code == 200


def test_a_huge_url_is_431(denis_factory: Callable[..., DenisProcess]) -> None:
    proc = denis_factory()
    path = b"/healthz?" + b"q" * (2 * MAX_HEADER_BYTES)
    answer = raw_request(proc, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431 ")


def test_headers_under_the_limit_are_answered_also_on_a_kept_alive_connection(
    denis_factory: Callable[..., DenisProcess],
) -> None:
    proc = denis_factory()
    small = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 16_000 + b"\r\n\r\n"
    huge = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (2 * MAX_HEADER_BYTES)
    with socket.create_connection(("127.0.0.1", proc.port), timeout=NO_HANG_S) as sock:
        sock.sendall(small)
        first = b""
        while not first.endswith(b'{"status":"ok"}'):  # the whole first answer
            first += sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 ")
        with contextlib.suppress(OSError):
            sock.sendall(huge + b"\r\n\r\n")
        second = b""
        while chunk := sock.recv(65536):
            second += chunk
    assert second.startswith(b"HTTP/1.1 431 ")


def test_a_frame_over_the_limit_closes_the_socket_1009(
    denis_factory: Callable[..., DenisProcess], tmp_path
) -> None:
    data_dir = tmp_path / "data"
    token = create_token(data_dir, "alice")
    proc = denis_factory({"DENIS_WS_MAX_FRAME_BYTES": "4096"}, data_dir)
    with connect(proc.ws_url, open_timeout=NO_HANG_S) as ws:
        ws_authenticate(ws, token, NO_HANG_S)
        ws.send(json.dumps({"type": "chat", "id": 1, "text": "x" * 5000}))
        assert close_code(ws)[0] == 1009


def test_a_cross_origin_websocket_is_closed_1008_on_a_real_server(
    denis_factory: Callable[..., DenisProcess], tmp_path
) -> None:
    data_dir = tmp_path / "data"
    token = create_token(data_dir, "alice")
    proc = denis_factory(data_dir=data_dir)
    with connect(proc.ws_url, open_timeout=NO_HANG_S, origin="https://evil.example") as ws:
        assert close_code(ws) == (1008, "origin_not_allowed")
    with connect(proc.ws_url, open_timeout=NO_HANG_S, origin=proc.url) as ws:
        ws_authenticate(ws, token, NO_HANG_S)


def test_connections_per_client_are_capped_on_a_real_server(
    denis_factory: Callable[..., DenisProcess], tmp_path
) -> None:
    data_dir = tmp_path / "data"
    token = create_token(data_dir, "alice")
    proc = denis_factory({"DENIS_WS_MAX_CONNECTIONS_PER_CLIENT": "3"}, data_dir)
    with contextlib.ExitStack() as stack:
        for _ in range(3):
            ws_authenticate(
                stack.enter_context(connect(proc.ws_url, open_timeout=NO_HANG_S)), token, NO_HANG_S
            )
        with connect(proc.ws_url, open_timeout=NO_HANG_S) as extra:
            code, reason = close_code(extra)
        assert code == 1013
        assert json.loads(reason or "") == {"retry_after_s": 5}
    with connect(proc.ws_url, open_timeout=NO_HANG_S) as again:
        ws_authenticate(again, token, NO_HANG_S)


def test_no_secret_in_logs_metrics_status_or_error_bodies(
    denis_factory: Callable[..., DenisProcess], tmp_path
) -> None:
    data_dir = tmp_path / "data"
    token = create_token(data_dir, "alice")
    admin = create_token(data_dir, "root", admin=True)
    ha_secret = "ha-secret-7f3c9b1e5d"
    llm_secret = "llm-secret-2a8e4c6b0f"
    fake_secret = "denis_fake-secret-9d1b3f5a7c"
    basic_secret = "basic-password-4e6a8c0b2d"
    closed = free_port()  # nothing listens: Home Assistant and the LLM are down
    proc = denis_factory(
        {
            "DENIS_LOG_LEVEL": "DEBUG",
            "DENIS_HA_URL": f"http://127.0.0.1:{closed}",
            "DENIS_HA_TOKEN": ha_secret,
            "DENIS_LLM_URL": f"http://127.0.0.1:{closed}/v1",
            "DENIS_LLM_API_KEY": llm_secret,
        },
        data_dir,
    )
    basic = base64.b64encode(f"alice:{basic_secret}".encode()).decode()
    texts: list[str] = []
    with httpx.Client(base_url=proc.url, timeout=NO_HANG_S) as client:
        for authorization in (
            f"Bearer {token}",
            f"Bearer {token}x",
            f"Token {token}",
            token,
            f"Bearer {fake_secret}",
            f"Basic {basic}",
            f"Bearer {ha_secret}",
        ):
            for text in ("turn on the kitchen light", "why is the sky blue?", ""):
                response = client.post(
                    "/chat", json={"text": text}, headers={"Authorization": authorization}
                )
                assert response.status_code < 500, response.text
                texts.append(response.text)
            texts.extend(
                client.get(path, headers={"Authorization": authorization}).text
                for path in ("/status", "/metrics", "/admin/dlq")
            )
        texts.append(client.get("/metrics", headers={"Authorization": f"Bearer {admin}"}).text)
        texts.append(client.get("/status", headers={"Authorization": f"Bearer {admin}"}).text)
    for candidate in (fake_secret, token + "x", 42):
        with connect(proc.ws_url, open_timeout=NO_HANG_S) as ws:
            ws.send(json.dumps({"type": "auth", "token": candidate}))
            texts.append(str(ws.recv(timeout=NO_HANG_S)))
    with connect(proc.ws_url, open_timeout=NO_HANG_S) as ws:
        ws_authenticate(ws, token, NO_HANG_S)
        ws.send(json.dumps({"type": "chat", "id": 1, "text": "turn on the kitchen light"}))
        texts.append(str(ws.recv(timeout=NO_HANG_S)))
    proc.stop()  # flush everything it logs
    log = proc.log_path.read_text(encoding="utf-8", errors="replace")
    assert '"level": "debug"' in log  # DEBUG lines were written, and none had a secret
    everything = "\n".join([log, *texts])
    for secret in (
        token,
        token.removeprefix("denis_"),
        admin,
        ha_secret,
        llm_secret,
        fake_secret,
        basic_secret,
        basic,
    ):
        assert secret not in everything, f"a secret leaked: {secret[:8]}…"
    assert "Traceback" not in everything


def test_a_body_that_stops_halfway_is_408_at_the_deadline_and_a_whole_one_is_answered(
    denis_factory: Callable[..., DenisProcess], tmp_path: Path
) -> None:
    """A client that declares a body and sends only part of it holds no request past the
    deadline (408 ``timeout``); a body sent whole on the same server, read without a timer
    (``BODY_COMPLETE_EXTENSION``), is answered as usual."""
    data_dir = tmp_path / "data"
    token = create_token(data_dir, "alice")
    proc = denis_factory({"DENIS_CHAT_TIMEOUT_S": "1"}, data_dir)
    body = b'{"text": "what time is it?"}'
    head = (
        b"POST /chat HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token.encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    with socket.create_connection(("127.0.0.1", proc.port), timeout=NO_HANG_S) as sock:
        started = time.monotonic()
        sock.sendall(head + body[:10])  # and nothing more
        answer = sock.recv(65536)
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "timeout"
    assert 0.5 < waited < NO_HANG_S  # held until the deadline, not dropped, not hung
    whole = raw_request(
        proc, head.replace(b"HTTP/1.1\r\n", b"HTTP/1.1\r\nConnection: close\r\n") + body
    )
    assert whole.startswith(b"HTTP/1.1 200 "), whole[:200]
