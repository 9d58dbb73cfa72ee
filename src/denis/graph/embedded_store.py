"""The embedded graph store: LadybugDB (the maintained continuation of Kùzu) in the data dir.

The default when no ``DENIS_GRAPH_URL`` is set, so ``make run`` needs no server. LadybugDB's
API is synchronous: every call runs on one dedicated thread (its connection is not shared
across threads) under our own timeout, so no caller waits past it. The engine is also asked to
stop such a query (``set_query_timeout`` and ``interrupt``), but a query spent in one long
operator (e.g. ``UNWIND range(1, 10^9)``) runs to its end and holds the thread meanwhile, so
later calls time out too until it finishes. The database is owned by one process (the API);
another process opening it gets a lock error (and starts in legacy mode).

DecisionTraces go in as one string a batch (``_encode_traces``), split into rows and fields by
the engine. LadybugDB's binding converts every parameter value to the engine's types while it
holds the GIL: a batch passed as rows of nine values cost about 23 µs of GIL a trace (and 42 µs
of CPU), time the event loop serving requests could not run. As one string the engine does the
splitting with the GIL released: about 4 µs of GIL a trace (0.5 of it encoding) and 11 to 22 µs
of CPU on the writer's threads (``benchmarks/RESULTS.md``, section 1, fourth round).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import ladybug

from denis.graph.model import DecisionTrace
from denis.graph.store import CypherStore, GraphError, Statement
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

# ASCII's record and unit separators between rows and fields. Every field starts with ``~``
# (a value) or is ``!`` (NULL): ``string_split`` drops empty fields between two separators.
_ROW_SEP, _FIELD_SEP = "\x1e", "\x1f"
_SEPARATORS = str.maketrans({_ROW_SEP: "\ufffd", _FIELD_SEP: "\ufffd"})


def _field(i: int) -> str:
    return f"substring(r[{i}], 2, size(r[{i}]) - 1)"


_SPLIT_TRACES = "UNWIND string_split($batch, $rows) AS line WITH string_split(line, $fields) AS r "
_TRACE_VALUES = {
    "at": _field(2),
    "user": _field(3),
    "text": _field(4),
    "intent": _field(5),
    "tool": f"CASE WHEN r[6] = '!' THEN NULL ELSE {_field(6)} END",
    "outcome": _field(7),
    "duration_ms": f"CAST({_field(8)} AS DOUBLE)",
    "modes": f"CASE WHEN r[9] = '~' THEN CAST([] AS STRING[]) ELSE string_split({_field(9)}, ',') END",
}
_CREATE_TRACES = (
    _SPLIT_TRACES
    + f"CREATE (x:DecisionTrace {{trace_id: {_field(1)}, "
    + ", ".join(f"{name}: {value}" for name, value in _TRACE_VALUES.items())
    + "})"
)
# A trace written twice (a spilled batch whose first write did commit) stays one trace.
_MERGE_TRACES = (
    _SPLIT_TRACES
    + f"MERGE (x:DecisionTrace {{trace_id: {_field(1)}}}) SET "
    + ", ".join(f"x.{name} = {value}" for name, value in _TRACE_VALUES.items())
)


def _encode_traces(traces: list[DecisionTrace]) -> str:
    """The batch as one string: rows of nine fields (``_CREATE_TRACES`` reads them back).
    A separator inside a value becomes U+FFFD; modes are zone names (no commas).

    Values almost never hold a separator, so the batch is first joined as it is and kept if
    it holds exactly the separators the join put in; otherwise it is joined again from cleaned
    copies of the traces. One count per batch instead of a translation per value."""
    batch = _join(traces)
    if batch.count(_FIELD_SEP) == 8 * len(traces) and batch.count(_ROW_SEP) == len(traces) - 1:
        return batch
    return _join([_cleaned(t) for t in traces])


def _join(traces: list[DecisionTrace]) -> str:
    # ``_FIELD_SEP`` written out in the literal: one f-string a row, nothing else to format
    return _ROW_SEP.join(
        f"~{t.trace_id}\x1f~{t.at}\x1f~{t.user}\x1f~{t.text}\x1f~{t.intent}\x1f"
        f"{'!' if t.tool is None else '~' + t.tool}\x1f~{t.outcome}\x1f"
        f"~{float(t.duration_ms)!r}\x1f~{','.join(t.modes)}"
        for t in traces
    )


def _cleaned(trace: DecisionTrace) -> DecisionTrace:
    def clean(value: str) -> str:
        return value.translate(_SEPARATORS)

    return dataclasses.replace(
        trace,
        trace_id=clean(trace.trace_id),
        at=clean(trace.at),
        user=clean(trace.user),
        text=clean(trace.text),
        intent=clean(trace.intent),
        tool=None if trace.tool is None else clean(trace.tool),
        outcome=clean(trace.outcome),
        modes=tuple(map(clean, trace.modes)),
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
        trace at 4,000, 153 µs at 24,000, measured with rows as parameters), a ``CREATE`` does
        not grow (17 to 22 µs a trace from 0 to 200,000 stored, batches of 200)."""
        if not traces:
            return
        params = {"batch": _encode_traces(traces), "rows": _ROW_SEP, "fields": _FIELD_SEP}

        def write() -> None:
            assert self._conn is not None  # noqa: S101
            for query in (_CREATE_TRACES, _MERGE_TRACES):
                self._conn.execute("BEGIN TRANSACTION")
                try:
                    self._conn.execute(query, params)
                except BaseException as exc:
                    # A failed statement may have ended the transaction already.
                    with contextlib.suppress(RuntimeError):
                        self._conn.execute("ROLLBACK")
                    duplicate = isinstance(exc, RuntimeError) and "duplicated primary key" in str(
                        exc
                    )
                    if query is _MERGE_TRACES or not duplicate:
                        raise
                    continue  # a trace in this batch is stored already: MERGE it
                self._conn.execute("COMMIT")
                return

        await self._run(write, timeout_s)

    async def close(self) -> None:
        self._thread.shutdown(wait=True, cancel_futures=True)
        self._conn = None
