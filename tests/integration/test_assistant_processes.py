"""The assistant as ``make run`` runs it: a real API process and real ``denis worker`` groups
sharing one data dir (the demo home's file, the job ledger, the file-based broker).

Proven here: a device command is run by a worker (not inline by the API) and changes the
demo home; its state survives the API's restart; the reply's audio is made by the ``tts``
worker and served.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from denis.cli import UP_WORKERS
from servers import create_token

pytestmark = pytest.mark.integration

API_ENV = {"DENIS_WORKER_HEARTBEAT_S": "1"}
WORKER_ENV = {"DENIS_WORKER_HEARTBEAT_S": "0.5"}


def _wait_for_workers(http: httpx.Client, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if http.get("/status").json()["zones"]["async"]["mode"] == "normal":
            return
        time.sleep(0.2)
    raise AssertionError("the workers were not seen by the API")


def _chat(http: httpx.Client, text: str) -> dict[str, Any]:
    response = http.post("/chat", json={"text": text, "session_id": "p"})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _tool_results(data_dir: Path, name: str) -> list[dict[str, Any]]:
    with sqlite3.connect(data_dir / "jobs.sqlite3") as conn:
        rows = conn.execute("SELECT result FROM jobs WHERE name = ?", (name,)).fetchall()
    return [json.loads(r[0]) for r in rows if r[0]]


def test_a_worker_runs_the_command_and_the_home_remembers_it_across_a_restart(
    denis_factory, worker_factory, data_dir
) -> None:
    for queues, concurrency, beat in UP_WORKERS:
        worker_factory(queues, WORKER_ENV, concurrency=concurrency, beat=beat)
    api = denis_factory(API_ENV)
    token = create_token(data_dir, "alice")
    with httpx.Client(
        base_url=api.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as http:
        _wait_for_workers(http)
        reply = _chat(http, "turn on the kitchen light")
        assert reply["reply"].startswith("Done: the kitchen light is on"), reply
        assert reply["degraded"] == []
        results = _tool_results(data_dir, "tool.device.turn_on")
        assert len(results) == 1
        assert api.proc is not None
        assert results[0]["pid"] != api.proc.pid, "run by a worker, not inline by the API"
        assert reply["audio_url"] is not None
        audio = http.get(reply["audio_url"])
        assert (audio.status_code, audio.content[:4]) == (200, b"RIFF")
    api.stop()
    again = denis_factory(API_ENV)
    with httpx.Client(
        base_url=again.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as http:
        _wait_for_workers(http)
        assert _chat(http, "is the kitchen light on?")["reply"].startswith(
            "Yes, the kitchen light is on"
        )
