"""The graph zone: route resolution latency on each store, DecisionTrace enqueue cost and writer
throughput.

Everything runs in one process on one event loop (uvloop, as Denis runs), against a real Neo4j
5.26 (``tests/neo4j-launcher``, started like the test fixture does) and LadybugDB on disk:

1. **Route resolution**, ``GraphResolver.route()`` as the request path calls it (breaker
   permit, deadline, query, mapping), on three zones opened with ``open_graph_zone``: Neo4j,
   embedded (LadybugDB in the data dir), and legacy (a Neo4j zone whose breaker was opened by
   hand, with a one-hour cool-down: every call answers from the legacy cache). Sequential
   calls in blocks that rotate between the three, then 16 calls in flight per zone.
2. **DecisionTrace enqueue**, ``TraceRecorder.record()``, each call timed with
   ``perf_counter_ns``; the same timing around a no-op function is the timer's own cost.
   The writer flushes between bursts, as its background task would. Also, for information,
   ``record()`` when the buffer is full (the trace is appended to the local log right away).
   Target (issue 4): p99 <= 50 µs.
3. **Writer throughput**: a full buffer (10,000 traces) flushed by ``TraceRecorder.flush()``
   in batches of 200, to Neo4j, to the embedded store, and to the local log when the graph
   is down (legacy). Two rounds per store, so growth of the stored traces shows.

Run: ``.venv/bin/python benchmarks/bench_graph.py`` (or ``make bench`` for all).
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from denis.graph.loader import default_home
from denis.graph.model import DecisionTrace
from denis.graph.neo4j_store import Neo4jGraphStore
from denis.graph.plane import GraphZone, open_graph_zone
from denis.graph.traces import TraceRecorder
from denis.resilience import Deadline, HealthBoard, MonotonicClock, Signals
from denis.resilience.metrics import Metrics
from denis.settings import Settings
from harness import md_table, percentile, run_async
from servers import Neo4jServer

BUDGET_S = 15.0
WARM_UP_TIMEOUT_S = 60.0
ROUTE_WARM_UP = 200
ROUTE_BLOCK = 100
ROUTE_SEQUENTIAL = 1500  # per zone
ROUTE_CONCURRENT = 1600  # per zone, 16 in flight
IN_FLIGHT = 16
ENQUEUE_N = 20_000
ENQUEUE_BURST = 1_000
FULL_N = 5_000
WRITER_N = 10_000  # the default buffer capacity
WRITER_ROUNDS = 2
ENQUEUE_TARGET_US = 50.0
USER = "bench"


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    zone: GraphZone
    legacy: bool  # whether its answers must come from the legacy cache


def trace(n: int) -> DecisionTrace:
    return DecisionTrace(
        trace_id=f"bench-{n:08d}",
        at="2026-01-01T00:00:00+00:00",
        user=USER,
        text="turn on the kitchen light",
        intent="HassTurnOn",
        tool="device.turn_on",
        outcome="ok",
        duration_ms=12.5,
        modes=("graph:normal",),
    )


async def warm_up_neo4j(settings: Settings) -> None:
    """Load the default home and compile each query once, with a generous timeout: a cold JVM
    would otherwise fail the zone's first 2 s refresh."""
    store = Neo4jGraphStore(settings.graph)
    try:
        await store.load(default_home(), WARM_UP_TIMEOUT_S)
        home = await store.snapshot(WARM_UP_TIMEOUT_S)
        await store.route(home.routes[0].intent, WARM_UP_TIMEOUT_S)
        await store.write_traces([trace(-1)], WARM_UP_TIMEOUT_S)
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def zone(settings: Settings) -> AsyncIterator[GraphZone]:
    signals = Signals(Metrics(CollectorRegistry()))
    async with open_graph_zone(
        settings.graph, signals=signals, health=HealthBoard(signals), clock=MonotonicClock()
    ) as opened:
        yield opened


def settings_for(work: Path, name: str, **overrides: Any) -> Settings:
    data_dir = work / name
    data_dir.mkdir()
    # The benchmark drives the writer and the cache itself: the background tasks stay idle.
    options = {"trace_flush_s": 60.0, "graph_cache_refresh_s": 86_400.0, **overrides}
    return Settings(data_dir=data_dir, **options)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}"  # the legacy cache answers in microseconds


def open_breaker(graph: GraphZone) -> None:
    breaker = graph.resolver.breaker
    for _ in range(breaker.failure_threshold):
        permit = breaker.try_acquire()
        assert permit is not None
        breaker.record_failure(permit)
    assert graph.resolver.legacy


# -- 1. route resolution ---------------------------------------------------------------------


