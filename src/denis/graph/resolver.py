"""What the assistant calls on the request path: routes, policy decisions, device names.

Every graph call goes through the graph's breaker (5 failures → open for 30 s, then one
half-open probe) under the smaller of the query timeout (2 s) and what is left of the request.
While the breaker is not closed the zone is in **legacy mode**: graph operations are skipped
and answers come from the legacy cache, so no request waits on a graph known to be down.
Device and area names always resolve from the cache's index, which the refresher keeps in
step with the graph while it is healthy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import structlog

from denis.graph.cache import LegacyCache, decide
from denis.graph.model import DecisionTrace, Device, HomeGraph, PolicyDecision, Route
from denis.graph.store import GraphError, GraphStore
from denis.resilience import CircuitBreaker, Clock, Deadline, Signal, Signals, ZoneStatus

__all__ = ["GRAPH_ZONE", "GraphResolver", "Resolved"]

GRAPH_ZONE = "graph"
T = TypeVar("T")
_log = structlog.get_logger("denis.graph")


@dataclass(frozen=True, slots=True)
class Resolved(Generic[T]):
    value: T
    legacy: bool  # answered from the legacy cache, not the graph


class GraphResolver:
    def __init__(  # noqa: PLR0913 - explicit wiring
        self,
        *,
        store: GraphStore,
        cache: LegacyCache,
        breaker: CircuitBreaker,
        signals: Signals,
        query_timeout_s: float,
        backend: str,
        clock: Clock,
    ) -> None:
        self._clock = clock
        self.store = store
        self.cache = cache
        self.breaker = breaker
        self._signals = signals
        self._timeout_s = query_timeout_s
        self._backend = backend
        self._legacy = False

    @property
    def legacy(self) -> bool:
        return self._legacy or self.breaker.state != "closed"

    def status(self) -> ZoneStatus:
        details = {"store": self._backend, "cached_routes": len(self.cache.home.routes)}
        return ZoneStatus("legacy" if self.legacy else "normal", details)

    async def route(self, intent: str, deadline: Deadline) -> Resolved[Route | None]:
        found = await self._call(lambda t: self.store.route(intent, t), deadline)
        if found is _DOWN:
            return Resolved(self.cache.route(intent), legacy=True)
        return Resolved(found, legacy=False)  # type: ignore[arg-type]

    async def decide(self, tool: str, user: str, deadline: Deadline) -> Resolved[PolicyDecision]:
        found = await self._call(lambda t: self.store.policies(tool, t), deadline)
        if found is _DOWN:
            return Resolved(self.cache.decide(tool, user), legacy=True)
        return Resolved(decide(found, user), legacy=False)  # type: ignore[arg-type]

    def device(self, name: str) -> Resolved[Device | None]:
        return Resolved(self.cache.device(name), legacy=self.legacy)

    async def load(self, home: HomeGraph, deadline: Deadline) -> bool:
        """Load a home file into the graph (and the cache); False if the graph is down."""
        done = await self._call(lambda t: self.store.load(home, t), deadline)
        if done is _DOWN:
            return False
        await self.refresh(deadline)
        return True

    async def refresh(self, deadline: Deadline) -> bool:
        home = await self._call(self.store.snapshot, deadline)
        if home is _DOWN:
            return False
        await asyncio.to_thread(self.cache.remember, home)  # type: ignore[arg-type]
        return True

    async def write_traces(self, traces: list[DecisionTrace], deadline: Deadline) -> bool:
        done = await self._call(lambda t: self.store.write_traces(traces, t), deadline)
        return done is not _DOWN

    async def _call(self, op: Callable[[float], Awaitable[T]], deadline: Deadline) -> T | object:
        timeout_s = deadline.timeout_s(self._timeout_s)
        permit = self.breaker.try_acquire() if timeout_s > 0 else None
        if permit is None:
            return _DOWN
        try:
            result = await op(timeout_s)
        except asyncio.CancelledError:
            self.breaker.release(permit)
            raise
        except GraphError as exc:
            self.breaker.record_failure(permit)
            if exc.signal is not None:
                self._signals.count(exc.signal)  # counted each time; logged once per outage
            self._enter_legacy(exc)
            return _DOWN
        self.breaker.record_success(permit)
        if self.breaker.state == "closed":  # not a late success from before the breaker opened
            self._leave_legacy()
        return result

    def _enter_legacy(self, exc: GraphError) -> None:
        if not self._legacy:
            self._legacy = True
            _log.warning(
                "graph.legacy_mode", error=str(exc), routes_cached=len(self.cache.home.routes)
            )

    def _leave_legacy(self) -> None:
        if self._legacy:
            self._legacy = False
            self._signals.note(Signal.RECOVERED, dependency="graph", ended="graph.legacy_mode")


_DOWN = object()
