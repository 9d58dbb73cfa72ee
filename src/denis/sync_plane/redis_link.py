"""The sync plane's one link to Redis: short timeouts, no retries, a breaker, one signal.

redis-py retries a timed-out command by default, so a hung (SIGSTOPped) Redis took 26 s to
raise with ``socket_timeout=2``. Here nothing retries, and every command is bounded by its
batch's timer in the ``CommandBatcher`` (``timeout_s``): a hung Redis costs an operation at
most ``timeout_s`` a command, and once the breaker is open nothing waits on it at all.
``attempt`` returns ``MISSING`` instead of raising, so callers fall back in-line.

The mode lives here: the first failed call enters fallback (``rate_limit.redis_down``, counted
once per outage), the first successful call after it leaves fallback (one log line).
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

from denis.resilience import BreakerState, CircuitBreaker, Deadline, Signal, Signals
from denis.sync_plane.redis_batch import CommandBatcher

__all__ = ["MISSING", "Missing", "RedisLink"]

T = TypeVar("T")
_log = structlog.get_logger("denis.sync_plane")


class Missing(enum.Enum):
    MISSING = enum.auto()


MISSING = Missing.MISSING


class RedisLink:
    def __init__(
        self,
        url: str,
        *,
        timeout_s: float,
        breaker: CircuitBreaker,
        signals: Signals,
    ) -> None:
        self.batcher = CommandBatcher(url, timeout_s=timeout_s)
        self.breaker = breaker
        self._signals = signals
        self._degraded = False
        signals.metrics.limiter_backend.set(1)

    @property
    def degraded(self) -> bool:
        return self._degraded

    @property
    def usable(self) -> bool:
        """Whether a command whose reply nobody waits for is worth sending: the breaker is
        closed (open, nothing goes; half-open, only the probe ``attempt`` lets through)."""
        return self.breaker.state is BreakerState.CLOSED

    async def attempt(self, op: Callable[[], Awaitable[T]], deadline: Deadline) -> T | Missing:
        """Run one Redis operation, or give ``MISSING`` at once if Redis is known bad.

        Each command of ``op`` is bounded by its batch's timer (``timeout_s``), so a timer of
        the operation's own is armed only when the request has less time left than that. When
        the request's deadline, not Redis, cut the call short, the call is handed back without
        a verdict: a request running out of time says nothing about Redis.
        """
        limit_s = deadline.timeout_s(self.batcher.timeout_s)
        if limit_s <= 0:
            return MISSING
        permit = self.breaker.try_acquire()
        if permit is None:
            return MISSING
        request_bound = limit_s < self.batcher.timeout_s  # the request ends before a batch would
        try:
            if request_bound:
                async with asyncio.timeout(limit_s):
                    result = await op()
            else:
                result = await op()
        except asyncio.CancelledError:
            self.breaker.release(permit)
            raise
        except TimeoutError as exc:
            if request_bound:
                self.breaker.release(permit)
                return MISSING
            self.breaker.record_failure(permit)
            self._enter_fallback(exc)
            return MISSING
        except Exception as exc:  # noqa: BLE001 - any Redis failure means: use the fallback
            self.breaker.record_failure(permit)
            self._enter_fallback(exc)
            return MISSING
        self.breaker.record_success(permit)
        self._leave_fallback()
        return result

    async def aclose(self) -> None:
        await self.batcher.aclose()

    def _enter_fallback(self, exc: Exception) -> None:
        if self._degraded:
            return
        self._degraded = True
        self._signals.metrics.limiter_backend.set(0)
        self._signals.emit(
            Signal.RATE_LIMIT_REDIS_DOWN, error=type(exc).__name__, fallback="memory"
        )

    def _leave_fallback(self) -> None:
        if not self._degraded:
            return
        self._degraded = False
        self._signals.metrics.limiter_backend.set(1)
        self._signals.note(
            Signal.RECOVERED, dependency="redis", ended=Signal.RATE_LIMIT_REDIS_DOWN.value
        )
