"""The request deadline: created once at the edge, passed down, shrinking every inner timeout.

Every await on I/O runs under ``deadline.timeout_s(own_limit_s)``: the smaller of the
component's own limit and what is left of the request.
"""

from __future__ import annotations

from dataclasses import dataclass

from denis.resilience.clock import Clock

__all__ = ["Deadline"]


@dataclass(frozen=True, slots=True)
class Deadline:
    clock: Clock
    expires_at_s: float
    budget_s: float

    @classmethod
    def start(cls, clock: Clock, budget_s: float) -> Deadline:
        if budget_s <= 0:
            raise ValueError("a deadline needs a positive budget")
        return cls(clock, clock.now_s() + budget_s, budget_s)

    def remaining_s(self) -> float:
        return max(0.0, self.expires_at_s - self.clock.now_s())

    @property
    def expired(self) -> bool:
        return self.remaining_s() <= 0.0

    def timeout_s(self, own_limit_s: float) -> float:
        """The timeout for an inner step: its own limit, capped by what is left."""
        return max(0.0, min(own_limit_s, self.remaining_s()))
