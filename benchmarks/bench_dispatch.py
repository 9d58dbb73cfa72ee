"""Async plane: what dispatching a job costs, and how fast a hung broker is routed around.

Everything runs in this process on uvloop: ``open_async_plane`` wired as ``denis.app`` wires it
(``HealthBoard``, ``Signals(Metrics(CollectorRegistry()))``, ``MonotonicClock``,
``default_registry()``), on real brokers (kombu's ``filesystem://`` under a temp data dir, and
real ``redis-server``s). No worker runs: a heartbeat file with this process's pid and every
work queue is written into ``<data_dir>/workers/`` before the plane opens, so the monitor
counts the queues as served and ``Dispatcher.submit`` publishes instead of running inline.
``DENIS_WORKER_HEARTBEAT_S`` is 60, so that heartbeat stays live for the whole run and the
monitor does not sample (or probe the broker) while requests are timed. Published messages
are never consumed; every queue is purged between blocks.

(1) Dispatch cost per job, publish path only, on each broker. Targets, interleaved in blocks:

    - bare ``send_task``: the same Celery config (``make_celery`` with the same settings),
      called directly on the event loop. The baseline.
    - bare ``send_task`` in a thread: the same call through ``run_in_executor``, which is how
      the dispatcher publishes (under ``asyncio.timeout``); it isolates the thread hop.
    - the SQLite journal alone (``JobLedger.journal`` via ``asyncio.to_thread``, as the
      dispatcher calls it): one part of the next target, to show where its cost goes.
    - ``Dispatcher.submit(wait=False)``: job lookup, hop check, the SQLite journal (in a
      thread), the breaker permit, then the publish in a thread under the broker timeout.

(2) Redis hung: plane A on Redis R, plane H on Redis R' (healthy throughout, a same-time
    reference). ``DENIS_BROKER_TIMEOUT_S=0.3``, ``DENIS_BROKER_BREAKER_THRESHOLD=3``, and a
    300 s cool-down so that once open the breaker stays open (no half-open probe on the hung
    Redis while the open phase is measured). Healthy A and H are measured interleaved, then R
    is SIGSTOPped and A dispatches sequentially (``wait=False``) until the breaker opens, then
    the open phase interleaves A (inline: ``wait=False`` and ``wait=True``) with H (publish).
    The hang is repeated on fresh planes (closed breaker, R resumed) for EPISODES hangs in
    all, since one slow scheduling slice on a shared machine can move a single worst request.

Targets (issue 3): worst request during detection <= 500 ms extra; <= 1 ms extra per request
once the breaker is open.

Run: ``.venv/bin/python benchmarks/bench_dispatch.py`` (or ``make bench`` for all).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from celery import Celery
from prometheus_client import CollectorRegistry

from denis.async_plane import default_registry, open_async_plane
from denis.async_plane.celery_app import HOP_FIELD, RUN_TASK, make_celery
from denis.async_plane.monitor import WORK_QUEUES
from denis.async_plane.plane import AsyncPlane
from denis.async_plane.runner import JobRunner
from denis.resilience import Deadline, HealthBoard, MonotonicClock, Signals
from denis.resilience.logs import configure_logging
from denis.resilience.metrics import Metrics
from denis.settings import AsyncSettings, Settings
from harness import RedisServer, md_table, ms, percentile, rotated, run_async, started

JOB = "diag.echo.tools_ro"  # trivial, and on a non-background queue (no disk gate)
QUEUE = "tools_ro"
ARGS = {"n": 1}
WARMUP = 50
ROUNDS = 20
BLOCK = 50  # per target per round: 1,000 per target
BROKER_TIMEOUT_S = 0.3
THRESHOLD = 3
COOLDOWN_S = 300.0
HEARTBEAT_S = 60.0
DEADLINE_S = 15.0  # DENIS_CHAT_TIMEOUT_S: the request deadline a dispatch runs under
DETECT_MAX = 20  # sequential requests after the hang, at most
AFTER_OPEN = 3  # requests recorded after the breaker opened
EPISODES = 3  # hangs, each on a fresh plane (closed breaker)
LAG_TICK_S = 0.005
TARGET_WORST_EXTRA_MS = 500.0
TARGET_OPEN_EXTRA_MS = 1.0

BARE = "bare send_task"
BARE_THREAD = "bare send_task in a thread"
JOURNAL = "(part of submit) SQLite journal alone, in a thread"
SUBMIT = "Dispatcher.submit(wait=False)"
A_PUBLISH = "A publish (wait=False)"
H_PUBLISH = "H publish (wait=False)"
OPEN_NO_WAIT = "A open: inline, wait=False"
OPEN_WAIT = "A open: inline, wait=True"

Timed = Callable[[], Awaitable[object]]


def _settings(data_dir: Path, broker_url: str | None) -> AsyncSettings:
    return Settings(
        data_dir=data_dir,
        broker_url=broker_url,
        broker_timeout_s=BROKER_TIMEOUT_S,
        broker_breaker_threshold=THRESHOLD,
        broker_breaker_cooldown_s=COOLDOWN_S,
        worker_heartbeat_s=HEARTBEAT_S,
    ).async_plane


def _fake_heartbeat(data_dir: Path) -> None:
    """What a worker's heartbeat thread writes, for this (live) process and every work queue."""
    workers = data_dir / "workers"
    workers.mkdir(parents=True, exist_ok=True)
    payload = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "queues": list(WORK_QUEUES),
        "at": time.time(),
    }
    (workers / f"bench-{os.getpid()}.json").write_text(json.dumps(payload), encoding="utf-8")


