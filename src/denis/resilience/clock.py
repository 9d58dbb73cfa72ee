"""Monotonic time behind an interface, so breakers, deadlines and limiters can be tested on a
fake clock without sleeping. Wall-clock time never drives a resilience decision."""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "ManualClock", "MonotonicClock"]


class Clock(Protocol):
    def now_s(self) -> float:
        """Seconds on a monotonic scale; only differences are meaningful."""
        ...


class MonotonicClock:
    def now_s(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that moves only when told to (tests and benchmarks)."""

    def __init__(self, start_s: float = 1000.0) -> None:
        self._now_s = start_s

    def now_s(self) -> float:
        return self._now_s

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a monotonic clock does not go back")
        self._now_s += seconds
