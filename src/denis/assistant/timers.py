"""Kitchen timers: started, asked about and cancelled by voice, kept in the data dir.

A small SQLite table shared by the API's inline pool and the workers (the tools run in
either). Times are wall-clock (``time.time``) because they cross processes. A timer that ends
is simply no longer active: Denis has no way yet to ring at the end (no push channel to the
user outside a request), which the reply says when the timer is set.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from denis.resilience import prepare_sqlite

__all__ = ["Timer", "TimerStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS timers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user TEXT NOT NULL,
    duration_s INTEGER NOT NULL,
    ends_at REAL NOT NULL,
    cancelled INTEGER NOT NULL DEFAULT 0
)
"""
_MAX_DURATION_S = 7 * 24 * 3600


@dataclass(frozen=True, slots=True)
class Timer:
    id: int
    duration_s: int
    remaining_s: int


class TimerStore:
    def __init__(self, path: Path, *, busy_timeout_s: float = 2.0) -> None:
        self._path = path
        self._busy_timeout_s = busy_timeout_s
        self._prepared = False

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        if not self._prepared:  # WAL and the table, once per store
            prepare_sqlite(self._path, _SCHEMA, busy_timeout_s=self._busy_timeout_s)
            self._prepared = True
        conn = sqlite3.connect(self._path, timeout=self._busy_timeout_s, isolation_level=None)
        try:
            yield conn
        finally:
            conn.close()

    def start(self, user: str, duration_s: int) -> Timer:
        if not 0 < duration_s <= _MAX_DURATION_S:
            raise ValueError(f"a timer lasts between 1 s and {_MAX_DURATION_S} s")
        with self._connect() as conn:
            cursor = conn.execute(
                "INSERT INTO timers (user, duration_s, ends_at) VALUES (?, ?, ?)",
                (user, duration_s, time.time() + duration_s),
            )
            timer_id = int(cursor.lastrowid or 0)
        return Timer(timer_id, duration_s, duration_s)

    def active(self, user: str) -> list[Timer]:
        now = time.time()
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT id, duration_s, ends_at FROM timers "
                "WHERE user = ? AND cancelled = 0 AND ends_at > ? ORDER BY ends_at",
                (user, now),
            ).fetchall()
        return [Timer(int(r[0]), int(r[1]), max(1, round(r[2] - now))) for r in rows]

    def cancel_all(self, user: str) -> int:
        with self._connect() as conn:
            cursor = conn.execute(
                "UPDATE timers SET cancelled = 1 WHERE user = ? AND cancelled = 0 AND ends_at > ?",
                (user, time.time()),
            )
            return cursor.rowcount
