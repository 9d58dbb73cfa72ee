"""Builds the sync plane from its settings slice: the one constructor ``app.py`` calls."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from denis.resilience import CircuitBreaker, Clock, HealthBoard, Signals, ZoneStatus
from denis.settings import SyncSettings
from denis.sync_plane.admission import AdmissionGate, RateRules
from denis.sync_plane.auth import TokenStore
from denis.sync_plane.budget import BudgetGate, MemoryBudgetStore
from denis.sync_plane.injection import InjectionDetector, InjectionGate, build_detector
from denis.sync_plane.limiter import MemoryRateLimiter, RateRule
from denis.sync_plane.pipeline import SYNC_ZONE, ChatPipeline
from denis.sync_plane.redis_link import RedisLink
from denis.sync_plane.responder import BasicResponder, Responder

__all__ = ["SyncPlane", "open_sync_plane"]


@dataclass(frozen=True, slots=True)
class SyncPlane:
    pipeline: ChatPipeline
    tokens: TokenStore
    injection: InjectionGate
    link: RedisLink | None
    responder_breaker: CircuitBreaker

    def status(self) -> ZoneStatus:
        on_memory = self.link is not None and self.link.degraded
        responder_down = self.responder_breaker.state != "closed"
        details = {
            "rate_limiter": "redis" if self.link is not None and not on_memory else "memory",
            "responder": "fallback" if responder_down else "normal",
        }
        mode = "fallback" if on_memory or responder_down else "normal"
        return ZoneStatus(mode, details)


@asynccontextmanager
async def open_sync_plane(  # noqa: PLR0913 - explicit wiring
    settings: SyncSettings,
    *,
    signals: Signals,
    health: HealthBoard,
    clock: Clock,
    responder: Responder | None = None,
    detector: InjectionDetector | None = None,
) -> AsyncIterator[SyncPlane]:
    link: RedisLink | None = None
    if settings.redis_url:
        link = RedisLink(
            settings.redis_url,
            timeout_s=settings.redis_timeout_s,
            breaker=health.add_breaker(
                CircuitBreaker.configured("redis", settings.redis_breaker, clock)
            ),
            signals=signals,
        )
    else:
        signals.metrics.limiter_backend.set(0)
    responder_breaker = health.add_breaker(
        CircuitBreaker.configured("responder", settings.responder_breaker, clock)
    )
    if detector is None:
        detector = build_detector(settings.injection_rules, settings.injection_threshold)
    injection = InjectionGate(detector, signals)
    budget = BudgetGate(
        memory=MemoryBudgetStore(max_keys=settings.memory_limiter_max_keys, clock=clock),
        link=link,
        tokens_per_day=settings.budget_tokens_per_day,
        reply_reserve_tokens=settings.budget_reply_reserve_tokens,
        signals=signals,
    )
    admission = AdmissionGate(
        rules=RateRules(
            user=RateRule.parse("user", settings.rate_limit_user),
            client=RateRule.parse("client", settings.rate_limit_client),
        ),
        limiter=MemoryRateLimiter(max_keys=settings.memory_limiter_max_keys, clock=clock),
        budget=budget,
        link=link,
    )
    pipeline = ChatPipeline(
        admission=admission,
        budget=budget,
        injection=injection,
        responder=responder or BasicResponder(),
        responder_breaker=responder_breaker,
        responder_timeout_s=settings.responder_timeout_s,
        signals=signals,
    )
    plane = SyncPlane(pipeline, TokenStore(settings.data_dir), injection, link, responder_breaker)
    health.add_zone(SYNC_ZONE, plane.status)
    try:
        yield plane
    finally:
        if link is not None:
            await link.aclose()
