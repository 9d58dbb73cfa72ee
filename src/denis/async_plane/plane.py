"""Builds the async plane from its settings slice: the constructor ``app.py`` calls, and the
dead-letter operations the API and the CLI share."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from denis.async_plane.celery_app import broker_dir, make_celery
from denis.async_plane.dispatch import Dispatcher
from denis.async_plane.jobs import JobRegistry
from denis.async_plane.ledger import DeadLetter, JobLedger
from denis.async_plane.monitor import WORK_QUEUES, AsyncMonitor
from denis.async_plane.runner import JobRunner
from denis.resilience import CircuitBreaker, Clock, Deadline, HealthBoard, Signals
from denis.settings import AsyncSettings

__all__ = ["ASYNC_ZONE", "AsyncPlane", "open_async_plane", "open_ledger"]

ASYNC_ZONE = "async"
_LEASE_MARGIN_S = 30.0


def open_ledger(settings: AsyncSettings) -> JobLedger:
    return JobLedger(settings.data_dir / "jobs.sqlite3")


@dataclass(frozen=True, slots=True)
class AsyncPlane:
    dispatcher: Dispatcher
    ledger: JobLedger
    monitor: AsyncMonitor

    def dead_letters(self) -> list[DeadLetter]:
        return self.ledger.dead_letters()

    async def replay(self, key: str, deadline: Deadline) -> dict[str, Any] | None:
        record = await asyncio.to_thread(self.ledger.resurrect, key)
        if record is None:
            return None
        outcome = await self.dispatcher.redeliver(
            record.name, record.args, key, record.hops, deadline
        )
        return {"key": key, "state": outcome.state, "inline": outcome.inline}

    async def replay_all(self, deadline: Deadline) -> list[dict[str, Any]]:
        letters = await asyncio.to_thread(self.ledger.dead_letters)
        replayed = [await self.replay(letter.key, deadline) for letter in letters]
        return [r for r in replayed if r is not None]

    async def purge(self) -> int:
        return await asyncio.to_thread(self.ledger.purge_dead_letters)


@asynccontextmanager
async def open_async_plane(
    settings: AsyncSettings,
    *,
    registry: JobRegistry,
    signals: Signals,
    health: HealthBoard,
    clock: Clock,
) -> AsyncIterator[AsyncPlane]:
    ledger = await asyncio.to_thread(open_ledger, settings)
    runner = JobRunner(
        registry, ledger, settings.data_dir, settings.job_time_limit_s + _LEASE_MARGIN_S
    )
    celery = make_celery(settings, runner)
    breaker = health.add_breaker(
        CircuitBreaker.configured("broker", settings.broker_breaker, clock)
    )
    monitor = AsyncMonitor(
        settings=settings,
        celery=celery,
        ledger=ledger,
        breaker=breaker,
        signals=signals,
        queue_dir=None if settings.broker_url else broker_dir(settings) / "queue",
    )
    dispatcher = Dispatcher(
        celery=celery,
        runner=runner,
        breaker=breaker,
        monitor=monitor,
        broker_timeout_s=settings.broker_timeout_s,
        inline_timeout_s=settings.inline_timeout_s,
    )
    health.add_zone(ASYNC_ZONE, monitor.status)
    for queue in WORK_QUEUES:
        health.add_queue(queue, lambda q=queue: monitor.length(q))  # type: ignore[misc]
    await monitor.refresh()
    task = asyncio.create_task(monitor.run(), name="denis-async-monitor")
    try:
        yield AsyncPlane(dispatcher, ledger, monitor)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        dispatcher.close()
