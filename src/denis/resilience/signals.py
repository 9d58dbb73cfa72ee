"""Signal names (exactly the seed's) and the one object that emits them.

A signal is both a Prometheus count, ``denis_signal_total{signal="<name>"}``, and the event name
of one structured log line. Mode signals (``rate_limit.redis_down``, ``celery.broker_down``, ...)
are emitted once per state change by the component that owns the mode; event signals
(``gate.injection_blocked``, ``chat.timeout``, ...) once per occurrence, never with a traceback.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from denis.resilience.metrics import Metrics

__all__ = ["Signal", "Signals"]


class Signal(StrEnum):
    # Zone 1: sync plane
    RATE_LIMIT_REDIS_DOWN = "rate_limit.redis_down"
    GATE_BUDGET_EXCEEDED = "gate.budget_exceeded"
    GATE_INJECTION_BLOCKED = "gate.injection_blocked"
    CHAT_TIMEOUT = "chat.timeout"
    WS_DISCONNECT_RATE = "ws.disconnect_rate"
    # Zone 2: async plane
    CELERY_BROKER_DOWN = "celery.broker_down"
    CELERY_WORKER_DOWN = "celery.worker_down"
    CELERY_QUEUE_LEN = "celery.queue.len"
    CELERY_TASK_FAILED = "celery.task.failed"
    QUEUE_DISK_PERCENT = "queue.disk_percent"
    # Zone 3: graph
    NEO4J_CONNECT_ERROR = "neo4j.connect_error"
    NEO4J_QUERY_TIMEOUT = "neo4j.query_timeout"
    NEO4J_WRITE_QUEUE = "neo4j.write_queue"
    NEO4J_POOL_EXHAUSTED = "neo4j.pool_exhausted"
    DECISIONTRACE_DROPPED = "decisiontrace.dropped"
    # Zone 4: frontend
    WS_SERVER_DISCONNECT = "ws.server_disconnect"
    VOICE_LATENCY = "voice.latency"
    TELEMETRY_LATENCY = "telemetry.latency"
    WS_RECONNECT_STORM = "ws.reconnect_storm"
    # Beyond the seed: every breaker transition, and leaving a degraded mode.
    BREAKER_OPENED = "breaker.opened"
    BREAKER_HALF_OPENED = "breaker.half_opened"
    BREAKER_CLOSED = "breaker.closed"
    CELERY_DEAD_LETTER = "celery.dead_letter"
    RECOVERED = "dependency.recovered"


SEED_SIGNALS = tuple(Signal)[:19]


class Signals:
    """Counts a signal and writes its one log line."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._log = structlog.get_logger("denis.signals")

    @property
    def metrics(self) -> Metrics:
        return self._metrics

    def emit(self, signal: Signal, **fields: Any) -> None:
        self._metrics.signal_total.labels(signal=signal.value).inc()
        self._log.warning(signal.value, **fields)

    def count(self, signal: Signal) -> None:
        """Count a high-frequency event signal without a log line (e.g. each WS disconnect)."""
        self._metrics.signal_total.labels(signal=signal.value).inc()

    def note(self, signal: Signal, **fields: Any) -> None:
        """Log a state change that is not itself counted (e.g. leaving a degraded mode)."""
        self._log.info(signal.value, **fields)
