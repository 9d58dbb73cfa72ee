"""``WS /chat`` on a real ``denis serve`` (uvicorn): the 1013 close and its JSON reason reach a
real client, and stopping the server closes an open socket (1012) instead of leaving it hung."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from probes import signal_in, ws_authenticate
from servers import DenisProcess, create_token

pytestmark = pytest.mark.integration

TRY_AGAIN_LATER = 1013
SERVICE_RESTART = 1012
NO_HANG_S = 10.0  # generous bound: proves "did not hang", not a speed


def signal_count(proc: DenisProcess, token: str, name: str) -> float:
    text = httpx.get(
        f"{proc.url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=5
    ).text
    return signal_in(text, name)


def test_a_reconnect_storm_is_refused_1013_with_a_json_retry_hint(
    denis_factory: Callable[..., DenisProcess], tmp_path
) -> None:
    data_dir = tmp_path / "data"
    token = create_token(data_dir, "alice")
    proc = denis_factory(
        {"DENIS_WS_RECONNECT_LIMIT": "2", "DENIS_WS_RECONNECT_WINDOW_S": "600"}, data_dir
    )
    for _ in range(2):
        with connect(proc.ws_url, open_timeout=NO_HANG_S) as ws:
            ready = ws_authenticate(ws, token, NO_HANG_S)
            assert {"zones", "breakers", "queues", "signals"} <= set(ready["status"])
    with (
        connect(proc.ws_url, open_timeout=NO_HANG_S) as ws,
        pytest.raises(ConnectionClosed) as closed,
    ):
        ws.recv(timeout=NO_HANG_S)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == TRY_AGAIN_LATER
    hint = json.loads(closed.value.rcvd.reason)
    assert set(hint) == {"retry_after_s"}
    assert 500 <= hint["retry_after_s"] <= 600
    assert signal_count(proc, token, "ws.reconnect_storm") == 1
    assert signal_count(proc, token, "ws.server_disconnect") == 1
    assert "ws.reconnect_storm" in proc.log_path.read_text()


def test_stopping_the_server_closes_an_open_socket(
    denis_factory: Callable[..., DenisProcess], tmp_path
) -> None:
    data_dir = tmp_path / "data"
    token = create_token(data_dir, "alice")
    proc = denis_factory({"DENIS_WS_STATUS_S": "3600"}, data_dir)
    with connect(proc.ws_url, open_timeout=NO_HANG_S) as ws:
        ws_authenticate(ws, token, NO_HANG_S)
        ws.send(json.dumps({"type": "ping", "id": 1, "t": 5}))
        assert json.loads(ws.recv(timeout=NO_HANG_S)) == {"type": "pong", "id": 1, "t": 5}
        assert proc.proc is not None
        proc.proc.terminate()
        started = time.monotonic()
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=NO_HANG_S)
        assert time.monotonic() - started < NO_HANG_S
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == SERVICE_RESTART
    # a graceful exit: uvicorn shuts down, then re-raises the SIGTERM it caught
    assert proc.proc.wait(timeout=NO_HANG_S) in {0, -signal.SIGTERM}
    assert "Traceback" not in proc.log_path.read_text()
