"""``prepare_sqlite``: the SQLite files the API and the workers share (job ledger, demo home,
timers) open while another process holds a new file, instead of failing at once.

A connection in this process that creates the file and keeps it exclusively locked stands in
for another process creating its tables at the same moment; it lets go after a while, or never.
The race itself, with real processes, is in ``test_ledger.py``.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from denis.assistant.home.demo import FILE_NAME, DemoHome
from denis.assistant.timers import TimerStore
from denis.async_plane.ledger import JobLedger
from denis.graph.model import Device
from denis.resilience import prepare_sqlite

SCHEMA = "CREATE TABLE IF NOT EXISTS t (x INTEGER)"
HELD_S = 0.6  # longer than the busy timeouts below: SQLite's own wait alone would fail


@contextmanager
def held(path: Path, for_s: float | None) -> Iterator[None]:
    """``path`` created and locked exclusively, released after ``for_s`` (None: at the end)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("CREATE TABLE IF NOT EXISTS holder (x)")
    release = None if for_s is None else threading.Timer(for_s, holder.execute, ("COMMIT",))
    if release is not None:
        release.start()
    try:
        yield
    finally:
        if release is not None:
            release.join()
        holder.close()


def journal_mode(path: Path) -> str:
    with sqlite3.connect(path) as db:
        return str(db.execute("PRAGMA journal_mode").fetchone()[0])


def test_a_new_file_gets_wal_and_its_schema(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "f.sqlite3"
    prepare_sqlite(path, SCHEMA)
    prepare_sqlite(path, SCHEMA)  # idempotent
    assert journal_mode(path) == "wal"
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_a_file_held_by_another_process_is_waited_for(tmp_path: Path) -> None:
    path = tmp_path / "f.sqlite3"
    began = time.monotonic()
    with held(path, HELD_S):
        prepare_sqlite(path, SCHEMA, busy_timeout_s=0.05, timeout_s=10.0)
    assert time.monotonic() - began >= HELD_S
    assert journal_mode(path) == "wal"


def test_a_file_that_stays_held_fails_after_the_timeout(tmp_path: Path) -> None:
    path = tmp_path / "f.sqlite3"
    with held(path, None):
        began = time.monotonic()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            prepare_sqlite(path, SCHEMA, busy_timeout_s=0.05, timeout_s=0.3)
        assert 0.3 <= time.monotonic() - began < 5.0


def test_an_error_other_than_a_lock_is_not_retried(tmp_path: Path) -> None:
    began = time.monotonic()
    with pytest.raises(sqlite3.OperationalError, match="syntax"):
        prepare_sqlite(tmp_path / "f.sqlite3", "CREATE TABLE (", timeout_s=10.0)
    assert time.monotonic() - began < 2.0


def test_the_job_ledger_waits_for_its_file(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    with held(path, HELD_S):
        ledger = JobLedger(path, busy_timeout_s=0.05)
    assert ledger.journal("k", "t.ok", "tools_ro", {}, 0)
    assert journal_mode(path) == "wal"


def test_the_demo_home_waits_for_its_file(tmp_path: Path) -> None:
    lamp = Device("light.kitchen", "Kitchen light", "kitchen", "light")
    with held(tmp_path / FILE_NAME, HELD_S):
        home = DemoHome(tmp_path, [lamp], busy_timeout_s=0.05)
    assert home.get_state("light.kitchen").state == "off"


def test_the_timers_wait_for_their_file(tmp_path: Path) -> None:
    path = tmp_path / "timers.sqlite3"
    with held(path, HELD_S):
        timer = TimerStore(path, busy_timeout_s=0.05).start("alice", 60)
    assert [t.id for t in TimerStore(path).active("alice")] == [timer.id]
