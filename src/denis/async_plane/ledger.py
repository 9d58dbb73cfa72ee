"""The job ledger: journal, idempotency claims, results, dead letters, worker-side signals.

One SQLite file in the data dir (WAL, short busy timeout), shared by the API and every worker
process on the host. Why SQLite and not Celery's result backend: a claim must be atomic across
processes ("run this key's effect at most once"), results must be readable without the broker
(the broker may be the thing that is down), and a Redis result backend subscribes before it
publishes, which hangs on a hung Redis. The limit that follows: workers share the API's data
dir (one host, or a shared volume).

States of a job: ``pending`` (journaled) → ``running`` (claimed by an owner, with a lease) →
``done`` | ``failed`` (may be retried) | ``dead`` (in the dead letter). A claim is refused while
another live owner holds an unexpired lease, and answers the stored result once ``done``.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from denis.resilience import prepare_sqlite, transaction

__all__ = ["Claim", "ClaimState", "DeadLetter", "JobLedger", "JobRecord", "owner_id"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    key TEXT PRIMARY KEY, name TEXT NOT NULL, queue TEXT NOT NULL, args TEXT NOT NULL,
    hops INTEGER NOT NULL DEFAULT 0, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    redispatches INTEGER NOT NULL DEFAULT 0, owner TEXT, lease_until REAL, result TEXT,
    error TEXT, created REAL NOT NULL, updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, updated);
CREATE TABLE IF NOT EXISTS dead_letter (
    key TEXT PRIMARY KEY, name TEXT NOT NULL, queue TEXT NOT NULL, args TEXT NOT NULL,
    error TEXT, attempts INTEGER NOT NULL, created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, signal TEXT NOT NULL, fields TEXT NOT NULL, at REAL NOT NULL
);
"""


def owner_id() -> str:
    return f"{socket.gethostname()}/{os.getpid()}"


