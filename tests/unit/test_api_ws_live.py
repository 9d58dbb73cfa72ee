"""``WS /chat`` for the web app: ready with the status, ping/pong while a turn runs, status
pushes (periodic and on a breaker opening), the reconnect-storm limit, the per-connection frame
rate and the queue of waiting turns. The protocol is in ``denis/api/websocket.py``.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketTestSession
from starlette.websockets import WebSocketDisconnect

from denis.resilience import Deadline, ManualClock
from denis.sync_plane import Reply, Turn
from probes import signal_count, status

TRY_AGAIN_LATER = 1013
POLICY_VIOLATION = 1008
STATUS_KEYS = {"zones", "breakers", "queues", "signals"}
NO_HANG_S = 10.0  # only stops a broken build from hanging the suite


def recent_signals(client: TestClient, auth: dict[str, str], name: str) -> list[dict[str, Any]]:
    return [s for s in status(client, auth)["signals"] if s["signal"] == name]


def authenticate(ws: WebSocketTestSession, token: str) -> dict[str, Any]:
    ws.send_json({"type": "auth", "token": token})
    assert ws.receive_json() == {"type": "auth_ok", "user": "alice"}
    ready = ws.receive_json()
    assert ready["type"] == "ready"
    return ready


@contextmanager
def session(client: TestClient, token: str) -> Iterator[WebSocketTestSession]:
    with client.websocket_connect("/chat") as ws:
        authenticate(ws, token)
        yield ws


@contextmanager
def from_address(client: TestClient, host: str) -> Iterator[None]:
    """Connections made inside come from ``host`` (the test client's transport sets the ASGI
    scope's ``client``)."""
    transport = client._transport  # the only place the address is set
    saved = transport.client  # type: ignore[attr-defined]
    transport.client = (host, 50000)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        transport.client = saved  # type: ignore[attr-defined]


def refused_with(client: TestClient) -> tuple[int, dict[str, Any]]:
    """Open a socket and return the close code and the parsed reason it was closed with."""
    with client.websocket_connect("/chat") as ws, pytest.raises(WebSocketDisconnect) as closed:
        ws.receive_json()
    return closed.value.code, json.loads(closed.value.reason)


class GatedResponder:
    """Answers once released; the app runs in the test client's thread."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    async def respond(self, turn: Turn, deadline: Deadline) -> Reply:
        self.started.set()
        await asyncio.to_thread(self.release.wait, NO_HANG_S)
        return Reply(f"answer to {turn.text}", "gated")


class FailingResponder:
    async def respond(self, turn: Turn, deadline: Deadline) -> Reply:
        raise RuntimeError("the model fell over")


# -- ready, ping ----------------------------------------------------------------------------


def test_ready_carries_the_same_status_as_get_status(make_client, token, auth) -> None:
    client = make_client(ws_status_s=3600)
    with client.websocket_connect("/chat") as ws:
        ready = authenticate(ws, token)
    assert ready["user"] == "alice"
    assert set(ready["status"]) == STATUS_KEYS
    http = client.get("/status", headers=auth).json()
    assert ready["status"]["breakers"] == http["breakers"]
    assert ready["status"]["zones"].keys() == http["zones"].keys()
    assert ready["status"]["queues"] == http["queues"]


def test_a_ping_is_answered_with_its_t_while_a_turn_is_running(make_client, token) -> None:
    responder = GatedResponder()
    client = make_client(ws_status_s=3600, app_kwargs={"responder": responder})
    with session(client, token) as ws:
        ws.send_json({"type": "chat", "id": "slow", "text": "tell me a long story"})
        assert responder.started.wait(NO_HANG_S)
        ws.send_json({"type": "ping", "id": "p1", "t": 1712345678901.5})
        assert ws.receive_json() == {"type": "pong", "id": "p1", "t": 1712345678901.5}
        ws.send_json({"type": "ping", "id": "p2", "t": "not a number"})
        assert ws.receive_json() == {"type": "pong", "id": "p2"}
        responder.release.set()
        reply = ws.receive_json()
        assert (reply["type"], reply["id"]) == ("reply", "slow")


def test_turns_are_answered_in_order_and_too_many_waiting_are_refused(make_client, token) -> None:
    responder = GatedResponder()
    client = make_client(ws_status_s=3600, app_kwargs={"responder": responder})
    with session(client, token) as ws:
        ws.send_json({"type": "chat", "id": 0, "text": "first"})
        assert responder.started.wait(NO_HANG_S)
        for n in range(1, 9):  # eight wait behind the one running
            ws.send_json({"type": "chat", "id": n, "text": f"message {n}"})
        ws.send_json({"type": "chat", "id": 9, "text": "one too many"})
        refused = ws.receive_json()
        assert refused["type"] == "error"
        assert (refused["id"], refused["error"]["code"]) == (9, "rate_limited")
        assert refused["retry_after_s"] >= 1
        responder.release.set()
        replies = [ws.receive_json() for _ in range(9)]
        assert [r["id"] for r in replies] == list(range(9))
        assert all(r["type"] == "reply" for r in replies)
        assert replies[3]["reply"] == "answer to message 3"


# -- status pushes --------------------------------------------------------------------------


def test_the_status_is_pushed_every_ws_status_s(make_client, token) -> None:
    client = make_client(ws_status_s=0.05)
    with session(client, token) as ws:
        pushes = [ws.receive_json() for _ in range(3)]
        assert all(p["type"] == "status" for p in pushes)
        assert all(set(p["status"]) == STATUS_KEYS for p in pushes)
        ws.send_json({"type": "chat", "id": "c", "text": "hello"})
        while (message := ws.receive_json())["type"] == "status":
            pass
        assert (message["type"], message["id"]) == ("reply", "c")


def test_a_breaker_opening_is_pushed_at_once_and_listed_in_recent_signals(
    make_client, token, auth
) -> None:
    client = make_client(
        ws_status_s=3600,  # so only the change itself can cause a push
        responder_breaker_threshold=1,
        app_kwargs={"responder": FailingResponder()},
    )
    with session(client, token) as ws:
        ws.send_json({"type": "chat", "id": "boom", "text": "tell me a story"})
        answered = pushed = None
        while answered is None or pushed is None:
            message = ws.receive_json()
            if message["type"] == "status":
                pushed = message["status"]
            else:
                answered = message
        assert answered["id"] == "boom"
        assert pushed["breakers"]["responder"] == "open"
        [opened] = [s for s in pushed["signals"] if s["signal"] == "breaker.opened"]
        assert opened["fields"] == {"breaker": "responder", "previous": "closed"}
    [opened] = recent_signals(client, auth, "breaker.opened")
    assert opened["fields"]["breaker"] == "responder"
    assert "model fell over" not in json.dumps(opened)


# -- reconnect storms -----------------------------------------------------------------------


def test_a_reconnect_storm_is_closed_1013_with_a_retry_hint_until_the_window_ends(
    make_client, token, auth
) -> None:
    clock = ManualClock()
    client = make_client(
        ws_reconnect_limit=3, ws_reconnect_window_s=60, app_kwargs={"clock": clock}
    )
    for _ in range(3):
        with session(client, token):
            pass
    clock.advance(10)
    assert refused_with(client) == (TRY_AGAIN_LATER, {"retry_after_s": 50})
    clock.advance(20)
    assert refused_with(client) == (TRY_AGAIN_LATER, {"retry_after_s": 30})
    assert signal_count(client, auth, "ws.reconnect_storm") == 2  # each refusal counted
    [storm] = recent_signals(client, auth, "ws.reconnect_storm")  # one log line per storm
    assert storm["fields"] == {"client": "testclient", "limit": 3, "window_s": 60.0}
    assert signal_count(client, auth, "ws.server_disconnect") == 2

    with from_address(client, "192.0.2.7"), session(client, token) as ws:  # another client
        ws.send_json({"type": "chat", "id": 1, "text": "hello"})
        assert ws.receive_json()["type"] == "reply"

    clock.advance(30)  # the window is over
    with session(client, token) as ws:
        ws.send_json({"type": "ping", "id": "back"})
        assert ws.receive_json() == {"type": "pong", "id": "back"}
    assert signal_count(client, auth, "ws.reconnect_storm") == 2


def test_a_new_storm_after_the_window_is_logged_again(make_client, token, auth) -> None:
    clock = ManualClock()
    client = make_client(ws_reconnect_limit=1, ws_reconnect_window_s=5, app_kwargs={"clock": clock})
    for _ in range(2):
        with session(client, token):
            pass
        assert refused_with(client)[0] == TRY_AGAIN_LATER
        clock.advance(5)
    assert len(recent_signals(client, auth, "ws.reconnect_storm")) == 2


def test_the_reconnect_memory_is_bounded(make_client, token, monkeypatch) -> None:
    from denis.api import ws_guard  # noqa: PLC0415

    monkeypatch.setattr(ws_guard, "MAX_CLIENTS", 5)
    clock = ManualClock()
    client = make_client(ws_reconnect_limit=1, app_kwargs={"clock": clock})
    for n in range(20):
        with from_address(client, f"198.51.100.{n}"), session(client, token):
            pass
    assert client.app.state.ws_reconnect_guard.tracked() == 5


# -- frames per second ----------------------------------------------------------------------


def test_too_many_frames_per_second_are_refused_in_band(make_client, token, auth) -> None:
    clock = ManualClock()
    client = make_client(ws_status_s=3600, ws_max_frames_per_s=2, app_kwargs={"clock": clock})
    with session(client, token) as ws:
        for n in range(4):  # a burst of twice the rate
            ws.send_json({"type": "ping", "id": n})
            assert ws.receive_json() == {"type": "pong", "id": n}
        ws.send_json({"type": "chat", "id": "too-fast", "text": "hello"})
        refused = ws.receive_json()
        assert refused["type"] == "error"
        assert refused["id"] == "too-fast"
        assert refused["error"]["code"] == "rate_limited"
        assert refused["retry_after_s"] == 1
        clock.advance(1)
        ws.send_json({"type": "chat", "id": "later", "text": "hello"})
        reply = ws.receive_json()
        assert (reply["type"], reply["id"]) == ("reply", "later")
    assert signal_count(client, auth, "ws.server_disconnect") == 0  # the socket stayed open


def test_a_refused_handshake_counts_as_a_server_disconnect(make_client, auth) -> None:
    client = make_client()
    with client.websocket_connect("/chat") as ws:
        ws.send_json({"type": "auth", "token": "wrong"})
        assert ws.receive_json()["type"] == "error"
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == POLICY_VIOLATION
    assert signal_count(client, auth, "ws.server_disconnect") == 1
