"""Rate limits: the rules, their verdicts, and the in-memory limiter.

- ``RateRule`` is a named ``limits`` item (``user: 30/minute``): ``limits`` parses it, names its
  window's key and gives the window's length. On Redis the window is counted by the turn's
  admission script (``redis_admission``), on ``limits``'s keys; ``AdmissionGate`` (``admission``)
  tries Redis and falls back to memory.
- ``MemoryRateLimiter`` is the per-process fallback. It is ours, not ``limits``'s
  ``MemoryStorage``, because that one keeps every key it has seen until its window ends and has
  no cap; ours is a ``TtlLru`` (``cachetools.TTLCache``'s policy, cheaper) per window length, so
  memory stays bounded however many users and addresses it sees (past ``max_keys`` the least
  recently used key is forgotten, which fails open for that key, never closed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Protocol

from limits import RateLimitItem, parse

from denis.resilience import Clock
from denis.sync_plane.ttl_lru import TtlLru

__all__ = ["MemoryRateLimiter", "RateLimiter", "RateRule", "RateVerdict"]

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


_ALLOWED_IN_MEMORY = RateVerdict(allowed=True, backend="memory")


class RateLimiter(Protocol):
    async def hit(self, rule: RateRule, key: str) -> RateVerdict: ...


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
