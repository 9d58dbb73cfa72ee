"""Circuit breaker: N consecutive failures open it for a cool-down, then one half-open probe.

Why our own and not a library: the libraries we looked at (pybreaker, purgatory, aiobreaker)
use wall-clock time, let every concurrent caller through in half-open, or count a cancelled
call as a failure. Here:

- time comes from an injected monotonic ``Clock``;
- a caller gets a ``Permit``; only a permit of the current generation may change the state,
  so a slow call that started before the breaker opened cannot close it again afterwards;
- half-open hands out exactly one probe permit at a time, under concurrency (a lock guards the
  state, so threads are safe too); a cancelled probe gives its slot back without a verdict;
- timeouts count as failures; every transition is one frozen ``BreakerTransition`` event passed
  to the listeners (which count the signal and set the gauge), never one per call.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, TypeVar

from denis.errors import BreakerOpenError, DependencyUnavailableError
from denis.resilience.clock import Clock, MonotonicClock

__all__ = [
    "BreakerLimits",
    "BreakerListener",
    "BreakerState",
    "BreakerTransition",
    "CircuitBreaker",
    "Permit",
]

T = TypeVar("T")


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerTransition:
    breaker: str
    old: BreakerState
    new: BreakerState
    at_s: float


@dataclass(frozen=True, slots=True)
class Permit:
    """Leave to call the dependency once; hand it back with its outcome."""

    generation: int
    probe: bool


BreakerListener = Callable[[BreakerTransition], None]


class BreakerLimits(Protocol):
    """A breaker's configured limits (``denis.settings.BreakerSettings``)."""

    @property
    def failure_threshold(self) -> int: ...
    @property
    def cooldown_s(self) -> float: ...


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        cooldown_s: float = 30.0,
        clock: Clock | None = None,
        listeners: Iterable[BreakerListener] = (),
    ) -> None:
        if failure_threshold < 1 or cooldown_s <= 0:
            raise ValueError("a breaker needs failure_threshold >= 1 and cooldown_s > 0")
        self.name = name
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._clock = clock if clock is not None else MonotonicClock()
        self._listeners = list(listeners)
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._generation = 0
        self._failures = 0
        self._opened_at_s = 0.0
        self._probe_out = False

    @classmethod
    def configured(cls, name: str, limits: BreakerLimits, clock: Clock) -> CircuitBreaker:
        """The breaker ``name`` with a zone's configured threshold and cool-down."""
        return cls(
            name,
            failure_threshold=limits.failure_threshold,
            cooldown_s=limits.cooldown_s,
            clock=clock,
        )

    def add_listener(self, listener: BreakerListener) -> None:
        self._listeners.append(listener)

    @property
    def state(self) -> BreakerState:
        with self._lock:
            event = self._half_open_if_cooled()
            state = self._state
        self._publish(event)
        return state

    def retry_after_s(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when it would now)."""
        with self._lock:
            if self._state is not BreakerState.OPEN:
                return 0.0
            return max(0.0, self._opened_at_s + self.cooldown_s - self._clock.now_s())

    def try_acquire(self) -> Permit | None:
        """A permit to call the dependency now, or ``None`` if the breaker says no."""
        with self._lock:
            event = self._half_open_if_cooled()
            permit: Permit | None = None
            if self._state is BreakerState.CLOSED:
                permit = Permit(self._generation, probe=False)
            elif self._state is BreakerState.HALF_OPEN and not self._probe_out:
                self._probe_out = True
                permit = Permit(self._generation, probe=True)
        self._publish(event)
        return permit

    def acquire(self) -> Permit:
        permit = self.try_acquire()
        if permit is None:
            raise BreakerOpenError(
                f"{self.name} is unavailable (circuit open)",
                dependency=self.name,
                retry_after_s=max(self.retry_after_s(), 1.0),
            )
        return permit

    def record_success(self, permit: Permit) -> None:
        with self._lock:
            event = None
            if permit.generation == self._generation:
                if self._state is BreakerState.CLOSED:
                    self._failures = 0
                elif self._state is BreakerState.HALF_OPEN and permit.probe:
                    event = self._move(BreakerState.CLOSED)
        self._publish(event)

    def record_failure(self, permit: Permit) -> None:
        with self._lock:
            event = None
            if permit.generation == self._generation:
                if self._state is BreakerState.CLOSED:
                    self._failures += 1
                    if self._failures >= self.failure_threshold:
                        event = self._move(BreakerState.OPEN)
                elif self._state is BreakerState.HALF_OPEN and permit.probe:
                    event = self._move(BreakerState.OPEN)
        self._publish(event)

    def release(self, permit: Permit) -> None:
        """Hand back a permit without a verdict (the call was cancelled)."""
        with self._lock:
            if permit.probe and permit.generation == self._generation:
                self._probe_out = False

    async def call(self, fn: Callable[[], Awaitable[T]], *, timeout_s: float) -> T:
        """Run ``fn`` under the breaker and a timeout; a timeout or any error is a failure.

        Raises ``BreakerOpenError`` without calling ``fn`` when open, and
        ``DependencyUnavailableError`` (from the original) when the call fails.
        """
        permit = self.acquire()
        try:
            async with asyncio.timeout(timeout_s):
                result = await fn()
        except asyncio.CancelledError:
            self.release(permit)
            raise
        except Exception as exc:
            self.record_failure(permit)
            kind = "timed out" if isinstance(exc, TimeoutError) else "failed"
            raise DependencyUnavailableError(f"{self.name} {kind}", dependency=self.name) from exc
        self.record_success(permit)
        return result

    # -- internals, called with the lock held ------------------------------------------

    def _half_open_if_cooled(self) -> BreakerTransition | None:
        if (
            self._state is BreakerState.OPEN
            and self._clock.now_s() >= self._opened_at_s + self.cooldown_s
        ):
            return self._move(BreakerState.HALF_OPEN)
        return None

    def _move(self, new: BreakerState) -> BreakerTransition:
        old, now_s = self._state, self._clock.now_s()
        self._state = new
        self._generation += 1
        self._failures = 0
        self._probe_out = False
        if new is BreakerState.OPEN:
            self._opened_at_s = now_s
        return BreakerTransition(self.name, old, new, now_s)

    def _publish(self, event: BreakerTransition | None) -> None:
        if event is None:
            return
        for listener in self._listeners:
            listener(event)