@dataclass
class Rig:
    """One plane, the bare Celery app with its config, and the way to purge the queues."""

    plane: AsyncPlane
    health: HealthBoard
    bare: Celery
    clock: MonotonicClock

    def deadline(self) -> Deadline:
        return Deadline.start(self.clock, DEADLINE_S)

    def breaker(self) -> str:
        return str(self.health.snapshot()["breakers"]["broker"])

    async def submit(self, *, wait: bool = False) -> str:
        outcome = await self.plane.dispatcher.submit(JOB, ARGS, deadline=self.deadline(), wait=wait)
        return f"{'inline' if outcome.inline else 'queued'}:{outcome.state}"

    def send(self) -> None:
        self.bare.send_task(
            RUN_TASK,
            args=(JOB, ARGS, uuid.uuid4().hex),
            queue=QUEUE,
            headers={HOP_FIELD: "1"},
            retry=False,
        )

    async def purge(self) -> None:
        await asyncio.to_thread(self.bare.control.purge)


@asynccontextmanager
async def _rig(data_dir: Path, broker_url: str | None) -> AsyncIterator[Rig]:
    settings = _settings(data_dir, broker_url)
    _fake_heartbeat(data_dir)
    signals = Signals(Metrics(CollectorRegistry()))
    health = HealthBoard(signals)
    clock = MonotonicClock()
    registry = default_registry()
    async with open_async_plane(
        settings, registry=registry, signals=signals, health=health, clock=clock
    ) as plane:
        if not plane.monitor.served(QUEUE):
            raise RuntimeError("the fake heartbeat was not picked up: dispatch would run inline")
        runner = JobRunner(registry, plane.ledger, data_dir, settings.job_time_limit_s)
        yield Rig(plane, health, make_celery(settings, runner), clock)


async def _time(fn: Timed, count: int, out: list[float] | None, expect: str | None) -> None:
    for _ in range(count):
        began = time.perf_counter()
        got = await fn()
        elapsed = time.perf_counter() - began
        if expect is not None and got != expect:
            raise RuntimeError(f"expected {expect}, got {got}")
        if out is not None:
            out.append(elapsed)


async def _interleaved(
    targets: dict[str, tuple[Timed, str | None]], purge: Callable[[], Awaitable[None]]
) -> dict[str, list[float]]:
    """Warm up every target, then ROUNDS rounds of BLOCK each, rotating the order."""
    latencies: dict[str, list[float]] = {name: [] for name in targets}
    for fn, expect in targets.values():
        await _time(fn, WARMUP, None, expect)
    await purge()
    for round_no in range(ROUNDS):
        for name in rotated(list(targets), round_no):
            fn, expect = targets[name]
            await _time(fn, BLOCK, latencies[name], expect)
        await purge()
    return latencies


