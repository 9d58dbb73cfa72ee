"""The hard time limit on the prefork pool: a job that ignores the soft limit is killed, lands
in the dead letter exactly once (Celery can report a hard time limit twice), and the worker
goes on to the next job."""

from __future__ import annotations

import time

import httpx
import pytest

from servers import create_token

pytestmark = pytest.mark.integration

LIMITS = {"DENIS_JOB_TIME_LIMIT_S": "2", "DENIS_JOB_SOFT_TIME_LIMIT_S": "1"}


def test_a_job_past_the_hard_limit_is_killed_and_dead_lettered_once(
    denis_factory, worker_factory, data_dir
) -> None:
    admin = {"Authorization": f"Bearer {create_token(data_dir, 'root', admin=True)}"}
    env = {**LIMITS, "DENIS_WORKER_HEARTBEAT_S": "0.5"}
    worker = worker_factory("tools_mut,tools_ro", env)
    api = denis_factory(env=env)
    with httpx.Client(base_url=api.url, headers=admin, timeout=20) as client:
        job = {"name": "diag.stubborn", "args": {"seconds": 20}, "key": "stubborn-1", "wait": False}
        queued = client.post("/jobs", json=job)
        assert queued.json()["state"] == "queued", queued.text

        deadline = time.monotonic() + 30
        letters: list[dict[str, object]] = []
        while time.monotonic() < deadline and not letters:
            letters = client.get("/admin/dlq").json()["dead_letters"]
            time.sleep(0.2)
        assert [letter["key"] for letter in letters] == ["stubborn-1"]
        assert "hard time limit" in str(letters[0]["error"])

        time.sleep(2)  # a second report of the same kill must not add a second letter
        assert len(client.get("/admin/dlq").json()["dead_letters"]) == 1
        assert worker.proc is not None
        assert worker.proc.poll() is None  # the worker survived its child being killed
        echo = client.post("/jobs", json={"name": "diag.echo.tools_ro", "args": {"n": 1}})
        assert echo.json()["state"] == "done"
        assert echo.json()["inline"] is False