def pid_alive(pid: int) -> bool:
    """Whether a process of this host still exists (one we may not signal still counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner_alive(owner: str | None) -> bool:
    if not owner:
        return False
    host, _, pid = owner.rpartition("/")
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another host: only its lease can tell
    return pid_alive(int(pid))


class ClaimState(StrEnum):
    CLAIMED = "claimed"  # run it now
    DONE = "done"  # already done: here is the result
    BUSY = "busy"  # a live owner runs it
    DEAD = "dead"  # in the dead letter: do not run


@dataclass(frozen=True, slots=True)
class Claim:
    state: ClaimState
    attempts: int = 0
    result: Any = None


@dataclass(frozen=True, slots=True)
class JobRecord:
    key: str
    name: str
    queue: str
    args: dict[str, Any]
    hops: int
    state: str
    attempts: int
    redispatches: int
    result: Any
    error: str | None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    key: str
    name: str
    queue: str
    args: dict[str, Any]
    error: str | None
    attempts: int
    created: float


class JobLedger:
    def __init__(
        self, path: Path, *, busy_timeout_s: float = 2.0, open_timeout_s: float = 10.0
    ) -> None:
        self.path = path
        self._busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        prepare_sqlite(path, _SCHEMA, busy_timeout_s=busy_timeout_s, timeout_s=open_timeout_s)

    # -- connection ----------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            conn = sqlite3.connect(self.path, timeout=self._busy_timeout_s, isolation_level=None)
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(self._conn())

    # -- journal and claims --------------------------------------------------------------

    def journal(self, key: str, name: str, queue: str, args: dict[str, Any], hops: int) -> bool:
        """Record a dispatched job; False if the key is already known (nothing changes)."""
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO jobs (key, name, queue, args, hops, state, created, updated)"
                " VALUES (?, ?, ?, ?, ?, 'pending', ?, ?)",
                (key, name, queue, json.dumps(args), hops, now, now),
            )
            return cur.rowcount == 1

    def claim(self, key: str, owner: str, lease_s: float) -> Claim:
        now = time.time()
        with self._tx() as db:
            row = db.execute(
                "SELECT state, owner, lease_until, result, attempts FROM jobs WHERE key = ?", (key,)
            ).fetchone()
            if row is None:
                return Claim(ClaimState.BUSY)  # not journaled: refuse rather than guess
            state, holder, lease_until, result, attempts = row
            if state == "done":
                return Claim(ClaimState.DONE, attempts, json.loads(result or "null"))
            if state == "dead":
                return Claim(ClaimState.DEAD, attempts)
            if state == "running" and (lease_until or 0) > now and _owner_alive(holder):
                return Claim(ClaimState.BUSY, attempts)
            db.execute(
                "UPDATE jobs SET state = 'running', owner = ?, lease_until = ?,"
                " attempts = attempts + 1, updated = ? WHERE key = ?",
                (owner, now + lease_s, now, key),
            )
            return Claim(ClaimState.CLAIMED, attempts + 1)

    def complete(self, key: str, result: Any) -> None:
        self._finish(key, "done", result=json.dumps(result))

    def fail(self, key: str, error: str) -> None:
        self._finish(key, "failed", error=error[:2000])

    def _finish(
        self, key: str, state: str, *, result: str | None = None, error: str | None = None
    ) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET state = ?, result = ?, error = ?, owner = NULL, lease_until = NULL,"
                " updated = ? WHERE key = ?",
                (state, result, error, time.time(), key),
            )

    def get(self, key: str) -> JobRecord | None:
        row = (
            self._conn()
            .execute(
                "SELECT key, name, queue, args, hops, state, attempts, redispatches, result, error"
                " FROM jobs WHERE key = ?",
                (key,),
            )
            .fetchone()
        )
        if row is None:
            return None
        k, name, queue, args, hops, state, attempts, redispatches, result, error = row
        return JobRecord(
            k, name, queue, json.loads(args), hops, state, attempts, redispatches,
            json.loads(result) if result else None, error,
        )  # fmt: skip

    def stale(self, queue: str, older_than_s: float, limit: int = 100) -> list[JobRecord]:
        """Jobs of ``queue`` journaled or claimed long ago and not finished, whose owner is gone."""
        cutoff, now = time.time() - older_than_s, time.time()
        rows = (
            self._conn()
            .execute(
                "SELECT key, owner, lease_until FROM jobs WHERE queue = ? AND state IN ('pending', 'running')"
                " AND updated < ? ORDER BY updated LIMIT ?",
                (queue, cutoff, limit),
            )
            .fetchall()
        )
        stale = [
            key
            for key, owner, lease_until in rows
            if owner is None or (lease_until or 0) < now or not _owner_alive(owner)
        ]
        return [record for key in stale if (record := self.get(key)) is not None]

    def requeue(self, key: str) -> None:
        """A failed attempt whose retry is scheduled: pending again, so the journal sweep
        re-dispatches it if the retry is lost with its worker."""
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET state = 'pending', updated = ? WHERE key = ? AND state = 'failed'",
                (time.time(), key),
            )

    def mark_redispatched(self, key: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET state = 'pending', owner = NULL, lease_until = NULL,"
                " redispatches = redispatches + 1, updated = ? WHERE key = ? AND state != 'done'",
                (time.time(), key),
            )

    # -- dead letter ---------------------------------------------------------------------

    def bury(self, key: str, error: str) -> bool:
        """Move a job to the dead letter; True only the first time (exactly once per key)."""
        now = time.time()
        with self._tx() as db:
            row = db.execute(
                "SELECT name, queue, args, attempts FROM jobs WHERE key = ?", (key,)
            ).fetchone()
            if row is None:
                return False
            name, queue, args, attempts = row
            cur = db.execute(
                "INSERT OR IGNORE INTO dead_letter (key, name, queue, args, error, attempts, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key, name, queue, args, error[:2000], attempts, now),
            )
            db.execute(
                "UPDATE jobs SET state = 'dead', error = ?, owner = NULL, updated = ? WHERE key = ?",
                (error[:2000], now, key),
            )
            return cur.rowcount == 1

    def dead_letters(self) -> list[DeadLetter]:
        rows = (
            self._conn()
            .execute(
                "SELECT key, name, queue, args, error, attempts, created FROM dead_letter ORDER BY created"
            )
            .fetchall()
        )
        return [DeadLetter(k, n, q, json.loads(a), e, t, c) for k, n, q, a, e, t, c in rows]

    def resurrect(self, key: str) -> JobRecord | None:
        """Take a job out of the dead letter and make it pending again (for a replay)."""
        with self._tx() as db:
            cur = db.execute("DELETE FROM dead_letter WHERE key = ?", (key,))
            if cur.rowcount != 1:
                return None
            db.execute(
                "UPDATE jobs SET state = 'pending', attempts = 0, error = NULL, updated = ? WHERE key = ?",
                (time.time(), key),
            )
        return self.get(key)

    def purge_dead_letters(self) -> int:
        with self._tx() as db:
            return db.execute("DELETE FROM dead_letter").rowcount

    # -- signals from worker processes ---------------------------------------------------

    def record_event(self, signal: str, **fields: Any) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO events (signal, fields, at) VALUES (?, ?, ?)",
                (signal, json.dumps(fields, default=str), time.time()),
            )

    def events_after(self, last_id: int, limit: int = 500) -> list[tuple[int, str, dict[str, Any]]]:
        rows = (
            self._conn()
            .execute(
                "SELECT id, signal, fields FROM events WHERE id > ? ORDER BY id LIMIT ?",
                (last_id, limit),
            )
            .fetchall()
        )
        return [(i, s, json.loads(f)) for i, s, f in rows]

    def last_event_id(self) -> int:
        row = self._conn().execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()
        return int(row[0])