def _publish_targets(rig: Rig, pool: ThreadPoolExecutor) -> dict[str, tuple[Timed, str | None]]:
    async def bare() -> None:
        rig.send()

    async def bare_thread() -> None:
        await asyncio.get_running_loop().run_in_executor(pool, rig.send)

    async def journal() -> None:
        ledger = rig.plane.ledger
        await asyncio.to_thread(ledger.journal, uuid.uuid4().hex, JOB, QUEUE, ARGS, 1)

    return {
        BARE: (bare, None),
        BARE_THREAD: (bare_thread, None),
        JOURNAL: (journal, None),
        SUBMIT: (rig.submit, "queued:queued"),
    }


async def _dispatch_cost(work: Path, redis: RedisServer) -> dict[str, dict[str, list[float]]]:
    results = {}
    with ThreadPoolExecutor(max_workers=4) as pool:
        for broker, url in (("filesystem", None), ("Redis", redis.url)):
            async with _rig(work / f"cost-{broker}", url) as rig:
                results[broker] = await _interleaved(_publish_targets(rig, pool), rig.purge)
    return results


@dataclass
class Detection:
    """One hang episode: each sequential request after SIGSTOP until the breaker opened."""

    requests: list[tuple[float, str, str]]  # (latency s, outcome, breaker state after)
    opened_after_s: float | None = None
    opened_after_n: int | None = None
    max_loop_lag_s: float = 0.0  # worst oversleep of a 5 ms ticker meanwhile: machine stalls


@dataclass
class Hang:
    healthy: dict[str, list[float]]
    detections: list[Detection]
    open_phase: dict[str, list[float]]


async def _wait_done(rig: Rig, keys: list[str]) -> None:
    """Until every background inline run of ``keys`` finished (so it does not overlap the
    next block)."""
    ledger = rig.plane.ledger
    for key in keys:
        for _ in range(500):
            record = await asyncio.to_thread(ledger.get, key)
            if record is not None and record.state == "done":
                break
            await asyncio.sleep(0.002)
        else:
            raise RuntimeError(f"inline job {key} never finished")


async def _detect(a: Rig, hung: RedisServer) -> Detection:
    """SIGSTOP A's Redis, then sequential ``submit(wait=False)`` until the breaker is open
    (and AFTER_OPEN more)."""
    lags: list[float] = []

    async def ticker() -> None:
        while True:
            began = time.perf_counter()
            await asyncio.sleep(LAG_TICK_S)
            lags.append(time.perf_counter() - began - LAG_TICK_S)

    hung.pause()
    found = Detection([])
    lag_task = asyncio.create_task(ticker())
    first_at = time.perf_counter()
    for n in range(1, DETECT_MAX + 1):
        began = time.perf_counter()
        outcome = await a.submit()
        done = time.perf_counter()
        state = a.breaker()
        found.requests.append((done - began, outcome, state))
        if state == "open" and found.opened_after_n is None:
            found.opened_after_s, found.opened_after_n = done - first_at, n
        if found.opened_after_n is not None and n >= found.opened_after_n + AFTER_OPEN:
            break
    lag_task.cancel()
    found.max_loop_lag_s = max(lags, default=0.0)
    return found


async def _open_phase(a: Rig, h: Rig) -> dict[str, list[float]]:
    """A's breaker is open: A runs inline, H publishes to its healthy Redis; interleaved."""
    await asyncio.sleep(0.5)  # the timed-out publisher threads come back (socket timeout)
    keys: list[str] = []

    async def inline_no_wait() -> str:
        outcome = await a.plane.dispatcher.submit(JOB, ARGS, deadline=a.deadline(), wait=False)
        keys.append(outcome.key)
        return f"{'inline' if outcome.inline else 'queued'}:{outcome.state}"

    async def settle() -> None:
        await _wait_done(a, keys)
        keys.clear()
        await h.purge()

    measured = await _interleaved(
        {
            OPEN_NO_WAIT: (inline_no_wait, "inline:running"),
            OPEN_WAIT: (partial(a.submit, wait=True), "inline:done"),
            H_PUBLISH: (h.submit, "queued:queued"),
        },
        settle,
    )
    if a.breaker() != "open":
        raise RuntimeError("the breaker left the open state during the open phase")
    return measured


