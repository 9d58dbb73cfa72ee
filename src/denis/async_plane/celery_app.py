"""The Celery app: brokers, queues, time limits, retries, dead letter, worker heartbeat.

Publishing is made to fail fast, because out of the box ``apply_async`` hangs forever on a
hung Redis (celery issues 4296/4556/6911): no publish retries, ``max_retries: 0`` and socket
timeouts in the transport options, and no result backend at all (a Redis result backend
subscribes before publishing). Results live in the ``JobLedger``.

Time limits need a pool that enforces them: workers run the prefork pool (solo and threads
ignore time limits). The soft limit raises inside the job and counts as a failed attempt
(retried with backoff); the hard limit kills the child, and the job goes to the dead letter.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import structlog
from celery import Celery, Task
from celery.exceptions import TimeLimitExceeded
from celery.signals import task_failure, worker_ready, worker_shutdown
from kombu import Queue as KombuQueue
from kombu.exceptions import ChannelError
from kombu.transport import filesystem as kombu_filesystem
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.json import dumps, loads

from denis.async_plane.ledger import JobLedger
from denis.async_plane.queues import POLICIES, Queue
from denis.async_plane.runner import JobRunner
from denis.resilience import MAX_HOPS, Signal
from denis.settings import AsyncSettings

__all__ = [
    "HOP_FIELD",
    "RUN_TASK",
    "SWEEP_TASK",
    "broker_dir",
    "make_celery",
    "wire_worker_signals",
]

RUN_TASK = "denis.run"
SWEEP_TASK = "denis.sweep"
HOP_FIELD = "x_denis_hop"
MAX_REDISPATCHES = 5
_log = structlog.get_logger("denis.async_plane")


def broker_dir(settings: AsyncSettings) -> Path:
    return settings.data_dir / "broker"


class _RedisQoS(kombu_redis.QoS):
    """kombu's Redis QoS forgets a delivery only once Redis confirmed its ack. An ack that
    fails while the broker is down or hung leaves the message counted against the prefetch
    limit for ever: after ``concurrency`` such acks the worker never asks Redis for work
    again, so it never even notices the lost connection, and it stalls with a live heartbeat
    (seen in the async chaos tests). Forget the delivery anyway: Redis restores a message
    whose ack was lost after its visibility timeout, and the ledger's claim then answers the
    finished job instead of running it again."""

    def ack(self, delivery_tag: str) -> None:
        try:
            super().ack(delivery_tag)
        except Exception:
            virtual.QoS.ack(self, delivery_tag)
            raise

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:  # noqa: FBT001, FBT002
        try:
            super().reject(delivery_tag, requeue=requeue)
        except Exception:
            virtual.QoS.ack(self, delivery_tag)
            raise


class _RedisChannel(kombu_redis.Channel):
    QoS = _RedisQoS


class RedisTransport(kombu_redis.Transport):
    """kombu's Redis transport with ``_RedisQoS``; chosen for ``redis://`` broker URLs."""

    Channel = _RedisChannel


