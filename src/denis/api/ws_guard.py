"""Limits for ``WS /chat``: reconnections per client address, frames per connection.

``ReconnectGuard`` counts the WebSocket connections each client address opens in a fixed window
(``ws_reconnect_limit`` per ``ws_reconnect_window_s``); past the limit a connection is refused
with the seconds left in the window, and the first refusal of a window is flagged so the caller
emits ``ws.reconnect_storm`` once per storm (later refusals are only counted). Its memory is
bounded: at most ``MAX_CLIENTS`` addresses in a ``TtlLru`` (least recently seen ones go first),
each forgotten one window after its last connection. It keeps no state outside this process:
with several API processes, each limits what it sees.

``ConnectionCap`` counts the sockets each client address has open right now
(``ws_max_connections_per_client``); one more is refused (the caller closes it with 1013 and a
retry hint). An address is forgotten when its last socket closes, so its memory is bounded by
the open sockets.

``FrameBucket`` is a per-connection token bucket: ``ws_max_frames_per_s`` frames a second with
bursts of twice that. Both run on the app's clock, so tests drive them with a ``ManualClock``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from denis.resilience import Clock
from denis.sync_plane.ttl_lru import TtlLru

__all__ = ["MAX_CLIENTS", "ConnectionCap", "FrameBucket", "ReconnectGuard", "Refusal"]

MAX_CLIENTS = 10_000


@dataclass(slots=True)
class _Window:
    started_s: float
    connections: int
    refused: int


@dataclass(frozen=True, slots=True)
class Refusal:
    retry_after_s: int
    first: bool  # the first refusal of this client's window: a storm starts


class ReconnectGuard:
    def __init__(self, *, limit: int, window_s: float, clock: Clock) -> None:
        self._limit = limit
        self._window_s = window_s
        self._clock = clock
        self._windows: TtlLru[str, _Window] = TtlLru(max_keys=MAX_CLIENTS, ttl_s=window_s)

    def admit(self, client: str) -> Refusal | None:
        """Count one connection from ``client``: ``None`` to let it in, or a ``Refusal``."""
        now_s = self._clock.now_s()
        window = self._windows.get(client, now_s)
        if window is None or now_s - window.started_s >= self._window_s:
            window = _Window(started_s=now_s, connections=0, refused=0)
        window.connections += 1
        self._windows.set(client, window, now_s)
        if window.connections <= self._limit:
            return None
        window.refused += 1
        left_s = window.started_s + self._window_s - now_s
        return Refusal(retry_after_s=max(1, math.ceil(left_s)), first=window.refused == 1)

    def tracked(self) -> int:
        return self._windows.live_count(self._clock.now_s())


class ConnectionCap:
    def __init__(self, *, limit: int) -> None:
        self._limit = limit
        self._open: dict[str, int] = {}

    def acquire(self, client: str) -> bool:
        """Count one more open socket from ``client``; ``False`` (and not counted) if over."""
        count = self._open.get(client, 0)
        if count >= self._limit:
            return False
        self._open[client] = count + 1
        return True

    def release(self, client: str) -> None:
        count = self._open.get(client, 0) - 1
        if count > 0:
            self._open[client] = count
        else:
            self._open.pop(client, None)

    def open(self, client: str) -> int:
        return self._open.get(client, 0)

    def tracked(self) -> int:
        return len(self._open)


class FrameBucket:
    def __init__(self, *, per_s: float, clock: Clock) -> None:
        self._per_s = per_s
        self._capacity = max(1.0, 2 * per_s)
        self._tokens = self._capacity
        self._clock = clock
        self._at_s = clock.now_s()

    def take(self) -> int | None:
        """Spend one frame: ``None`` if allowed, else whole seconds until one is."""
        now_s = self._clock.now_s()
        self._tokens = min(self._capacity, self._tokens + (now_s - self._at_s) * self._per_s)
        self._at_s = now_s
        if self._tokens >= 1:
            self._tokens -= 1
            return None
        return max(1, math.ceil((1 - self._tokens) / self._per_s))
