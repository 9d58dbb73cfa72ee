"""The embedded broker's exchange tables (kombu's file transport, ``denis.async_plane.celery_app``)
with workers starting together: real processes binding queues to one new table at once.

kombu creates a table by opening it truncated before it takes the file's lock, so two workers
starting together could each write it at offset 0: the shorter table followed by the tail of the
longer, and the next worker to read it died with an unrecoverable ``JSONDecodeError`` ("Extra
data"; seen once in CI, a worker started with ``--beat``). Each round below is a new table.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

from kombu import Connection

from denis.async_plane.celery_app import FilesystemTransport, _broker
from denis.settings import Settings

PROCESSES = 6
ROUNDS = 40


def _connection(root: Path) -> Connection:
    """The embedded broker exactly as Denis configures it for a data directory."""
    url, options = _broker(Settings(data_dir=root).async_plane)
    return Connection(url, transport=FilesystemTransport, transport_options=options)


def _bind_in_a_process(root: str, queue: str, start: Any, results: Any) -> None:
    """Runs in a spawned process: binds its queue to each round's new table with the others."""
    errors: list[str] = []
    with _connection(Path(root)) as connection:
        channel = connection.default_channel
        for round_no in range(ROUNDS):
            start.wait(timeout=60)
            try:
                channel._queue_bind(f"round{round_no}", queue, "", queue)
                channel.get_table(f"round{round_no}")
            except Exception as exc:
                errors.append(f"round {round_no}: {type(exc).__name__}: {exc}")
    results.put(errors)


def test_workers_binding_queues_to_a_new_table_at_once_lose_nothing(tmp_path: Path) -> None:
    queues = [f"q{'x' * (3 * n)}" for n in range(PROCESSES)]  # tables of different lengths
    spawn = multiprocessing.get_context("spawn")
    start, results = spawn.Barrier(PROCESSES), spawn.Queue()
    procs = [
        spawn.Process(target=_bind_in_a_process, args=(str(tmp_path), queue, start, results))
        for queue in queues
    ]
    for proc in procs:
        proc.start()
    try:
        errors = [error for _ in procs for error in results.get(timeout=120)]
    finally:
        for proc in procs:
            proc.join(timeout=60)
    results.close()
    results.join_thread()

    assert errors == []
    assert all(proc.exitcode == 0 for proc in procs)
    with _connection(tmp_path) as connection:
        channel = connection.default_channel
        for round_no in range(ROUNDS):
            bound = sorted(q.queue for q in channel.get_table(f"round{round_no}"))
            assert bound == sorted(queues), round_no
