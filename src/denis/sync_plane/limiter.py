"""Rate limiting: Redis first (shared by every API process), in-memory when Redis is bad.

- ``RedisRateLimiter`` wraps the ``limits`` library's fixed window on Redis: one atomic Lua
  call (INCR + EXPIRE) per check, keys with TTLs, under ``denis:rl``.
- ``MemoryRateLimiter`` is the per-process fallback. It is ours, not ``limits``'s
  ``MemoryStorage``, because that one keeps every key it has seen until its window ends and has
  no cap; ours is a ``cachetools.TTLCache`` per window length, so memory stays bounded however
  many users and addresses it sees (past ``max_keys`` the least recently used key is forgotten,
  which fails open for that key, never closed).
- ``FailoverRateLimiter`` tries Redis through the ``RedisLink`` and falls back in-line.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Literal, Protocol

from cachetools import TTLCache
from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import FixedWindowRateLimiter
from redis.asyncio import ConnectionPool

from denis.resilience import Clock, Deadline
from denis.sync_plane.constants import RATE_LIMIT_PREFIX
from denis.sync_plane.redis_link import MISSING, RedisLink

__all__ = [
    "FailoverRateLimiter",
    "MemoryRateLimiter",
    "RateLimiter",
    "RateRule",
    "RateVerdict",
    "RedisRateLimiter",
]

Backend = Literal["redis", "memory"]


@dataclass(frozen=True, slots=True)
class RateRule:
    """A named limit such as ``user: 30/minute``."""

    name: str
    item: RateLimitItem

    @classmethod
    def parse(cls, name: str, text: str) -> RateRule:
        return cls(name, parse(text))

    @property
    def amount(self) -> int:
        return int(self.item.amount)

    @property
    def window_s(self) -> int:
        return int(self.item.get_expiry())


@dataclass(frozen=True, slots=True)
class RateVerdict:
    allowed: bool
    retry_after_s: float = 0.0
    backend: Backend = "memory"


class RateLimiter(Protocol):
    async def hit(self, rule: RateRule, key: str) -> RateVerdict: ...


class RedisRateLimiter:
    def __init__(self, pool: ConnectionPool) -> None:
        storage = RedisStorage(
            "async+redis://",
            implementation="redispy",
            key_prefix=RATE_LIMIT_PREFIX,
            connection_pool=pool,  # type: ignore[arg-type] # limits types options narrowly
        )
        self._strategy = FixedWindowRateLimiter(storage)

    async def hit(self, rule: RateRule, key: str) -> RateVerdict:
        if await self._strategy.hit(rule.item, rule.name, key):
            return RateVerdict(allowed=True, backend="redis")
        stats = await self._strategy.get_window_stats(rule.item, rule.name, key)
        retry_after_s = max(1.0, math.ceil(stats.reset_time - time.time()))
        return RateVerdict(allowed=False, retry_after_s=retry_after_s, backend="redis")


class MemoryRateLimiter:
    def __init__(self, *, max_keys: int, clock: Clock) -> None:
        self._max_keys = max_keys
        self._clock = clock
        self._windows: dict[int, TTLCache[str, list[float]]] = {}

    def __len__(self) -> int:
        return sum(len(cache) for cache in self._windows.values())

    async def hit(self, rule: RateRule, key: str) -> RateVerdict:
        return self.hit_now(rule, key)

    def hit_now(self, rule: RateRule, key: str) -> RateVerdict:
        window_s = rule.window_s
        cache = self._windows.get(window_s)
        if cache is None:
            cache = TTLCache(maxsize=self._max_keys, ttl=window_s, timer=self._clock.now_s)
            self._windows[window_s] = cache
        now_s = self._clock.now_s()
        slot = f"{rule.name}/{rule.amount}/{key}"
        entry = cache.get(slot)  # [count, window start]; mutated in place so its TTL holds
        if entry is None or entry[1] + window_s <= now_s:
            entry = [0.0, now_s]
            cache[slot] = entry
        if entry[0] >= rule.amount:
            retry_after_s = max(1.0, math.ceil(entry[1] + window_s - now_s))
            return RateVerdict(allowed=False, retry_after_s=retry_after_s, backend="memory")
        entry[0] += 1
        return RateVerdict(allowed=True, backend="memory")


class FailoverRateLimiter:
    def __init__(
        self,
        memory: MemoryRateLimiter,
        redis: RedisRateLimiter | None = None,
        link: RedisLink | None = None,
    ) -> None:
        self._memory = memory
        self._redis = redis
        self._link = link

    async def hit(self, rule: RateRule, key: str, deadline: Deadline) -> RateVerdict:
        if self._redis is not None and self._link is not None:
            redis = self._redis
            verdict = await self._link.attempt(lambda: redis.hit(rule, key), deadline)
            if verdict is not MISSING:
                return verdict
        return self._memory.hit_now(rule, key)
