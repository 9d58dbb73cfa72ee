"""The budget gate: a per-user token budget per UTC day.

Tokens are reserved before the work (the text in plus an estimate of the reply) and settled
after it with the real count, each in one atomic step (a Lua script on Redis; a single
synchronous step on the event loop in memory), so concurrent requests cannot overspend. Redis
first, in-memory (bounded, per process) while Redis is bad. On Redis the reservation is part of
the turn's admission script (``redis_admission``), after the rate limits. A reservation is
settled on the store that made it, or left at its estimate if that store is gone. A turn
refused or cut short after its reservation (injection gate, timeout) gets its reservation back:
a refused request leaves nothing half-written.

Settling and giving back are not waited for (``adjust_soon``): the reply does not depend on
them, and on Redis they go out on the one connection every later command of this process also
takes, so each is applied before this process's next reservation. One awaited command a turn
fewer was worth more throughput than any other change to the Redis path
(``benchmarks/RESULTS.md``, eighth round).
"""

from __future__ import annotations

import datetime as dt
import re
import time
from dataclasses import dataclass
from typing import Literal, NoReturn, Protocol

from denis.errors import BudgetExceededError
from denis.resilience import Clock, Signal, Signals
from denis.sync_plane.constants import BUDGET_KEY_TTL_S, BUDGET_PREFIX
from denis.sync_plane.redis_admission import BudgetAsk, RedisAdmission
from denis.sync_plane.redis_batch import CommandBatcher
from denis.sync_plane.redis_link import RedisLink
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

_ADJUST = """
local used = redis.call('INCRBY', KEYS[1], ARGV[1])
if used < 0 then redis.call('SET', KEYS[1], 0) used = 0 end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return used
"""


def count_tokens(text: str) -> int:
    """Approximate LLM tokens: words and punctuation marks (a later LLM reports its own)."""
    return len(_TOKEN.findall(text))


class BudgetStore(Protocol):
    async def reserve(self, key: str, tokens: int, limit: int) -> tuple[bool, int]:
        """Add ``tokens`` if the total stays within ``limit``; (granted, total after)."""
        ...

    def adjust_soon(self, key: str, delta: int) -> None:
        """Add ``delta`` (the total never goes below zero), without waiting; applied before
        any later call on this store."""
        ...


class RedisBudgetStore:
    def __init__(self, batcher: CommandBatcher) -> None:
        self._admission = RedisAdmission(batcher)
        self._adjust = batcher.script(_ADJUST)

    async def reserve(self, key: str, tokens: int, limit: int) -> tuple[bool, int]:
        return await self._admission.reserve(key, tokens, limit)

    def adjust_soon(self, key: str, delta: int) -> None:
        self._adjust.send_nowait([f"{BUDGET_PREFIX}:{key}"], [delta, BUDGET_KEY_TTL_S])


class MemoryBudgetStore:
    def __init__(self, *, max_keys: int, clock: Clock) -> None:
        self._clock = clock
        self._used: TtlLru[str, int] = TtlLru(max_keys=max_keys, ttl_s=BUDGET_KEY_TTL_S)

    async def reserve(self, key: str, tokens: int, limit: int) -> tuple[bool, int]:
        return self.reserve_now(key, tokens, limit)

    def reserve_now(self, key: str, tokens: int, limit: int) -> tuple[bool, int]:
        now_s = self._clock.now_s()
        used = self._used.get(key, now_s) or 0
        if used + tokens > limit:
            return False, used
        self._used.set(key, used + tokens, now_s)
        return True, used + tokens

    def adjust_soon(self, key: str, delta: int) -> None:
        now_s = self._clock.now_s()
        used = max(0, (self._used.get(key, now_s) or 0) + delta)
        self._used.set(key, used, now_s)


# Per-turn value, never mutated; not ``frozen`` for speed (see ``sync_plane.pipeline.TurnRequest``).
@dataclass(slots=True)
class Reservation:
    key: str
    tokens: int
    backend: Literal["redis", "memory"]


_DAY_S = 86_400  # a UTC day in POSIX time, which has no leap seconds


class BudgetGate:
    def __init__(
        self,
        *,
        memory: MemoryBudgetStore,
        link: RedisLink | None,
        tokens_per_day: int,
        reply_reserve_tokens: int,
        signals: Signals,
    ) -> None:
        self._memory = memory
        self._redis = RedisBudgetStore(link.batcher) if link is not None else None
        self._link = link
        self._limit = tokens_per_day
        self._reply_reserve = reply_reserve_tokens
        self._signals = signals
        self._day_number = -1
        self._day = ""

    def ask(self, user: str, text_tokens: int) -> BudgetAsk:
        """What a turn of ``text_tokens`` reserves: its tokens and an estimate of its reply's,
        on the user's key for today."""
        key = f"{user}:{self._utc_day()}"
        return BudgetAsk(key, text_tokens + self._reply_reserve, self._limit)

    def reserve_in_memory(self, ask: BudgetAsk) -> Reservation:
        """Reserve on the in-memory store (Redis is bad, or not configured)."""
        granted, used = self._memory.reserve_now(ask.key, ask.tokens, ask.limit)
        if not granted:
            self.refuse(used)
        return Reservation(ask.key, ask.tokens, "memory")

    def refuse(self, used: int) -> NoReturn:
        self._signals.emit(Signal.GATE_BUDGET_EXCEEDED, used=used, limit=self._limit)
        raise BudgetExceededError(
            f"today's budget of {self._limit} tokens is used up ({used} used); "
            "it resets at 00:00 UTC"
        )

    def settle(self, reservation: Reservation, actual_tokens: int) -> None:
        """Correct the reservation to what the turn used, without waiting."""
        delta = actual_tokens - reservation.tokens
        if delta == 0:
            return
        if reservation.backend == "memory":
            self._memory.adjust_soon(reservation.key, delta)
        elif self._redis is not None and self._link is not None and self._link.usable:
            self._redis.adjust_soon(reservation.key, delta)
        # else Redis is known bad: the reservation stays at its estimate

    def release(self, reservation: Reservation) -> None:
        """Give a reservation back (the turn was refused later on, or is being unwound)."""
        self.settle(reservation, 0)

    def _utc_day(self) -> str:
        """Today's date in UTC as ``YYYYMMDD``, formatted once a day rather than per turn."""
        day_number = int(time.time() // _DAY_S)
        if day_number != self._day_number:
            midnight = dt.datetime.fromtimestamp(day_number * _DAY_S, dt.UTC)
            self._day_number, self._day = day_number, midnight.strftime("%Y%m%d")
        return self._day
