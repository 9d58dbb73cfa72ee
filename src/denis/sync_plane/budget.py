"""The budget gate: a per-user token budget per UTC day.

Tokens are reserved before the work (the text in plus an estimate of the reply) and settled
after it with the real count, each in one atomic step (a Lua script on Redis; a single
synchronous step on the event loop in memory), so concurrent requests cannot overspend. Redis
first, in-memory (bounded, per process) while Redis is bad; a reservation is settled on the
store that made it, or left at its estimate if that store is gone. A turn refused or cut
short after its reservation (injection gate, timeout) gets its reservation back: a refused
request leaves nothing half-written.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import time
from dataclasses import dataclass
from typing import Literal, Protocol

from denis.errors import BudgetExceededError
from denis.resilience import Clock, Deadline, MonotonicClock, Signal, Signals
from denis.sync_plane.constants import BUDGET_KEY_TTL_S, BUDGET_PREFIX
from denis.sync_plane.redis_batch import CommandBatcher
from denis.sync_plane.redis_link import MISSING, RedisLink
from denis.sync_plane.ttl_lru import TtlLru

__all__ = [
    "BudgetGate",
    "BudgetStore",
    "MemoryBudgetStore",
    "RedisBudgetStore",
    "Reservation",
    "count_tokens",
]

_TOKEN = re.compile(r"\w+|[^\w\s]")

_RESERVE = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local want = tonumber(ARGV[1])
if used + want > tonumber(ARGV[2]) then return {0, used} end
used = redis.call('INCRBY', KEYS[1], want)
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {1, used}
"""
_ADJUST = """
local used = redis.call('INCRBY', KEYS[1], ARGV[1])
if used < 0 then redis.call('SET', KEYS[1], 0) used = 0 end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return used
"""


REFUND_TIMEOUT_S = 1.0


def count_tokens(text: str) -> int:
    """Approximate LLM tokens: words and punctuation marks (a later LLM reports its own)."""
    return len(_TOKEN.findall(text))


class BudgetStore(Protocol):
    async def reserve(self, key: str, tokens: int, limit: int) -> tuple[bool, int]:
        """Add ``tokens`` if the total stays within ``limit``; (granted, total after)."""
        ...

    async def adjust(self, key: str, delta: int) -> int: ...


class RedisBudgetStore:
    def __init__(self, batcher: CommandBatcher) -> None:
        self._reserve = batcher.script(_RESERVE)
        self._adjust = batcher.script(_ADJUST)

    async def reserve(self, key: str, tokens: int, limit: int) -> tuple[bool, int]:
        granted, used = await self._reserve(
            keys=[f"{BUDGET_PREFIX}:{key}"], args=[tokens, limit, BUDGET_KEY_TTL_S]
        )
        return bool(granted), int(used)

    async def adjust(self, key: str, delta: int) -> int:
        return int(
            await self._adjust(keys=[f"{BUDGET_PREFIX}:{key}"], args=[delta, BUDGET_KEY_TTL_S])
        )


class MemoryBudgetStore:
    def __init__(self, *, max_keys: int, clock: Clock) -> None:
        self._clock = clock
        self._used: TtlLru[str, int] = TtlLru(max_keys=max_keys, ttl_s=BUDGET_KEY_TTL_S)

    async def reserve(self, key: str, tokens: int, limit: int) -> tuple[bool, int]:
        now_s = self._clock.now_s()
        used = self._used.get(key, now_s) or 0
        if used + tokens > limit:
            return False, used
        self._used.set(key, used + tokens, now_s)
        return True, used + tokens

    async def adjust(self, key: str, delta: int) -> int:
        return self.release_now(key, -delta)

    def release_now(self, key: str, tokens: int) -> int:
        now_s = self._clock.now_s()
        used = max(0, (self._used.get(key, now_s) or 0) - tokens)
        self._used.set(key, used, now_s)
        return used


# Per-turn value, never mutated; not ``frozen`` for speed (see ``sync_plane.pipeline.TurnRequest``).
@dataclass(slots=True)
class Reservation:
    key: str
    tokens: int
    backend: Literal["redis", "memory"]


_DAY_S = 86_400  # a UTC day in POSIX time, which has no leap seconds


class BudgetGate:
    def __init__(  # noqa: PLR0913 - the gate's wiring is explicit on purpose
        self,
        *,
        memory: MemoryBudgetStore,
        redis: RedisBudgetStore | None,
        link: RedisLink | None,
        tokens_per_day: int,
        reply_reserve_tokens: int,
        signals: Signals,
    ) -> None:
        self._memory = memory
        self._redis = redis
        self._link = link
        self._limit = tokens_per_day
        self._reply_reserve = reply_reserve_tokens
        self._signals = signals
        self._refunds: set[asyncio.Task[None]] = set()
        self._day_number = -1
        self._day = ""

    async def reserve(self, user: str, text: str, deadline: Deadline) -> Reservation:
        return await self.reserve_counted(user, count_tokens(text), deadline)

    async def reserve_counted(self, user: str, text_tokens: int, deadline: Deadline) -> Reservation:
        """``reserve`` for a text whose tokens the caller has counted already."""
        key = f"{user}:{self._utc_day()}"
        tokens = text_tokens + self._reply_reserve
        if self._redis is not None and self._link is not None:
            redis = self._redis
            result = await self._link.attempt(
                lambda: redis.reserve(key, tokens, self._limit), deadline
            )
            if result is not MISSING:
                return self._admit(result, Reservation(key, tokens, "redis"))
        result = await self._memory.reserve(key, tokens, self._limit)
        return self._admit(result, Reservation(key, tokens, "memory"))

    async def settle(
        self, reservation: Reservation, actual_tokens: int, deadline: Deadline
    ) -> None:
        delta = actual_tokens - reservation.tokens
        if delta == 0:
            return
        if reservation.backend == "memory":
            await self._memory.adjust(reservation.key, delta)
        elif self._redis is not None and self._link is not None:
            redis = self._redis
            await self._link.attempt(lambda: redis.adjust(reservation.key, delta), deadline)

    def release(self, reservation: Reservation) -> None:
        """Give a reservation back, without waiting: the turn that made it is being unwound,
        possibly cancelled, so the Redis call runs in a task of its own with its own deadline."""
        if reservation.backend == "memory":
            self._memory.release_now(reservation.key, reservation.tokens)
            return
        deadline = Deadline.start(MonotonicClock(), REFUND_TIMEOUT_S)
        task = asyncio.get_running_loop().create_task(self.settle(reservation, 0, deadline))
        self._refunds.add(task)
        task.add_done_callback(self._refunds.discard)

    def _utc_day(self) -> str:
        """Today's date in UTC as ``YYYYMMDD``, formatted once a day rather than per turn."""
        day_number = int(time.time() // _DAY_S)
        if day_number != self._day_number:
            midnight = dt.datetime.fromtimestamp(day_number * _DAY_S, dt.UTC)
            self._day_number, self._day = day_number, midnight.strftime("%Y%m%d")
        return self._day

    def _admit(self, result: tuple[bool, int], reservation: Reservation) -> Reservation:
        granted, used = result
        if granted:
            return reservation
        self._signals.emit(Signal.GATE_BUDGET_EXCEEDED, used=used, limit=self._limit)
        raise BudgetExceededError(
            f"today's budget of {self._limit} tokens is used up ({used} used); "
            "it resets at 00:00 UTC"
        )
