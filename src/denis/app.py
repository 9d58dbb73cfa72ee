"""The one place that wires Denis together: settings in, a running application out.

``create_app(settings)`` builds nothing at import time; the lifespan opens each zone in an
``AsyncExitStack`` (so they close in reverse order) and hands the API only the ``Services`` it
uses. Tests pass their own responder, clock, detector or metrics registry here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from denis.api import Services, build_api
from denis.async_plane import JobRegistry, default_registry, open_async_plane, run_worker
from denis.graph import open_graph_zone
from denis.resilience import Clock, HealthBoard, MonotonicClock, Signals
from denis.resilience.metrics import Metrics
from denis.settings import Settings
from denis.sync_plane import InjectionDetector, Responder, open_sync_plane

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["build_registry", "create_app", "worker_main"]


def build_registry() -> JobRegistry:
    """Every zone's job types, for the API and the workers alike."""
    return default_registry()


def worker_main(settings: Settings, *, queues: list[str], concurrency: int, beat: bool) -> None:
    run_worker(
        settings.async_plane, build_registry(), queues=queues, concurrency=concurrency, beat=beat
    )


def create_app(
    settings: Settings,
    *,
    responder: Responder | None = None,
    detector: InjectionDetector | None = None,
    clock: Clock | None = None,
    registry: CollectorRegistry | None = None,
) -> FastAPI:
    @asynccontextmanager
    async def open_services() -> AsyncIterator[Services]:
        signals = Signals(Metrics(registry))
        health = HealthBoard(signals)
        used_clock = clock or MonotonicClock()
        async with AsyncExitStack() as stack:
            sync = await stack.enter_async_context(
                open_sync_plane(
                    settings.sync,
                    signals=signals,
                    health=health,
                    clock=used_clock,
                    responder=responder,
                    detector=detector,
                )
            )
            graph = await stack.enter_async_context(
                open_graph_zone(settings.graph, signals=signals, health=health, clock=used_clock)
            )
            jobs = await stack.enter_async_context(
                open_async_plane(
                    settings.async_plane,
                    registry=build_registry(),
                    signals=signals,
                    health=health,
                    clock=used_clock,
                )
            )
            yield Services(
                settings=settings.api,
                pipeline=sync.pipeline,
                tokens=sync.tokens,
                health=health,
                signals=signals,
                clock=used_clock,
                jobs=jobs,
                graph=graph,
            )

    return build_api(open_services)
