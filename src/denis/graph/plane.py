"""Builds the graph zone from its settings slice: the constructor ``app.py`` calls."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import structlog

from denis.graph.cache import LegacyCache
from denis.graph.embedded_store import EmbeddedGraphStore
from denis.graph.loader import default_home
from denis.graph.neo4j_store import Neo4jGraphStore
from denis.graph.resolver import GRAPH_ZONE, GraphResolver
from denis.graph.store import GraphStore, UnavailableStore
from denis.graph.traces import TraceRecorder
from denis.resilience import CircuitBreaker, Clock, Deadline, HealthBoard, Signals
from denis.settings import GraphSettings

__all__ = ["GraphZone", "open_graph_store", "open_graph_zone"]

_log = structlog.get_logger("denis.graph")
_START_BUDGET_S = 5.0


@dataclass(frozen=True, slots=True)
class GraphZone:
    resolver: GraphResolver
    traces: TraceRecorder


async def open_graph_store(settings: GraphSettings) -> tuple[GraphStore, str]:
    """The configured store. An embedded database that cannot be opened (another process
    holds its lock, a bad path) gives a store that is down: Denis starts in legacy mode."""
    if settings.url:
        return Neo4jGraphStore(settings), "neo4j"
    path = settings.embedded_path or settings.data_dir / "graph" / "db"
    try:
        return await EmbeddedGraphStore(path, settings.query_timeout_s).open(), "embedded"
    except RuntimeError as exc:
        _log.error("graph.embedded_unavailable", error=str(exc)[:300])
        return UnavailableStore(f"the embedded graph could not be opened: {exc}"), "embedded"


@asynccontextmanager
async def open_graph_zone(
    settings: GraphSettings, *, signals: Signals, health: HealthBoard, clock: Clock
) -> AsyncIterator[GraphZone]:
    store, backend = await open_graph_store(settings)
    cache = LegacyCache(settings.data_dir / "graph-cache.json")
    await asyncio.to_thread(cache.read_disk)
    breaker = health.add_breaker(CircuitBreaker.configured(GRAPH_ZONE, settings.breaker, clock))
    resolver = GraphResolver(
        store=store,
        cache=cache,
        breaker=breaker,
        signals=signals,
        query_timeout_s=settings.query_timeout_s,
        backend=backend,
        clock=clock,
    )
    await _first_refresh(resolver, clock)
    traces = TraceRecorder(
        resolver=resolver,
        signals=signals,
        clock=clock,
        spill_path=settings.data_dir / "decisiontrace.jsonl",
        capacity=settings.trace_buffer_size,
        batch_size=settings.trace_batch_size,
        flush_s=settings.trace_flush_s,
        write_timeout_s=settings.query_timeout_s,
    )
    health.add_zone(GRAPH_ZONE, resolver.status)
    tasks = [
        asyncio.create_task(_keep_fresh(resolver, clock, settings.cache_refresh_s)),
        asyncio.create_task(traces.run()),
    ]
    try:
        yield GraphZone(resolver, traces)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await traces.drain()
        await store.close()


async def _first_refresh(resolver: GraphResolver, clock: Clock) -> bool:
    """Fill the cache from the graph; a graph with no routes gets the default home (first run).
    False while that could not be done (the graph is down or slow): the refresher tries again."""
    deadline = Deadline.start(clock, _START_BUDGET_S)
    if not await resolver.refresh(deadline):
        _log.warning("graph.unavailable", cached_routes=len(resolver.cache.home.routes))
        return False
    if not resolver.cache.home.routes:
        return await resolver.load(default_home(), deadline)
    return True


async def _keep_fresh(resolver: GraphResolver, clock: Clock, interval_s: float) -> None:
    """Keep the legacy cache in step with the graph while it is healthy."""
    seeded = bool(resolver.cache.home.routes)
    while True:
        await asyncio.sleep(interval_s)
        try:
            if not seeded:
                seeded = await _first_refresh(resolver, clock)
            else:
                await resolver.refresh(Deadline.start(clock, _START_BUDGET_S))
        except Exception as exc:  # noqa: BLE001 - the refresher must outlive any one failure
            _log.error("graph.refresh_failed", error=type(exc).__name__)