async def _hang(work: Path, hung: RedisServer, healthy_redis: RedisServer) -> Hang:
    """EPISODES hangs, each on a fresh plane A (closed breaker) over the resumed Redis R; the
    first also measures healthy A vs H before, and the open phase after."""
    healthy: dict[str, list[float]] = {}
    detections: list[Detection] = []
    open_phase: dict[str, list[float]] = {}
    async with _rig(work / "hang-H", healthy_redis.url) as h:
        for episode in range(EPISODES):
            async with _rig(work / f"hang-A{episode}", hung.url) as a:

                async def purge_both(a: Rig = a) -> None:
                    await a.purge()
                    await h.purge()

                targets = {A_PUBLISH: (a.submit, "queued:queued")}
                if episode == 0:
                    targets[H_PUBLISH] = (h.submit, "queued:queued")
                    healthy = await _interleaved(targets, purge_both)
                else:  # warm-up only: pooled connections to R, as before the first hang
                    await _time(a.submit, WARMUP, None, "queued:queued")
                    await purge_both()
                detections.append(await _detect(a, hung))
                if episode == 0 and detections[0].opened_after_n is not None:
                    open_phase = await _open_phase(a, h)
                hung.resume()  # the plane closes, and the next episode starts, on a live Redis
    return Hang(healthy, detections, open_phase)


async def _scenario(work: Path) -> tuple[dict[str, dict[str, list[float]]], Hang]:
    hung, healthy = RedisServer(work / "r"), RedisServer(work / "r-healthy")
    with started(hung, healthy):
        hung.start()
        healthy.start()
        print("dispatch: publish cost (filesystem, Redis) ...", flush=True)
        cost = await _dispatch_cost(work, healthy)
        print("dispatch: Redis hang, detection, breaker open ...", flush=True)
        hang = await _hang(work, hung, healthy)
    return cost, hang


def _cost_table(cost: dict[str, dict[str, list[float]]]) -> str:
    rows = []
    for broker, latencies in cost.items():
        bare = latencies[BARE]
        b50, b99 = percentile(bare, 50), percentile(bare, 99)
        for name, values in latencies.items():
            p50, p99 = percentile(values, 50), percentile(values, 99)
            rows.append(
                [
                    broker,
                    name,
                    str(len(values)),
                    ms(p50),
                    ms(p99),
                    "-" if name == BARE else f"{(p50 - b50) * 1000:+.2f}",
                    "-" if name == BARE else f"{p50 / b50:.2f}",
                    "-" if name == BARE else f"{p99 / b99:.2f}",
                ]
            )
    return md_table(
        ["broker", "target", "n", "p50 ms", "p99 ms", "added p50 ms", "p50 x bare", "p99 x bare"],
        rows,
    )


