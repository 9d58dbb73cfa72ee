"""Zone 2, the async plane: jobs on Celery that fail open and lose no command.

Owns: the Celery app and its queues (``tools_ro``, ``tools_mut``, ``tts``, ``graph_ingest``,
``ha_playback``, ``housekeeping``, ``dead_letter``), routing by job type, the dispatcher with
fail-open, the job ledger (journal, idempotency claims, results, dead letter), the worker
process and the monitor behind ``/status``.
Depends on: ``denis.resilience``; Celery and kombu (imported here only); a broker: kombu's
``filesystem://`` under the data dir by default, Redis via ``DENIS_BROKER_URL``.
Degrades: broker down or hung, or no live worker for a queue → the API runs the job itself
within the request's deadline (mode ``fail_open``); the queue's disk over its threshold →
background work is refused (503) while tools keep running; a worker killed mid-job → the
journal re-dispatches its mutating jobs and the ledger's claim keeps each effect to one.
Emits: ``celery.broker_down``, ``celery.worker_down``, ``celery.queue.len``,
``celery.task.failed``, ``queue.disk_percent``, ``celery.dead_letter``.
"""

from denis.async_plane.dispatch import Dispatcher, JobOutcome
from denis.async_plane.jobs import JobContext, JobRegistry, default_registry
from denis.async_plane.ledger import DeadLetter, JobLedger
from denis.async_plane.plane import ASYNC_ZONE, AsyncPlane, open_async_plane, open_ledger
from denis.async_plane.queues import WORKER_GROUPS, Queue
from denis.async_plane.worker import parse_queues, run_worker

__all__ = [
    "ASYNC_ZONE",
    "WORKER_GROUPS",
    "AsyncPlane",
    "DeadLetter",
    "Dispatcher",
    "JobContext",
    "JobLedger",
    "JobOutcome",
    "JobRegistry",
    "Queue",
    "default_registry",
    "open_async_plane",
    "open_ledger",
    "parse_queues",
    "run_worker",
]