class _FilesystemChannel(kombu_filesystem.Channel):
    """kombu's file queue, with two races closed: a message half-written (``_put``) and an
    exchange table written twice at once (``_queue_bind``, ``get_table``).

    kombu's file queue writes a message straight into its final ``*.msg`` name. When the
    write fails (a full disk) it leaves an empty or truncated file behind, and a worker that
    picks it up dies with an unrecoverable ``JSONDecodeError`` (seen in the async chaos tests;
    a reader can also catch a file half-written). Here a message is written under a name no
    consumer reads, then renamed into the queue: a consumer sees a whole message or none."""

    def _put(self, queue: str, payload: dict[str, Any], **_: Any) -> None:  # type: ignore[override]
        name = f"{round(time.monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = Path(self.data_folder_out) / name
        partial = final.with_name(f"{name}.partial")
        try:
            partial.write_bytes(dumps(payload).encode())
            partial.replace(final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)
            raise ChannelError(f"Cannot add file {str(final)!r} to directory") from exc

    def get_table(self, exchange: str) -> list[Any]:
        """Read under the shared lock; a table just created and not yet written is empty."""
        file: Path = self._exchange_file(exchange)  # type: ignore[attr-defined]  # validates the name
        try:
            with file.open("rb") as table:
                fcntl.flock(table, fcntl.LOCK_SH)
                return _bindings(table.read())
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise ChannelError(f"Cannot open {file}") from exc

    def _queue_bind(
        self, exchange: str, routing_key: str | None, pattern: str | None, queue: str | None
    ) -> None:
        """kombu opens a new table truncated (``wb``) before it takes the lock, so two workers
        starting together could each write it at offset 0, leaving the shorter table followed
        by the tail of the longer: the next reader died with an unrecoverable
        ``JSONDecodeError`` ("Extra data", seen in CI). Here the table is opened without
        truncating, locked, read, and rewritten whole under the lock."""
        file: Path = self._exchange_file(exchange)  # type: ignore[attr-defined]  # validates the name
        self.control_folder.mkdir(exist_ok=True)
        binding = kombu_filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        try:
            fd = os.open(file, os.O_RDWR | os.O_CREAT, 0o600)
            with os.fdopen(fd, "r+b", buffering=0) as table:
                fcntl.flock(table, fcntl.LOCK_EX)
                bindings = _bindings(table.read())
                if binding not in bindings:
                    table.seek(0)
                    table.write(dumps([binding, *bindings]).encode())
                    table.truncate()
        except OSError as exc:
            raise ChannelError(f"Cannot open {file}") from exc


def _bindings(raw: bytes) -> list[Any]:
    return [kombu_filesystem.exchange_queue_t(*row) for row in loads(raw)] if raw.strip() else []


class FilesystemTransport(kombu_filesystem.Transport):
    """kombu's file-queue transport with ``_FilesystemChannel``; the embedded default."""

    Channel = _FilesystemChannel


def _transport(url: str) -> str | None:
    if url.startswith("redis://"):
        return f"{__name__}:RedisTransport"
    if url.startswith("filesystem://"):
        return f"{__name__}:FilesystemTransport"
    return None


def _broker(settings: AsyncSettings) -> tuple[str, dict[str, Any]]:
    if settings.broker_url:
        timeout_s = settings.broker_timeout_s
        return settings.broker_url, {
            "max_retries": 0,
            "socket_connect_timeout": timeout_s,
            "socket_timeout": timeout_s,
            "visibility_timeout": 3600,
        }
    root = broker_dir(settings)
    folders = {
        "data_folder_in": root / "queue",
        "processed_folder": root / "processed",
        "control_folder": root / "control",
    }
    for folder in folders.values():
        folder.mkdir(
            parents=True, exist_ok=True
        )  # the transport raises a raw FileNotFoundError otherwise
    options: dict[str, Any] = {name: str(path) for name, path in folders.items()}
    options["data_folder_out"] = options["data_folder_in"]
    options["polling_interval"] = 0.1  # the default 1 s would add a second to every job
    return "filesystem://", options


def make_celery(settings: AsyncSettings, runner: JobRunner) -> Celery:
    url, transport_options = _broker(settings)
    app = Celery("denis", set_as_current=False)
    app.conf.update(
        broker_url=url,
        broker_transport=_transport(url),
        broker_transport_options=transport_options,
        broker_connection_timeout=settings.broker_timeout_s,
        broker_connection_retry_on_startup=True,
        task_publish_retry=False,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_time_limit=settings.job_time_limit_s,
        task_soft_time_limit=settings.job_soft_time_limit_s,
        task_queues=[KombuQueue(queue.value, routing_key=queue.value) for queue in Queue],
        task_default_queue=Queue.HOUSEKEEPING.value,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        worker_enable_remote_control=False,
        beat_schedule={
            "denis-journal-sweep": {
                "task": SWEEP_TASK,
                "schedule": settings.housekeeping_interval_s,
                "options": {"queue": Queue.HOUSEKEEPING.value},
            }
        },
    )
    _register_tasks(app, settings, runner)
    return app


