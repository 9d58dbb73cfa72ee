"""Watches the async plane off the request path: workers, queue lengths, disk, broker.

A background task samples every ``worker_heartbeat_s`` (in a thread, under a timeout) and
requests only read the last sample, so liveness costs a request nothing. It also owns the
broker's mode: the first failed publish or probe enters fail-open (``celery.broker_down``
once per outage), the first success leaves it; while the breaker is open its own queue-length
probe is what brings the broker back without waiting for a request.

Signals: ``celery.worker_down``, ``celery.queue.len`` (past the high-water mark),
``queue.disk_percent`` (past the threshold: background work is refused), and the worker-side
``celery.task.failed`` / ``celery.dead_letter`` read back from the ledger's event table.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from celery import Celery

from denis.async_plane.ledger import JobLedger, pid_alive
from denis.async_plane.queues import WORKER_GROUPS, Queue
from denis.resilience import CircuitBreaker, Signal, Signals, ZoneStatus
from denis.settings import AsyncSettings

__all__ = ["AsyncMonitor", "Sample"]

_log = structlog.get_logger("denis.async_plane")
WORK_QUEUES = tuple(q.value for q in Queue if q is not Queue.DEAD_LETTER)
INTERACTIVE = tuple(q.value for q in WORKER_GROUPS["interactive"])


@dataclass(slots=True)
class Sample:
    served: frozenset[str] = frozenset()
    lengths: dict[str, int] = field(default_factory=dict)
    disk_percent: float | None = None
    events: list[tuple[int, str, dict[str, object]]] = field(default_factory=list)


class AsyncMonitor:
    def __init__(  # noqa: PLR0913 - explicit wiring
        self,
        *,
        settings: AsyncSettings,
        celery: Celery,
        ledger: JobLedger,
        breaker: CircuitBreaker,
        signals: Signals,
        queue_dir: Path | None,
    ) -> None:
        self._settings = settings
        self._celery = celery
        self._ledger = ledger
        self._breaker = breaker
        self._signals = signals
        self._queue_dir = queue_dir
        self._lock = threading.Lock()
        self._last_event_id = ledger.last_event_id()
        self.sample = Sample()
        self.broker_down = False
        self._workers_down = False
        self._disk_full = False
        self._over_high_water: set[str] = set()

    # -- what requests read ------------------------------------------------------------

    @property
    def disk_full(self) -> bool:
        return self._disk_full

    @property
    def disk_max_percent(self) -> float:
        return self._settings.disk_max_percent

    def served(self, queue: str) -> bool:
        return queue in self.sample.served

    def length(self, queue: str) -> int:
        return self.sample.lengths.get(queue, 0)

    def status(self) -> ZoneStatus:
        unserved = [q for q in INTERACTIVE if q not in self.sample.served]
        degraded = self.broker_down or self._breaker.state != "closed" or bool(unserved)
        details = {
            "broker": "redis" if self._settings.broker_url else "filesystem",
            "broker_state": "down" if self.broker_down else "up",
            "workers": {q: q in self.sample.served for q in WORK_QUEUES},
            "disk_percent": self.sample.disk_percent,
            "background_paused": self._disk_full,
        }
        return ZoneStatus("fail_open" if degraded else "normal", details)

    # -- broker mode -------------------------------------------------------------------

    def broker_failed(self, exc: BaseException) -> None:
        with self._lock:
            if self.broker_down:
                return
            self.broker_down = True
        self._signals.emit(Signal.CELERY_BROKER_DOWN, error=type(exc).__name__, fallback="inline")

    def broker_ok(self) -> None:
        with self._lock:
            if not self.broker_down:
                return
            self.broker_down = False
        self._signals.note(
            Signal.RECOVERED, dependency="broker", ended=Signal.CELERY_BROKER_DOWN.value
        )

    # -- sampling ----------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self._settings.worker_heartbeat_s)

    async def refresh(self) -> None:
        try:
            async with asyncio.timeout(max(1.0, self._settings.worker_heartbeat_s * 2)):
                sample = await asyncio.to_thread(self._take_sample)
        except Exception as exc:  # noqa: BLE001 - a failed sample keeps the last one
            _log.info("async_plane.sample_failed", error=type(exc).__name__)
            return
        self._apply(sample)

    def _take_sample(self) -> Sample:
        sample = Sample(served=self._live_queues())
        sample.lengths = self._queue_lengths()
        if self._queue_dir is not None:
            usage = shutil.disk_usage(self._queue_dir)
            sample.disk_percent = round(100.0 * usage.used / usage.total, 2)
        sample.events = self._ledger.events_after(self._last_event_id)
        return sample

    def _live_queues(self) -> frozenset[str]:
        cutoff, here = time.time() - 3 * self._settings.worker_heartbeat_s, socket.gethostname()
        served: set[str] = set()
        for path in (self._settings.data_dir / "workers").glob("*.json"):
            try:
                beat = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if beat.get("at", 0) < cutoff or (
                beat.get("host") == here and not _live_pid(beat.get("pid"))
            ):
                continue
            served.update(str(q) for q in beat.get("queues", []))
        return frozenset(served)

    def _queue_lengths(self) -> dict[str, int]:
        if self._queue_dir is not None:
            counts = dict.fromkeys(WORK_QUEUES, 0)
            for entry in os.scandir(self._queue_dir):
                queue = entry.name.rsplit(".", 2)[-2] if entry.name.endswith(".msg") else ""
                if queue in counts:
                    counts[queue] += 1
            return counts
        permit = self._breaker.try_acquire()
        if permit is None:
            return dict(self.sample.lengths)
        try:
            with self._celery.connection_for_read() as conn:
                channel: Any = conn.default_channel  # a kombu virtual channel: it has _size()
                counts = {q: int(channel._size(q)) for q in WORK_QUEUES}  # noqa: SLF001
        except Exception as exc:  # noqa: BLE001 - the broker is unreachable
            self._breaker.record_failure(permit)
            self.broker_failed(exc)
            return dict(self.sample.lengths)
        self._breaker.record_success(permit)
        self.broker_ok()
        return counts

    def _apply(self, sample: Sample) -> None:
        metrics = self._signals.metrics
        self.sample = sample
        for queue in WORK_QUEUES:
            metrics.worker_up.labels(queue=queue).set(int(queue in sample.served))
            metrics.queue_length.labels(queue=queue).set(sample.lengths.get(queue, 0))
        for last_id, signal, fields in sample.events:
            self._signals.count(Signal(signal))
            self._last_event_id = last_id
            _ = fields
        self._track_workers(sample)
        self._track_high_water(sample)
        self._track_disk(sample)

    def _track_workers(self, sample: Sample) -> None:
        unserved = [q for q in WORK_QUEUES if q not in sample.served]
        if bool(unserved) != self._workers_down:
            self._workers_down = bool(unserved)
            if unserved:
                self._signals.emit(Signal.CELERY_WORKER_DOWN, queues=unserved)
            else:
                self._signals.note(
                    Signal.RECOVERED, dependency="workers", ended=Signal.CELERY_WORKER_DOWN.value
                )

    def _track_high_water(self, sample: Sample) -> None:
        over = {q for q, n in sample.lengths.items() if n > self._settings.queue_high_water}
        for queue in over - self._over_high_water:
            self._signals.emit(Signal.CELERY_QUEUE_LEN, queue=queue, length=sample.lengths[queue])
        self._over_high_water = over

    def _track_disk(self, sample: Sample) -> None:
        if sample.disk_percent is None:
            return
        self._signals.metrics.queue_disk_percent.set(sample.disk_percent)
        full = sample.disk_percent >= self._settings.disk_max_percent
        if full != self._disk_full:
            self._disk_full = full
            if full:
                self._signals.emit(
                    Signal.QUEUE_DISK_PERCENT, percent=sample.disk_percent, paused="background"
                )
            else:
                self._signals.note(
                    Signal.RECOVERED, dependency="queue_disk", ended=Signal.QUEUE_DISK_PERCENT.value
                )


def _live_pid(pid: object) -> bool:
    return isinstance(pid, int) and pid_alive(pid)