async def route_once(target: Target, intent: str) -> float:
    started = time.perf_counter()
    found = await target.zone.resolver.route(intent, Deadline.start(MonotonicClock(), BUDGET_S))
    elapsed = time.perf_counter() - started
    if found.legacy is not target.legacy or found.value is None:
        raise RuntimeError(f"{target.name}: unexpected answer {found}")
    return elapsed


async def sequential(targets: list[Target], intents: list[str]) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {t.name: [] for t in targets}
    for block in range(ROUTE_SEQUENTIAL // ROUTE_BLOCK):
        shift = block % len(targets)
        for target in targets[shift:] + targets[:shift]:
            for i in range(ROUTE_BLOCK):
                results[target.name].append(await route_once(target, intents[i % len(intents)]))
    return results


async def concurrent(target: Target, intents: list[str]) -> tuple[list[float], float]:
    latencies: list[float] = []
    left = [ROUTE_CONCURRENT]

    async def worker(offset: int) -> None:
        n = offset
        while left[0] > 0:
            left[0] -= 1
            latencies.append(await route_once(target, intents[n % len(intents)]))
            n += 1

    began = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(IN_FLIGHT)))
    return latencies, time.perf_counter() - began


async def route_latency(targets: list[Target]) -> list[str]:
    intents = [r.intent for r in targets[0].zone.resolver.cache.home.routes]
    for target in targets:
        for i in range(ROUTE_WARM_UP):
            await route_once(target, intents[i % len(intents)])
    seq = await sequential(targets, intents)
    conc = {t.name: await concurrent(t, intents) for t in targets}
    legacy_p50 = percentile(seq["legacy cache"], 50)
    rows = []
    for target in targets:
        s, (c, elapsed) = seq[target.name], conc[target.name]
        rows.append(
            [
                target.name,
                str(len(s)),
                ms(percentile(s, 50)),
                ms(percentile(s, 99)),
                f"{percentile(s, 50) / legacy_p50:,.0f}",
                ms(percentile(c, 50)),
                ms(percentile(c, 99)),
                f"{len(c) / elapsed:,.0f}",
            ]
        )
    return [
        "### 1. Route resolution, `GraphResolver.route()` (ms)",
        md_table(
            [
                "store",
                "n sequential",
                "p50",
                "p99",
                "p50 vs legacy",
                f"p50, {IN_FLIGHT} in flight",
                f"p99, {IN_FLIGHT} in flight",
                f"routes/s, {IN_FLIGHT} in flight",
            ],
            rows,
        ),
    ]


# -- 2. enqueue cost ---------------------------------------------------------------------------


def timed_ns(fn: Callable[[DecisionTrace], None], items: list[DecisionTrace]) -> list[int]:
    costs = []
    clock = time.perf_counter_ns
    for item in items:
        started = clock()
        fn(item)
        costs.append(clock() - started)
    return costs


def no_op(_: DecisionTrace) -> None:
    return None


def us_row(name: str, costs: list[int], verdict: str) -> list[str]:
    micro = [c / 1000 for c in costs]
    return [
        name,
        f"{len(micro):,}",
        f"{percentile(micro, 50):.2f}",
        f"{percentile(micro, 99):.2f}",
        f"{percentile(micro, 99.9):.2f}",
        f"{max(micro):.1f}",
        verdict,
    ]


async def enqueue_cost(graph: GraphZone, work: Path) -> tuple[list[str], bool]:
    recorder = graph.traces
    items = [trace(n) for n in range(ENQUEUE_N)]
    record_costs: list[int] = []
    timer_costs: list[int] = []
    for start in range(0, ENQUEUE_N, ENQUEUE_BURST):
        burst = items[start : start + ENQUEUE_BURST]
        timer_costs += timed_ns(no_op, burst)
        record_costs += timed_ns(recorder.record, burst)
        await recorder.flush()  # what the background writer does between bursts
    if recorder.written != ENQUEUE_N:
        raise RuntimeError(f"only {recorder.written} of {ENQUEUE_N} traces reached Neo4j")

    resolver = graph.resolver
    full = TraceRecorder(
        resolver=resolver,
        signals=Signals(Metrics(CollectorRegistry())),
        clock=MonotonicClock(),
        spill_path=work / "full-buffer.jsonl",
        capacity=1,
        batch_size=200,
        flush_s=60.0,
        write_timeout_s=2.0,
    )
    full.record(trace(-2))
    spill_costs = timed_ns(full.record, [trace(ENQUEUE_N + n) for n in range(FULL_N)])

    p99_us = percentile(record_costs, 99) / 1000
    ok = p99_us <= ENQUEUE_TARGET_US
    return [
        "### 2. DecisionTrace enqueue, `TraceRecorder.record()` (µs per call)",
        md_table(
            ["call", "n", "p50", "p99", "p99.9", "max", "verdict"],
            [
                us_row("timer only (no-op call)", timer_costs, "baseline"),
                us_row(
                    "record(), buffer has room",
                    record_costs,
                    f"{'meets' if ok else 'MISSES'} (target p99 <= {ENQUEUE_TARGET_US:g})",
                ),
                us_row("record(), buffer full: appended to the local log", spill_costs, "-"),
            ],
        ),
    ], ok


