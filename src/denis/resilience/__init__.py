"""Resilience core, used by every zone.

Owns: the circuit breaker, the request deadline, the ``X-Denis-Hop`` guard, the clock, the
signal names and the metrics registry, structured logging and the health board behind
``/status``, and opening the SQLite files processes share (``prepare_sqlite``). Depends on
nothing else in Denis (only ``denis.errors``).
Emits: breaker transitions (``breaker.opened`` / ``breaker.half_opened`` / ``breaker.closed``)
and whatever signal its callers name; it never decides a zone's mode itself.
"""

from denis.resilience.breaker import BreakerState, BreakerTransition, CircuitBreaker, Permit
from denis.resilience.clock import Clock, ManualClock, MonotonicClock
from denis.resilience.deadline import Deadline
from denis.resilience.health import HealthBoard, ZoneStatus
from denis.resilience.hops import HOP_HEADER, MAX_HOPS, check_hops, next_hop, parse_hop_header
from denis.resilience.signals import Signal, Signals
from denis.resilience.sqlite import prepare_sqlite, transaction

__all__ = [
    "HOP_HEADER",
    "MAX_HOPS",
    "BreakerState",
    "BreakerTransition",
    "CircuitBreaker",
    "Clock",
    "Deadline",
    "HealthBoard",
    "ManualClock",
    "MonotonicClock",
    "Permit",
    "Signal",
    "Signals",
    "ZoneStatus",
    "check_hops",
    "next_hop",
    "parse_hop_header",
    "prepare_sqlite",
    "transaction",
]
