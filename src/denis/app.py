"""The one place that wires Denis together: settings in, a running application out.

``create_app(settings)`` builds nothing at import time; the lifespan opens each zone in an
``AsyncExitStack`` (so they close in reverse order) and hands the API only the ``Services`` it
uses. Tests pass their own responder, clock, detector or metrics registry here.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter

from denis.api import Services, build_api
from denis.assistant.wiring import AssistantParts, open_assistant, register_assistant
from denis.async_plane import JobRegistry, default_registry, open_async_plane, run_worker
from denis.errors import DenisError
from denis.graph import GRAPH_ZONE, DecisionTrace, GraphZone, open_graph_zone
from denis.resilience import CircuitBreaker, Clock, Deadline, HealthBoard, MonotonicClock, Signals
from denis.resilience.metrics import Metrics
from denis.settings import Settings
from denis.sync_plane import (
    ChatPipeline,
    InjectionDetector,
    InjectionGate,
    Responder,
    TurnReply,
    TurnRequest,
    build_detector,
    open_sync_plane,
)

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["TracedPipeline", "build_registry", "create_app", "worker_main"]

_TRACE_TEXT_CHARS = 500


class TracedPipeline:
    """The sync plane's pipeline, recording one DecisionTrace per turn in the graph zone.

    Where zones 1 and 3 meet: the trace goes to the graph's non-blocking buffer (never awaited),
    and a turn answered while the graph is in legacy mode says so in ``degraded``. Each turn's
    outcome and duration also go to ``denis_chat_requests_total`` and
    ``denis_chat_latency_seconds``.
    """

    def __init__(
        self, pipeline: ChatPipeline, graph: GraphZone, clock: Clock, metrics: Metrics
    ) -> None:
        self._pipeline = pipeline
        self._graph = graph
        self._clock = clock
        self._metrics = metrics
        self._counted: dict[str, Counter] = {}  # outcome -> its labelled counter
        self._second = -1  # the UTC second ``_second_iso`` formats
        self._second_iso = ""

    async def run(self, request: TurnRequest, deadline: Deadline) -> TurnReply:
        started_s = self._clock.now_s()
        try:
            reply = await self._pipeline.run(request, deadline)
        except DenisError as exc:
            self._record(request, ("none", None), exc.code, started_s, ())
            raise
        if self._graph.resolver.legacy:
            reply = dataclasses.replace(reply, degraded=sorted({*reply.degraded, GRAPH_ZONE}))
        self._record(request, (reply.intent, reply.tool), "ok", started_s, tuple(reply.degraded))
        return reply

    def _record(
        self,
        request: TurnRequest,
        decided: tuple[str, str | None],  # the intent, and the tool it ran (if any)
        outcome: str,
        started_s: float,
        modes: tuple[str, ...],
    ) -> None:
        elapsed_s = self._clock.now_s() - started_s
        intent, tool = decided
        counter = self._counted.get(outcome)
        if counter is None:
            counter = self._counted[outcome] = self._metrics.chat_requests_total.labels(
                outcome=outcome
            )
        counter.inc()
        self._metrics.chat_latency_seconds.observe(elapsed_s)
        self._graph.traces.record(
            DecisionTrace(
                trace_id=request.trace_id,
                at=self._now_iso(),
                user=request.principal.user,
                text=request.text[:_TRACE_TEXT_CHARS],
                intent=intent,
                tool=tool,
                outcome=outcome,
                duration_ms=round(elapsed_s * 1000, 3),
                modes=modes,
            )
        )

    def _now_iso(self) -> str:
        """``datetime.now(UTC).isoformat(timespec="milliseconds")``, the same string, with the
        date and time of day formatted once a second rather than per turn."""
        now_us = time.time_ns() // 1000
        second, micros = divmod(now_us, 1_000_000)
        if second != self._second:
            at = dt.datetime.fromtimestamp(second, dt.UTC)
            self._second, self._second_iso = second, at.isoformat(timespec="seconds")[:-6]
        return f"{self._second_iso}.{micros // 1000:03d}+00:00"


def build_registry(
    settings: Settings, *, home_breaker: CircuitBreaker | None = None
) -> tuple[JobRegistry, AssistantParts]:
    """Every zone's job types, for the API and the workers alike, and the assistant's
    per-process parts those jobs use."""
    registry = default_registry()
    parts = register_assistant(registry, settings.assistant, home_breaker=home_breaker)
    return registry, parts


def worker_main(settings: Settings, *, queues: list[str], concurrency: int, beat: bool) -> None:
    registry, _ = build_registry(settings)
    run_worker(settings.async_plane, registry, queues=queues, concurrency=concurrency, beat=beat)


def home_breaker(settings: Settings, health: HealthBoard, clock: Clock) -> CircuitBreaker | None:
    """Home Assistant's breaker in the API process (on ``/status``); None for the demo home."""
    if not settings.assistant.ha_url:
        return None
    return health.add_breaker(
        CircuitBreaker.configured("home_assistant", settings.assistant.ha_breaker, clock)
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
            job_registry, parts = build_registry(
                settings, home_breaker=home_breaker(settings, health, used_clock)
            )
            graph = await stack.enter_async_context(
                open_graph_zone(settings.graph, signals=signals, health=health, clock=used_clock)
            )
            jobs = await stack.enter_async_context(
                open_async_plane(
                    settings.async_plane,
                    registry=job_registry,
                    signals=signals,
                    health=health,
                    clock=used_clock,
                )
            )
            gate_detector = detector or build_detector(
                settings.sync.injection_rules, settings.sync.injection_threshold
            )
            assistant = await stack.enter_async_context(
                open_assistant(
                    settings.assistant,
                    parts=parts,
                    resolver=graph.resolver,
                    jobs=jobs.dispatcher,
                    signals=signals,
                    health=health,
                    clock=used_clock,
                    screen=InjectionGate(gate_detector, signals),
                )
            )
            sync = await stack.enter_async_context(
                open_sync_plane(
                    settings.sync,
                    signals=signals,
                    health=health,
                    clock=used_clock,
                    responder=responder or assistant,
                    detector=gate_detector,
                )
            )
            yield Services(
                settings=settings.api,
                pipeline=TracedPipeline(sync.pipeline, graph, used_clock, signals.metrics),
                tokens=sync.tokens,
                health=health,
                signals=signals,
                clock=used_clock,
                jobs=jobs,
                graph=graph,
            )

    return build_api(open_services)
