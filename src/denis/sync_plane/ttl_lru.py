"""A bounded map whose keys expire: the in-memory limiter's and budget's store.

The policy is ``cachetools.TTLCache``'s, which these stores used before: a key lives ``ttl_s``
from its last write; a write first drops every expired key, then, if the map is still full
and the key is new, the least recently used key (reads and writes both count as use). Reads
skip expired keys without reordering them. So memory stays bounded at ``max_keys`` keys
however many distinct keys arrive, and expired keys go at the next write.

Why not ``TTLCache`` itself: it keeps its orders in Python-level linked lists behind a timer
context manager, about 1.1 µs per read and 0.8 µs per write, and a chat turn makes six of
them. Here both orders are C-implemented ``OrderedDict`` objects, given the time by the caller:
about 0.2 µs per read and 0.4 µs per write (``benchmarks/RESULTS.md``, section 1).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

__all__ = ["TtlLru"]

K = TypeVar("K")
V = TypeVar("V")


class TtlLru(Generic[K, V]):
    __slots__ = ("_expiries", "_max_keys", "_ttl_s", "_values")

    def __init__(self, *, max_keys: int, ttl_s: float) -> None:
        if max_keys < 1 or ttl_s <= 0:
            raise ValueError("a TtlLru needs max_keys >= 1 and ttl_s > 0")
        self._max_keys = max_keys
        self._ttl_s = ttl_s
        self._values: OrderedDict[K, V] = OrderedDict()  # least recently used first
        self._expiries: OrderedDict[K, float] = OrderedDict()  # soonest to expire first

    def get(self, key: K, now_s: float) -> V | None:
        """The live value of ``key`` (marking it used), or ``None``."""
        value = self._values.get(key)
        if value is None or self._expiries[key] <= now_s:
            return None
        self._values.move_to_end(key)
        return value

    def set(self, key: K, value: V, now_s: float) -> None:
        self.expire(now_s)
        values = self._values
        if key not in values and len(values) >= self._max_keys:
            oldest, _ = values.popitem(last=False)
            del self._expiries[oldest]
        values[key] = value
        values.move_to_end(key)
        expiries = self._expiries
        expiries[key] = now_s + self._ttl_s
        expiries.move_to_end(key)

    def expire(self, now_s: float) -> None:
        """Forget every key whose time is up."""
        expiries = self._expiries
        while expiries:
            key, expires_s = next(iter(expiries.items()))
            if now_s < expires_s:
                return
            del expiries[key]
            del self._values[key]

    def live_count(self, now_s: float) -> int:
        self.expire(now_s)
        return len(self._values)
