"""``denis up``: one command starts the API and both worker groups; Ctrl-C (SIGINT to the
terminal's process group) or SIGTERM stops them all, and a killed ``denis up`` leaves no worker
behind."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from servers import free_port

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone as a process for our purpose.
    state = (
        Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[-1][:1]
        if Path(f"/proc/{pid}").exists()
        else "X"
    )
    return state not in {"Z", "X"}


def _start_up(data_dir: Path) -> tuple[subprocess.Popen[bytes], list[int]]:
    port = free_port()
    env = {**os.environ, "DENIS_DATA_DIR": str(data_dir), "DENIS_PORT": str(port),
           "DENIS_LOG_LEVEL": "WARNING", "DENIS_WORKER_HEARTBEAT_S": "0.5"}  # fmt: skip
    with (data_dir / "up.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "denis", "up"],
            env=env,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        beats = [json.loads(p.read_text()) for p in (data_dir / "workers").glob("*.json")]
        try:
            ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=0.5).status_code == 200
        except httpx.HTTPError:
            ready = False
        if ready and len(beats) == 2:
            return proc, [int(b["pid"]) for b in beats]
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail(f"denis up did not start:\n{(data_dir / 'up.log').read_text()[-2000:]}")


def _wait_gone(pids: list[int], timeout_s: float = 20.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


def test_ctrl_c_stops_the_api_and_every_worker(data_dir) -> None:
    proc, workers = _start_up(data_dir)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends on Ctrl-C
    assert proc.wait(timeout=20) is not None
    assert _wait_gone(workers) == []


def test_a_killed_denis_up_leaves_no_worker_behind(data_dir) -> None:
    proc, workers = _start_up(data_dir)
    proc.kill()  # only denis up itself, not its group
    proc.wait(timeout=10)
    left = _wait_gone(workers)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == []


def test_sigterm_stops_every_worker_before_denis_up_exits(data_dir) -> None:
    """What a service manager sends: SIGTERM to ``denis up`` alone. It stops its workers
    (warm shutdown, then SIGKILL after a bound) before it exits, so "stopped" means stopped,
    and a second SIGTERM while it does so (``make`` passes one on) does not cut that short.
    uvicorn re-raises the SIGTERM it caught once it has shut down; under Python's default
    action that killed ``denis up`` at once and left the workers to fend for themselves."""
    proc, workers = _start_up(data_dir)
    # each worker leads its own process group: a signal to denis up's group is not also sent
    # to the workers' pool children (which could leave a worker hung in its exit)
    assert [os.getpgid(pid) for pid in workers] == workers
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=40)
    left = [pid for pid in workers if _alive(pid)]  # no grace: they must be gone already
    for pid in _wait_gone(left):
        os.kill(pid, signal.SIGKILL)
    assert left == []
