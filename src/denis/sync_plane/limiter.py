"""Rate limiting: Redis first (shared by every API process), in-memory when Redis is bad.

- ``RedisRateLimiter`` wraps the ``limits`` library's fixed window on Redis: one atomic Lua
  call (INCR + EXPIRE) per check, keys with TTLs, under ``denis:rl``. The window arithmetic and
  key names are ``limits``'s; the storage under it is ``BatchedRedisStorage``, a ``limits``
  storage (its documented extension point) whose commands go through the ``CommandBatcher``,
  so the checks of concurrent turns share round trips. ``limits``'s own ``RedisStorage`` owns
  its client and sends each check on its own round trip.
- ``MemoryRateLimiter`` is the per-process fallback. It is ours, not ``limits``'s
  ``MemoryStorage``, because that one keeps every key it has seen until its window ends and has
  no cap; ours is a ``TtlLru`` (``cachetools.TTLCache``'s policy, cheaper) per window length, so
  memory stays bounded however many users and addresses it sees (past ``max_keys`` the least
  recently used key is forgotten, which fails open for that key, never closed).
- ``FailoverRateLimiter`` tries Redis through the ``RedisLink`` and falls back in-line.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Literal, Protocol

from limits import RateLimitItem, parse
from limits.aio.storage import Storage
from limits.aio.strategies import FixedWindowRateLimiter
from redis.exceptions import RedisError

from denis.resilience import Clock, Deadline
from denis.sync_plane.constants import RATE_LIMIT_PREFIX
from denis.sync_plane.redis_batch import CommandBatcher
from denis.sync_plane.redis_link import MISSING, RedisLink
from denis.sync_plane.ttl_lru import TtlLru

__all__ = [
    "BatchedRedisStorage",
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
    amount: int = field(init=False)
    window_s: int = field(init=False)

    def __post_init__(self) -> None:  # read once here, not from ``item`` on every hit
        object.__setattr__(self, "amount", int(self.item.amount))
        object.__setattr__(self, "window_s", int(self.item.get_expiry()))

    @classmethod
    def parse(cls, name: str, text: str) -> RateRule:
        return cls(name, parse(text))


@dataclass(frozen=True, slots=True)
class RateVerdict:
    allowed: bool
    retry_after_s: float = 0.0
    backend: Backend = "memory"


_ALLOWED_ON_REDIS = RateVerdict(allowed=True, backend="redis")
_ALLOWED_IN_MEMORY = RateVerdict(allowed=True, backend="memory")


class RateLimiter(Protocol):
    async def hit(self, rule: RateRule, key: str) -> RateVerdict: ...


# The counter of a fixed window: added to, and given its TTL when this call created it.
_INCR_EXPIRE = """
local current = redis.call('INCRBY', KEYS[1], ARGV[2])
if current == tonumber(ARGV[2]) then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return current
"""
_CLEAR_PREFIX = """
local keys = redis.call('KEYS', ARGV[1])
for i = 1, #keys, 1000 do redis.call('DEL', unpack(keys, i, math.min(i + 999, #keys))) end
return #keys
"""


class BatchedRedisStorage(Storage):
    """A ``limits`` storage for the fixed window, on Redis through a ``CommandBatcher``."""

    STORAGE_SCHEME = None  # built directly, never from a URI

    def __init__(self, batcher: CommandBatcher, key_prefix: str = RATE_LIMIT_PREFIX) -> None:
        super().__init__()
        self._batcher = batcher
        self._prefix = key_prefix
        self._incr_expire = batcher.script(_INCR_EXPIRE)
        self._clear_prefix = batcher.script(_CLEAR_PREFIX)

    @property
    def base_exceptions(self) -> tuple[type[Exception], ...]:
        return (RedisError, OSError)

    async def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        return int(await self._incr_expire([f"{self._prefix}:{key}"], [expiry, amount]))

    async def get(self, key: str) -> int:
        return int(await self._batcher.call("GET", f"{self._prefix}:{key}") or 0)

    async def get_expiry(self, key: str) -> float:
        ttl_s = int(await self._batcher.call("TTL", f"{self._prefix}:{key}"))
        return max(ttl_s, 0) + time.time()

    async def check(self) -> bool:
        return bool(await self._batcher.call("PING"))

    async def reset(self) -> int | None:
        return int(await self._clear_prefix([], [f"{self._prefix}:*"]))

    async def clear(self, key: str) -> None:
        await self._batcher.call("DEL", f"{self._prefix}:{key}")


class RedisRateLimiter:
    def __init__(self, batcher: CommandBatcher) -> None:
        self._storage = BatchedRedisStorage(batcher)
        self._strategy = FixedWindowRateLimiter(self._storage)

    async def hit(self, rule: RateRule, key: str) -> RateVerdict:
        if await self._strategy.hit(rule.item, rule.name, key):
            return _ALLOWED_ON_REDIS
        # Only the window's end is needed: one TTL read, where ``get_window_stats`` would also
        # read the count (a refused request costs two round trips, not three).
        reset_time = await self._storage.get_expiry(rule.item.key_for(rule.name, key))
        retry_after_s = max(1.0, math.ceil(reset_time - time.time()))
        return RateVerdict(allowed=False, retry_after_s=retry_after_s, backend="redis")


class MemoryRateLimiter:
    def __init__(self, *, max_keys: int, clock: Clock) -> None:
        self._max_keys = max_keys
        self._clock = clock
        self._windows: dict[int, TtlLru[str, list[float]]] = {}

    def __len__(self) -> int:
        now_s = self._clock.now_s()
        return sum(counts.live_count(now_s) for counts in self._windows.values())

    async def hit(self, rule: RateRule, key: str) -> RateVerdict:
        return self.hit_now(rule, key)

    def hit_now(self, rule: RateRule, key: str) -> RateVerdict:
        window_s = rule.window_s
        counts = self._windows.get(window_s)
        if counts is None:
            counts = TtlLru(max_keys=self._max_keys, ttl_s=window_s)
            self._windows[window_s] = counts
        now_s = self._clock.now_s()
        slot = f"{rule.name}/{rule.amount}/{key}"
        entry = counts.get(slot, now_s)  # [count, window start]; mutated in place so its TTL holds
        if entry is None or entry[1] + window_s <= now_s:
            entry = [0.0, now_s]
            counts.set(slot, entry, now_s)
        if entry[0] >= rule.amount:
            retry_after_s = max(1.0, math.ceil(entry[1] + window_s - now_s))
            return RateVerdict(allowed=False, retry_after_s=retry_after_s, backend="memory")
        entry[0] += 1
        return _ALLOWED_IN_MEMORY


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
