"""The health board behind ``GET /status``: each zone's mode, every breaker's state, each
queue's length and the last signals emitted (``Signals.recent``).

Zones register a status function and their breakers in ``app.py``; the board only reads them.
It also turns breaker transitions into the ``breaker.*`` signals and the state gauge.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from denis.resilience.breaker import BreakerState, BreakerTransition, CircuitBreaker
from denis.resilience.metrics import BREAKER_STATE_VALUE
from denis.resilience.signals import Signal, Signals

__all__ = ["HealthBoard", "ZoneStatus"]

_TRANSITION_SIGNAL = {
    BreakerState.OPEN: Signal.BREAKER_OPENED,
    BreakerState.HALF_OPEN: Signal.BREAKER_HALF_OPENED,
    BreakerState.CLOSED: Signal.BREAKER_CLOSED,
}


@dataclass(frozen=True, slots=True)
class ZoneStatus:
    mode: str  # "normal" or the zone's degraded mode ("fallback", "fail_open", "legacy")
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def degraded(self) -> bool:
        return self.mode != "normal"


class HealthBoard:
    def __init__(self, signals: Signals) -> None:
        self._signals = signals
        self._breakers: dict[str, CircuitBreaker] = {}
        self._zones: dict[str, Callable[[], ZoneStatus]] = {}
        self._queues: dict[str, Callable[[], int]] = {}

    def add_breaker(self, breaker: CircuitBreaker) -> CircuitBreaker:
        self._breakers[breaker.name] = breaker
        breaker.add_listener(self._on_transition)
        self._signals.metrics.breaker_state.labels(breaker=breaker.name).set(0)
        return breaker

    def add_zone(self, name: str, status: Callable[[], ZoneStatus]) -> None:
        self._zones[name] = status

    def add_queue(self, name: str, length: Callable[[], int]) -> None:
        self._queues[name] = length

    def zones(self) -> dict[str, ZoneStatus]:
        return {name: status() for name, status in self._zones.items()}

    def modes(self) -> tuple[tuple[str, str], ...]:
        """Each zone's mode and each breaker's state, cheaply: what a push on change compares."""
        zones = tuple((name, status().mode) for name, status in self._zones.items())
        return zones + tuple((name, b.state.value) for name, b in self._breakers.items())

    def snapshot(self) -> dict[str, Any]:
        zones = self.zones()
        for name, zone in zones.items():
            self._signals.metrics.zone_degraded.labels(zone=name).set(int(zone.degraded))
        return {
            "zones": {name: {"mode": z.mode, **z.details} for name, z in zones.items()},
            "breakers": {name: b.state.value for name, b in self._breakers.items()},
            "queues": {name: length() for name, length in self._queues.items()},
            "signals": self._signals.recent(),
        }

    def _on_transition(self, event: BreakerTransition) -> None:
        metrics = self._signals.metrics
        metrics.breaker_state.labels(breaker=event.breaker).set(BREAKER_STATE_VALUE[event.new])
        metrics.breaker_transitions_total.labels(breaker=event.breaker, state=event.new).inc()
        self._signals.emit(
            _TRANSITION_SIGNAL[event.new], breaker=event.breaker, previous=event.old.value
        )