def _hang_tables(hang: Hang) -> tuple[str, list[str]]:
    healthy_a = percentile(hang.healthy[A_PUBLISH], 50)
    parts = [
        "#### Healthy, before the first hang (published)",
        md_table(
            ["target", "n", "p50 ms", "p99 ms"],
            [
                [name, str(len(v)), ms(percentile(v, 50)), ms(percentile(v, 99))]
                for name, v in hang.healthy.items()
            ],
        ),
        "#### Detection: sequential `submit(wait=False)` on A after SIGSTOP of its Redis",
    ]
    rows, worst_extra_ms = [], 0.0
    for episode, found in enumerate(hang.detections, 1):
        latencies = [lat for lat, _, _ in found.requests]
        inline = all(outcome.startswith("inline:") for _, outcome, _ in found.requests)
        worst = max(latencies)
        worst_extra_ms = max(worst_extra_ms, (worst - healthy_a) * 1000)
        opened = found.opened_after_n is not None and found.opened_after_s is not None
        rows.append(
            [
                str(episode),
                " / ".join(ms(lat) for lat in latencies),
                "yes" if inline else "NO",
                str(found.opened_after_n) if opened else "never",
                ms(found.opened_after_s) if found.opened_after_s is not None else "never",
                ms(worst),
                ms(worst - healthy_a),
                ms(found.max_loop_lag_s),
            ]
        )
    parts.append(
        md_table(
            [
                "hang",
                "each request's latency ms, in order",
                "all ran inline",
                "breaker open after n",
                "open after ms",
                "worst ms",
                "worst extra ms",
                "max event-loop lag ms",
            ],
            rows,
        )
    )
    verdicts = []
    all_opened = all(found.opened_after_n is not None for found in hang.detections)
    ok = all_opened and worst_extra_ms <= TARGET_WORST_EXTRA_MS
    verdicts.append(
        f"worst request {worst_extra_ms:.0f} ms extra over healthy A p50 "
        f"(target <= {TARGET_WORST_EXTRA_MS:.0f}): {'meets' if ok else 'MISSES'}"
        + ("" if all_opened else f"; the breaker did not open within {DETECT_MAX} requests")
    )
    if not hang.open_phase:
        return "\n\n".join(parts), verdicts
    h50 = percentile(hang.open_phase[H_PUBLISH], 50)
    h99 = percentile(hang.open_phase[H_PUBLISH], 99)
    rows = []
    for name, values in hang.open_phase.items():
        p50, p99 = percentile(values, 50), percentile(values, 99)
        if name == H_PUBLISH:
            rows.append([name, str(len(values)), ms(p50), ms(p99), "-", "-", "reference"])
            continue
        extra50, extra99 = (p50 - h50) * 1000, (p99 - h99) * 1000
        ok = extra50 <= TARGET_OPEN_EXTRA_MS
        verdicts.append(
            f"{name}: {extra50:+.2f} ms at p50 vs the healthy publish (target <= "
            f"{TARGET_OPEN_EXTRA_MS:g}): {'meets' if ok else 'MISSES'}"
        )
        rows.append(
            [
                name,
                str(len(values)),
                ms(p50),
                ms(p99),
                f"{extra50:+.2f}",
                f"{extra99:+.2f}",
                "meets" if ok else "MISSES",
            ]
        )
    parts += [
        "#### Breaker open (first hang): A runs inline, H publishes to its healthy Redis",
        md_table(
            [
                "target",
                "n",
                "p50 ms",
                "p99 ms",
                "extra p50 ms vs H",
                "extra p99 ms vs H",
                "verdict",
            ],
            rows,
        ),
    ]
    return "\n\n".join(parts), verdicts


def run() -> str:
    configure_logging("WARNING")
    with tempfile.TemporaryDirectory(prefix="denis-bench-dispatch-") as tmp:
        cost, hang = run_async(_scenario(Path(tmp)))
    hang_text, verdicts = _hang_tables(hang)
    return "\n\n".join(
        [
            (
                f"Job `{JOB}` with args {json.dumps(ARGS)}; {ROUNDS} rounds x {BLOCK} per target "
                f"after {WARMUP} warm-up, interleaved. No worker: a fake heartbeat file (this "
                "process's pid, every work queue) makes the plane publish; queues purged between "
                f"blocks. DENIS_BROKER_TIMEOUT_S={BROKER_TIMEOUT_S}, "
                f"DENIS_BROKER_BREAKER_THRESHOLD={THRESHOLD}, "
                f"DENIS_BROKER_BREAKER_COOLDOWN_S={COOLDOWN_S:g}, "
                f"DENIS_WORKER_HEARTBEAT_S={HEARTBEAT_S:g}."
            ),
            "### (1) Publish path per job vs a bare `send_task` of the same Celery config",
            _cost_table(cost),
            "### (2) Redis broker hung (SIGSTOP)",
            hang_text,
            "Verdicts: " + "; ".join(verdicts) + ".",
        ]
    )


if __name__ == "__main__":
    print(run())
