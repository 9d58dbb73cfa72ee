"""DecisionTrace never blocks: a bounded buffer on the request path, a writer in the background.

``record`` appends to an in-memory buffer and returns (no I/O, no await). The writer drains it
in batches into the graph. When the graph is down, or the buffer is full, traces go to a local
JSON-lines log (``decisiontrace.jsonl``), and only when even that write fails are they counted
as dropped (``decisiontrace.dropped``). Traces in the local log are written back to the graph
when it is healthy again. ``neo4j.write_queue`` is the buffer's level (a gauge, and a signal
once each time the buffer fills up).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from pathlib import Path

import structlog
from prometheus_client import Gauge

from denis.graph.model import DecisionTrace
from denis.graph.resolver import GraphResolver
from denis.resilience import Clock, Deadline, Signal, Signals

__all__ = ["TraceRecorder"]

_log = structlog.get_logger("denis.graph")
_WRITE_BACK_BATCHES = 5


class TraceRecorder:
    def __init__(  # noqa: PLR0913 - explicit wiring
        self,
        *,
        resolver: GraphResolver,
        signals: Signals,
        clock: Clock,
        spill_path: Path,
        capacity: int,
        batch_size: int,
        flush_s: float,
        write_timeout_s: float,
    ) -> None:
        self._resolver = resolver
        self._signals = signals
        self._clock = clock
        self._spill_path = spill_path
        self._capacity = capacity
        self._batch_size = batch_size
        self._flush_s = flush_s
        self._write_timeout_s = write_timeout_s
        self._buffer: deque[DecisionTrace] = deque()
        self._full = False
        self._level: Gauge = signals.metrics.trace_buffer_level
        self.written = 0

    def __len__(self) -> int:
        return len(self._buffer)

    def record(self, trace: DecisionTrace) -> None:
        """On the request path: never awaits, never raises."""
        if len(self._buffer) < self._capacity:
            self._buffer.append(trace)
            return
        if not self._full:
            self._full = True
            self._signals.emit(Signal.NEO4J_WRITE_QUEUE, level=len(self._buffer), state="full")
        self._spill([trace])

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._flush_s)
            try:
                await self.flush()
            except Exception as exc:  # noqa: BLE001 - the writer must outlive any one flush
                _log.error("decisiontrace.flush_failed", error=type(exc).__name__)

    async def flush(self) -> None:
        self._level.set(len(self._buffer))
        while self._buffer:
            batch = [
                self._buffer.popleft() for _ in range(min(self._batch_size, len(self._buffer)))
            ]
            if not await self._write(batch):
                # The graph is down: the whole buffer goes to the log in one step, so it never
                # fills up (which would put file writes on the request path).
                rest = batch + list(self._buffer)
                self._buffer.clear()
                await asyncio.to_thread(self._spill, rest)
                break
        self._level.set(len(self._buffer))
        if self._full and len(self._buffer) <= self._capacity // 2:
            self._full = False
        if not self._resolver.legacy:
            await self._write_back()

    async def drain(self) -> None:
        """At shutdown: whatever cannot reach the graph goes to the local log."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.flush(), self._write_timeout_s)
        if self._buffer:
            self._spill(list(self._buffer))
            self._buffer.clear()

    async def _write(self, batch: list[DecisionTrace]) -> bool:
        deadline = Deadline.start(self._clock, self._write_timeout_s)
        done = await self._resolver.write_traces(batch, deadline)
        if done:
            self.written += len(batch)
        return done

    def _spill(self, traces: list[DecisionTrace]) -> None:
        try:
            with self._spill_path.open("a", encoding="utf-8") as log:
                log.writelines(json.dumps(t.to_json()) + "\n" for t in traces)
        except OSError:
            for _ in traces:
                self._signals.count(Signal.DECISIONTRACE_DROPPED)

    async def _write_back(self) -> None:
        replay = self._spill_path.with_suffix(".replaying")
        if not self._spill_path.exists() and not replay.exists():
            return
        if not replay.exists():
            with contextlib.suppress(OSError):
                self._spill_path.replace(replay)
        try:
            lines = (await asyncio.to_thread(replay.read_text, encoding="utf-8")).splitlines()
        except OSError:
            return
        traces = [t for t in map(self._parse, lines) if t is not None]
        for start in range(
            0, min(len(traces), self._batch_size * _WRITE_BACK_BATCHES), self._batch_size
        ):
            if not await self._write(traces[start : start + self._batch_size]):
                rest = traces[start:]
                await asyncio.to_thread(self._rewrite, replay, rest)
                return
        rest = traces[self._batch_size * _WRITE_BACK_BATCHES :]
        await asyncio.to_thread(self._rewrite, replay, rest)
        _log.info("decisiontrace.written_back", count=len(traces) - len(rest))

    def _parse(self, line: str) -> DecisionTrace | None:
        """One line of the log; a torn one (a crash mid-append) is counted as dropped."""
        if not line.strip():
            return None
        try:
            return DecisionTrace.from_json(json.loads(line))
        except (ValueError, TypeError):
            self._signals.count(Signal.DECISIONTRACE_DROPPED)
            return None

    def _rewrite(self, path: Path, traces: list[DecisionTrace]) -> None:
        if not traces:
            path.unlink(missing_ok=True)
            return
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(t.to_json()) + "\n" for t in traces), encoding="utf-8")
        tmp.replace(path)
