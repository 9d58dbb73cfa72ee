"""Opening a SQLite file that several processes on the host share (the job ledger, the demo
home, the timers): WAL mode and the schema, retried while another process holds a new file.

The API and its workers start together and may all find a file new. Turning a new file to WAL
needs it exclusively, and SQLite answers a lock it cannot wait for without risking a deadlock
(a reader that would have to upgrade while another process waits to commit) with "database is
locked" at once, whatever the busy timeout. Eight processes opening a new file at once failed
that way in about one round in six (the job ledger; 9 rounds in 60 for the demo home, 3 in 60
for the timers): a worker died at start, a turn's home or timer call failed. ``prepare_sqlite``
retries such an error on a fresh connection, with jitter, until its own deadline. WAL mode is
kept in the file, so later connections only need a busy timeout for ordinary waits.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

__all__ = ["is_lock_error", "prepare_sqlite", "transaction"]

_OPEN_TIMEOUT_S = 10.0


def is_lock_error(exc: sqlite3.OperationalError) -> bool:
    text = str(exc)
    return "locked" in text or "busy" in text


def prepare_sqlite(
    path: Path, schema: str, *, busy_timeout_s: float = 2.0, timeout_s: float = _OPEN_TIMEOUT_S
) -> None:
    """Create ``path`` if needed, put it in WAL mode and run ``schema`` (idempotent DDL).

    Retries while the file is locked, up to ``timeout_s``; then, or on any other error,
    raises ``sqlite3.OperationalError`` / ``sqlite3.Error``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with closing(sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None)) as db:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(schema)  # commits by itself
        except sqlite3.OperationalError as exc:
            if not is_lock_error(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(random.uniform(0.01, 0.05))  # noqa: S311 - jitter, not a secret
        else:
            return


@contextmanager
def transaction(db: sqlite3.Connection, *, write: bool = True) -> Iterator[sqlite3.Connection]:
    """One transaction on ``db`` (opened with ``isolation_level=None``): ``BEGIN IMMEDIATE``
    for a write, so the write lock is taken up front and waited for under the busy timeout
    (never an upgrade that SQLite would refuse at once), ``BEGIN`` for a read; rolled back if
    the block raises."""
    db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
