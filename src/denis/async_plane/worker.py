"""``denis worker``: a Celery worker process on the prefork pool (time limits enforced)."""

from __future__ import annotations

import os
import socket

from denis.async_plane.celery_app import make_celery, wire_worker_signals
from denis.async_plane.jobs import JobRegistry
from denis.async_plane.plane import open_ledger
from denis.async_plane.queues import Queue
from denis.async_plane.runner import JobRunner
from denis.settings import AsyncSettings

__all__ = ["parse_queues", "run_worker"]

_LEASE_MARGIN_S = 30.0


def parse_queues(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    known = {q.value for q in Queue}
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(f"unknown queue(s) {unknown}; choose from {sorted(known)}")
    return names


def run_worker(
    settings: AsyncSettings,
    registry: JobRegistry,
    *,
    queues: list[str],
    concurrency: int,
    beat: bool,
) -> None:
    ledger = open_ledger(settings)
    runner = JobRunner(
        registry, ledger, settings.data_dir, settings.job_time_limit_s + _LEASE_MARGIN_S
    )
    app = make_celery(settings, runner)
    wire_worker_signals(app, ledger, settings, queues)
    argv = [
        "worker",
        "--queues", ",".join(queues),
        "--pool", "prefork",
        "--concurrency", str(concurrency),
        "--hostname", f"denis-{os.getpid()}@{socket.gethostname()}",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
        "--optimization", "fair",
        "--loglevel", "INFO",
    ]  # fmt: skip
    if beat:
        argv += ["--beat", "--schedule", str(settings.data_dir / "celerybeat-schedule")]
    app.worker_main(argv)
