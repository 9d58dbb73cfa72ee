"""A turn's admission: the client address's rate limit, the user's, then the user's token
budget, each able to refuse the turn. Redis first, in one script and one round trip
(``redis_admission``); when Redis is bad (the ``RedisLink`` says ``MISSING``: down, hung, or its
breaker open), the same checks in the same order on the in-memory limiter and budget store, and
the turn is marked degraded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NoReturn

from denis.errors import RateLimitedError
from denis.resilience import Deadline
from denis.sync_plane.budget import BudgetGate, Reservation
from denis.sync_plane.limiter import MemoryRateLimiter, RateRule, RateVerdict
from denis.sync_plane.redis_admission import AdmissionReply, RedisAdmission
from denis.sync_plane.redis_link import MISSING, RedisLink

__all__ = ["AdmissionGate", "RateRules"]


@dataclass(frozen=True, slots=True)
class RateRules:
    user: RateRule
    client: RateRule


class AdmissionGate:
    def __init__(
        self,
        *,
        rules: RateRules,
        limiter: MemoryRateLimiter,
        budget: BudgetGate,
        link: RedisLink | None = None,
    ) -> None:
        self._rules = rules
        self._limiter = limiter
        self._budget = budget
        self._redis = RedisAdmission(link.batcher) if link is not None else None
        self._link = link

    async def admit(
        self, user: str, client_addr: str, text_tokens: int, deadline: Deadline
    ) -> tuple[Reservation, bool]:
        """The turn's reservation, and whether it was made on memory while Redis is
        configured (the turn runs degraded); raises ``RateLimitedError`` or
        ``BudgetExceededError`` when a check refuses it."""
        checks = ((self._rules.client, client_addr), (self._rules.user, user))
        ask = self._budget.ask(user, text_tokens)
        if self._redis is not None and self._link is not None:
            redis = self._redis
            raw = await self._link.attempt(lambda: redis.send(checks, ask), deadline)
            if raw is not MISSING:
                reply = AdmissionReply.read(raw)
                if reply.refused_by is None:
                    return Reservation(ask.key, ask.tokens, "redis"), False
                if reply.refused_by < 0:
                    self._budget.refuse(reply.value)
                _refuse(checks[reply.refused_by][0], reply.rate_verdict())
        for rule, key in checks:
            verdict = self._limiter.hit_now(rule, key)
            if not verdict.allowed:
                _refuse(rule, verdict)
        return self._budget.reserve_in_memory(ask), self._link is not None


def _refuse(rule: RateRule, verdict: RateVerdict) -> NoReturn:
    raise RateLimitedError(
        f"too many requests for this {rule.name} (limit {rule.item}); "
        f"try again in {int(verdict.retry_after_s)} s",
        retry_after_s=verdict.retry_after_s,
    )
