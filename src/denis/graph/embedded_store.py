"""The embedded graph store: LadybugDB (the maintained continuation of Kùzu) in the data dir.

The default when no ``DENIS_GRAPH_URL`` is set, so ``make run`` needs no server. LadybugDB's
API is synchronous: every call runs on one dedicated thread (its connection is not shared
across threads) under our own timeout, so no caller waits past it. The engine is also asked to
stop such a query (``set_query_timeout`` and ``interrupt``), but a query spent in one long
operator (e.g. ``UNWIND range(1, 10^9)``) runs to its end and holds the thread meanwhile, so
later calls time out too until it finishes. The database is owned by one process (the API);
another process opening it gets a lock error (and starts in legacy mode).
"""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import ladybug

from denis.graph.model import DecisionTrace
from denis.graph.store import (
    CREATE_TRACES,
    MERGE_TRACES,
    CypherStore,
    GraphError,
    Statement,
    trace_rows,
)
from denis.resilience import Signal

__all__ = ["EmbeddedGraphStore"]

IN_MEMORY = ":memory:"
_SCHEMA = (
    "CREATE NODE TABLE IF NOT EXISTS Intent(name STRING PRIMARY KEY)",
    "CREATE NODE TABLE IF NOT EXISTS Tool(name STRING PRIMARY KEY, queue STRING)",
    "CREATE REL TABLE IF NOT EXISTS ROUTES_TO(FROM Intent TO Tool)",
    "CREATE NODE TABLE IF NOT EXISTS Policy(name STRING PRIMARY KEY, users STRING[], confirm BOOLEAN)",
    "CREATE REL TABLE IF NOT EXISTS GOVERNS(FROM Policy TO Tool)",
    "CREATE NODE TABLE IF NOT EXISTS Area(id STRING PRIMARY KEY, name STRING, aliases STRING[])",
    "CREATE NODE TABLE IF NOT EXISTS Device(id STRING PRIMARY KEY, name STRING, domain STRING, aliases STRING[])",
    "CREATE REL TABLE IF NOT EXISTS IN_AREA(FROM Device TO Area)",
    "CREATE NODE TABLE IF NOT EXISTS DecisionTrace(trace_id STRING PRIMARY KEY, at STRING, user STRING,"
    " text STRING, intent STRING, tool STRING, outcome STRING, duration_ms DOUBLE, modes STRING[])",
)


class EmbeddedGraphStore(CypherStore):
    def __init__(self, path: Path, query_timeout_s: float = 2.0) -> None:
        self._path = path
        self._query_timeout_ms = max(1, int(query_timeout_s * 1000))
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="denis-graph")
        self._conn: ladybug.Connection | None = None

    async def open(self) -> EmbeddedGraphStore:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._open)
        return self

    def _open(self) -> None:
        if str(self._path) != IN_MEMORY:
            self._path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = ladybug.Connection(ladybug.Database(str(self._path)))
        for statement in _SCHEMA:
            self._conn.execute(statement)
        self._conn.set_query_timeout(self._query_timeout_ms)

    async def _run(self, fn: Any, timeout_s: float) -> Any:
        try:
            async with asyncio.timeout(timeout_s):
                return await asyncio.get_running_loop().run_in_executor(self._thread, fn)
        except TimeoutError as exc:
            if self._conn is not None:
                self._conn.interrupt()  # free the one thread for the next call
            raise GraphError("the embedded graph timed out", Signal.NEO4J_QUERY_TIMEOUT) from exc
        except RuntimeError as exc:
            raise GraphError(f"the embedded graph failed: {exc}") from exc

    async def _read(self, query: str, params: dict[str, Any], timeout_s: float) -> list[list[Any]]:
        def read() -> list[list[Any]]:
            assert self._conn is not None  # noqa: S101 - opened before use
            result = self._conn.execute(query, params)
            return [list(row) for row in result.get_all()]  # type: ignore[union-attr]

        rows: list[list[Any]] = await self._run(read, timeout_s)
        return rows

    async def _write(self, statements: list[Statement], timeout_s: float) -> None:
        def write() -> None:
            assert self._conn is not None  # noqa: S101
            self._conn.execute("BEGIN TRANSACTION")
            try:
                for query, params in statements:
                    self._conn.execute(query, params)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

        await self._run(write, timeout_s)

    async def write_traces(self, traces: list[DecisionTrace], timeout_s: float) -> None:
        """``CREATE``, and ``MERGE`` only for a batch holding a trace already stored: in
        LadybugDB a ``MERGE`` on the primary key costs more the more traces there are (62 µs a
        trace at 4,000, 153 µs at 24,000), a ``CREATE`` stays near 35 µs."""
        rows = trace_rows(traces)

        def write() -> None:
            assert self._conn is not None  # noqa: S101
            for query in (CREATE_TRACES, MERGE_TRACES):
                self._conn.execute("BEGIN TRANSACTION")
                try:
                    self._conn.execute(query, {"rows": rows})
                except BaseException as exc:
                    # A failed statement may have ended the transaction already.
                    with contextlib.suppress(RuntimeError):
                        self._conn.execute("ROLLBACK")
                    duplicate = isinstance(exc, RuntimeError) and "duplicated primary key" in str(
                        exc
                    )
                    if query is MERGE_TRACES or not duplicate:
                        raise
                    continue  # a trace in this batch is stored already: MERGE it
                self._conn.execute("COMMIT")
                return

        await self._run(write, timeout_s)

    async def close(self) -> None:
        self._thread.shutdown(wait=True, cancel_futures=True)
        self._conn = None