def _register_tasks(app: Celery, settings: AsyncSettings, runner: JobRunner) -> None:
    ledger = runner.ledger

    @app.task(bind=True, name=RUN_TASK)
    def run(self: Task, name: str, args: dict[str, Any], key: str) -> str:  # type: ignore[type-arg]
        hops = int(getattr(self.request, HOP_FIELD, 0) or 0)
        if hops > MAX_HOPS:
            ledger.fail(key, f"refused: {hops} hops (limit {MAX_HOPS})")
            ledger.record_event(Signal.CELERY_TASK_FAILED.value, job=name, reason="hop_limit")
            return "refused"
        outcome = runner.run(name, args, key, hops, inline=False)
        if outcome.state != "failed":
            return outcome.state
        queue = runner.registry.get(name).queue
        retries = int(self.request.retries or 0)
        ledger.record_event(
            Signal.CELERY_TASK_FAILED.value,
            job=name,
            queue=queue.value,
            attempt=retries + 1,
            error=outcome.error,
        )
        if retries < POLICIES[queue].max_retries:
            countdown_s = settings.retry_backoff_s * (2**retries)
            ledger.requeue(key)  # not lost if this worker dies before the retry is sent
            raise self.retry(
                countdown=countdown_s,
                max_retries=POLICIES[queue].max_retries,
                headers={HOP_FIELD: str(hops)},
            )
        bury(ledger, key, outcome.error or "failed", name=name, queue=queue.value)
        return "dead"

    @app.task(name=SWEEP_TASK)
    def sweep() -> int:
        return sweep_journal(app, ledger, settings)


def bury(ledger: JobLedger, key: str, error: str, **fields: Any) -> None:
    """Dead-letter a job exactly once, with an alert line and signal the first time."""
    if ledger.bury(key, error):
        ledger.record_event(Signal.CELERY_DEAD_LETTER.value, key=key, error=error, **fields)
        _log.error("celery.dead_letter", key=key, error=error, **fields)


def sweep_journal(app: Celery, ledger: JobLedger, settings: AsyncSettings) -> int:
    """Re-dispatch mutating jobs that were dispatched but never finished (a lost message, a
    killed worker); the claim keeps the effect to at most once."""
    redispatched = 0
    for record in ledger.stale(Queue.TOOLS_MUT.value, settings.journal_stale_after_s):
        if record.redispatches >= MAX_REDISPATCHES:
            # A job whose runner died this often is poison; one only waiting in a backlog is
            # not lost: its copies are still queued, and the claim runs it once.
            if record.state == "running":
                reason = f"its worker died {record.redispatches} times"
                bury(ledger, record.key, reason, name=record.name, queue=record.queue)
            continue
        ledger.mark_redispatched(record.key)
        app.send_task(
            RUN_TASK,
            args=(record.name, record.args, record.key),
            queue=record.queue,
            headers={HOP_FIELD: str(record.hops)},
            retry=False,
        )
        redispatched += 1
        _log.warning("journal.redispatch", key=record.key, job=record.name)
    return redispatched


def wire_worker_signals(
    app: Celery, ledger: JobLedger, settings: AsyncSettings, queues: list[str]
) -> None:
    """Hooks that only a worker process needs: heartbeat file, hard-time-limit dead letter."""
    workers_dir = settings.data_dir / "workers"
    workers_dir.mkdir(parents=True, exist_ok=True)
    beat_file = workers_dir / f"{socket.gethostname()}-{os.getpid()}.json"
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            payload = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "queues": queues,
                "at": time.time(),
            }
            tmp = beat_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(payload), encoding="utf-8")
            tmp.replace(beat_file)
            stop.wait(settings.worker_heartbeat_s)

    def on_ready(**_: Any) -> None:
        threading.Thread(target=beat, name="denis-heartbeat", daemon=True).start()

    def on_shutdown(**_: Any) -> None:
        stop.set()
        beat_file.unlink(missing_ok=True)

    def on_failure(exception: BaseException | None = None, args: Any = None, **_: Any) -> None:
        if isinstance(exception, TimeLimitExceeded) and args and len(args) == 3:
            name, _, key = args
            ledger.record_event(Signal.CELERY_TASK_FAILED.value, job=name, reason="time_limit")
            bury(ledger, key, f"hard time limit of {settings.job_time_limit_s:g} s", name=name)

    worker_ready.connect(on_ready, weak=False)
    worker_shutdown.connect(on_shutdown, weak=False)
    task_failure.connect(on_failure, weak=False)
    _ = app