# -- 3. writer throughput ----------------------------------------------------------------------


async def writer_round(name: str, graph: GraphZone, first: int, stored: str) -> list[str]:
    recorder = graph.traces
    before = recorder.written
    for n in range(first, first + WRITER_N):
        recorder.record(trace(n))
    flushes = 0
    started = time.perf_counter()
    while len(recorder) and flushes < WRITER_N:
        await recorder.flush()  # a failed batch ends a flush: the rest waits for the next tick
        flushes += 1
    elapsed = time.perf_counter() - started
    written = recorder.written - before
    if len(recorder) != 0:
        raise RuntimeError(f"{name}: {len(recorder)} traces left in the buffer")
    return [
        name,
        stored,
        f"{WRITER_N:,}",
        f"{written:,}",
        str(flushes),
        f"{elapsed:.2f}",
        f"{WRITER_N / elapsed:,.0f}",
    ]


async def writer_throughput(
    neo4j: GraphZone, embedded: GraphZone, legacy: GraphZone, work: Path
) -> list[str]:
    rows = []
    first = 10 * ENQUEUE_N
    for name, graph, already in (("Neo4j", neo4j, ENQUEUE_N + 1), ("embedded", embedded, 0)):
        for _ in range(WRITER_ROUNDS):
            count = await graph.resolver.store.count_traces(WARM_UP_TIMEOUT_S)
            if count < already:
                raise RuntimeError(f"{name}: {count} traces stored, expected {already} or more")
            rows.append(await writer_round(name, graph, first, f"{count:,}"))
            first += WRITER_N
    spill = legacy.traces
    rows.append(await writer_round("local log (graph down)", legacy, first, "-"))
    spilled = (work / "legacy" / "decisiontrace.jsonl").read_text(encoding="utf-8").count("\n")
    if spilled != WRITER_N or spill.written:
        raise RuntimeError(f"local log: {spilled} lines, {spill.written} written to the graph")
    return [
        "### 3. DecisionTrace writer throughput, `TraceRecorder.flush()` of a full buffer",
        md_table(
            [
                "to",
                "traces stored before",
                "flushed",
                "written to the graph",
                "flush() calls",
                "seconds",
                "traces/s",
            ],
            rows,
        ),
    ]


# -- the run -----------------------------------------------------------------------------------


async def scenario(server: Neo4jServer, work: Path) -> tuple[list[str], bool]:
    neo4j_settings = settings_for(work, "neo4j", graph_url=server.url)
    await warm_up_neo4j(neo4j_settings)
    legacy_settings = settings_for(
        work, "legacy", graph_url=server.url, graph_breaker_cooldown_s=3600.0
    )
    embedded_settings = settings_for(work, "embedded")  # <data_dir>/graph/db, on disk
    async with (
        zone(neo4j_settings) as neo4j,
        zone(embedded_settings) as embedded,
        zone(legacy_settings) as legacy,
    ):
        open_breaker(legacy)
        targets = [
            Target("Neo4j", neo4j, legacy=False),
            Target("embedded (disk)", embedded, legacy=False),
            Target("legacy cache", legacy, legacy=True),
        ]
        print("graph: route resolution ...", flush=True)
        routes = await route_latency(targets)
        print("graph: enqueue cost ...", flush=True)
        enqueue, ok = await enqueue_cost(neo4j, work)
        print("graph: writer throughput ...", flush=True)
        writer = await writer_throughput(neo4j, embedded, legacy, work)
    return [*routes, *enqueue, *writer], ok


def run() -> str:
    with tempfile.TemporaryDirectory(prefix="denis-bench-graph-") as tmp:
        work = Path(tmp)
        server = Neo4jServer(work / "neo4j-server")
        server.start()
        try:
            started = f"Neo4j 5.26 started in {server.start_seconds:.1f} s."
            sections, ok = run_async(scenario(server, work))
        finally:
            server.stop()
    verdict = (
        f"Verdict: `record()` p99 <= {ENQUEUE_TARGET_US:g} µs: {'met' if ok else 'MISSED'}. "
        "Route resolution and writer throughput have no target in the issue."
    )
    return "\n\n".join([started, *sections, verdict])


if __name__ == "__main__":
    print(run())
