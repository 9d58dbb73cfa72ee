"""Dispatch with fail-open: queue the job if the broker and a worker can take it, else run it
here, within the request's deadline.

Detection is bounded: a publish runs in a small thread pool under ``broker_timeout_s`` (the
transport's own socket timeouts are set too, so the thread itself comes back), behind a
breaker, so once the broker is known bad no request waits on it at all. A publish that timed
out may still have reached the broker; the job then also runs here, and the ledger's claim
keeps its effect to one.

An inline run is one attempt, not retried: its failure is answered to the caller at once.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

from celery import Celery

from denis.async_plane.celery_app import HOP_FIELD, RUN_TASK
from denis.async_plane.jobs import JobSpec
from denis.async_plane.monitor import AsyncMonitor
from denis.async_plane.queues import POLICIES
from denis.async_plane.runner import JobRunner, RunResult
from denis.errors import DependencyUnavailableError, QueueFullError
from denis.resilience import CircuitBreaker, Deadline, check_hops, next_hop

__all__ = ["Dispatcher", "JobOutcome"]

_POLL_S = 0.02
_REPLY_MARGIN_S = 0.2


@dataclass(frozen=True, slots=True)
class JobOutcome:
    key: str
    state: str  # "done" | "failed" | "queued" | "running" | "busy" | "dead"
    queue: str
    inline: bool
    result: Any = None
    error: str | None = None

    @property
    def unsettled(self) -> bool:
        """Sent, but not (yet) answered: the job may still run after the caller gave up."""
        return self.state in ("queued", "running", "busy")


@dataclass(frozen=True, slots=True)
class _Job:
    """One job on its way: what to run, with what, under which idempotency key."""

    spec: JobSpec
    args: dict[str, Any]
    key: str
    hops: int

    @property
    def queue(self) -> str:
        return self.spec.queue.value

    def outcome(
        self, state: str, *, inline: bool, result: Any = None, error: str | None = None
    ) -> JobOutcome:
        return JobOutcome(self.key, state, self.queue, inline, result, error)


class Dispatcher:
    def __init__(  # noqa: PLR0913 - explicit wiring
        self,
        *,
        celery: Celery,
        runner: JobRunner,
        breaker: CircuitBreaker,
        monitor: AsyncMonitor,
        broker_timeout_s: float,
        inline_timeout_s: float,
    ) -> None:
        self._celery = celery
        self._runner = runner
        self._breaker = breaker
        self._monitor = monitor
        self._broker_timeout_s = broker_timeout_s
        self._inline_timeout_s = inline_timeout_s
        self._publishers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="denis-publish")
        self._inline = ThreadPoolExecutor(max_workers=8, thread_name_prefix="denis-inline")
        self._background: set[asyncio.Future[Any]] = set()

    async def submit(  # noqa: PLR0913 - a job's whole address
        self,
        name: str,
        args: dict[str, Any],
        *,
        deadline: Deadline,
        hops: int = 0,
        key: str | None = None,
        wait: bool = True,
    ) -> JobOutcome:
        spec = self._runner.registry.get(name)
        out_hops = check_hops(next_hop(hops))
        if POLICIES[spec.queue].background and self._monitor.disk_full:
            raise QueueFullError(
                "background work is paused: the queue's disk is over "
                f"{self._monitor.disk_max_percent:g} %",
                dependency="queue_disk",
            )
        job = _Job(spec, args, key or uuid.uuid4().hex, out_hops)
        await self._blocking(
            partial(self._runner.ledger.journal, job.key, name, job.queue, args, out_hops),
            deadline,
        )
        return await self._deliver(job, deadline, wait=wait)

    async def redeliver(
        self, name: str, args: dict[str, Any], key: str, hops: int, deadline: Deadline
    ) -> JobOutcome:
        """Send an already-journaled job again (dead-letter replay)."""
        job = _Job(self._runner.registry.get(name), args, key, hops)
        return await self._deliver(job, deadline, wait=False)

    async def _deliver(self, job: _Job, deadline: Deadline, *, wait: bool) -> JobOutcome:
        if self._monitor.served(job.queue) and await self._publish(job, deadline):
            if not wait:
                return job.outcome("queued", inline=False)
            return await self._await_result(job, deadline)
        return await self._run_inline(job, deadline, wait=wait)

    async def _publish(self, job: _Job, deadline: Deadline) -> bool:
        permit = self._breaker.try_acquire()
        if permit is None:
            return False
        send = partial(
            self._celery.send_task,
            RUN_TASK,
            args=(job.spec.name, job.args, job.key),
            queue=job.queue,
            headers={HOP_FIELD: str(job.hops)},
            retry=False,
        )
        try:
            async with asyncio.timeout(deadline.timeout_s(self._broker_timeout_s)):
                await asyncio.get_running_loop().run_in_executor(self._publishers, send)
        except asyncio.CancelledError:
            self._breaker.release(permit)
            raise
        except Exception as exc:  # noqa: BLE001 - any publish failure means: run it here
            self._breaker.record_failure(permit)
            self._monitor.broker_failed(exc)
            return False
        self._breaker.record_success(permit)
        self._monitor.broker_ok()
        return True

    async def _await_result(self, job: _Job, deadline: Deadline) -> JobOutcome:
        """Wait for a worker to finish the job. If the broker fails before any worker claimed
        it, the message may be lost (killed broker) or stuck (hung broker): run it here; the
        claim keeps the effect to one if the message is delivered after all."""
        ledger = self._runner.ledger
        while deadline.remaining_s() > _REPLY_MARGIN_S:
            record = await self._blocking(partial(ledger.get, job.key), deadline)
            if record is not None and record.state in ("done", "dead"):
                return job.outcome(
                    record.state, inline=False, result=record.result, error=record.error
                )
            if self._monitor.broker_down and (record is None or record.state == "pending"):
                return await self._run_inline(job, deadline, wait=True)
            await asyncio.sleep(_POLL_S)
        return job.outcome("queued", inline=False)

    async def _run_inline(self, job: _Job, deadline: Deadline, *, wait: bool) -> JobOutcome:
        run = partial(self._runner.run, job.spec.name, job.args, job.key, job.hops, inline=True)
        future = asyncio.get_running_loop().run_in_executor(self._inline, run)
        if not wait:
            self._detach(future)
            return job.outcome("running", inline=True)
        try:
            async with asyncio.timeout(deadline.timeout_s(self._inline_timeout_s)):
                result: RunResult = await asyncio.shield(future)
        except TimeoutError:
            self._detach(future)  # a thread cannot be cancelled; it finishes on its own
            return job.outcome("running", inline=True)
        if result.state == "busy":  # a worker holds the claim: its result is the answer
            return await self._await_result(job, deadline)
        return job.outcome(result.state, inline=True, result=result.result, error=result.error)

    def _detach(self, future: asyncio.Future[Any]) -> None:
        """Keep a running inline job referenced until it finishes."""
        self._background.add(future)
        future.add_done_callback(self._background.discard)

    async def _blocking(self, call: partial[Any], deadline: Deadline) -> Any:
        try:
            async with asyncio.timeout(deadline.timeout_s(self._inline_timeout_s)):
                return await asyncio.to_thread(call)
        except (TimeoutError, OSError, sqlite3.Error) as exc:
            raise DependencyUnavailableError(
                "the job ledger is unavailable", dependency="ledger"
            ) from exc

    def close(self) -> None:
        self._publishers.shutdown(wait=False, cancel_futures=True)
        self._inline.shutdown(wait=False, cancel_futures=True)
