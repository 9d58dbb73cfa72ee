"""Signal names (exactly the seed's) and the one object that emits them.

A signal is both a Prometheus count, ``denis_signal_total{signal="<name>"}``, and the event name
of one structured log line. Mode signals (``rate_limit.redis_down``, ``celery.broker_down``, ...)
are emitted once per state change by the component that owns the mode; event signals
(``gate.injection_blocked``, ``chat.timeout``, ...) once per occurrence, never with a traceback.

``Signals`` also keeps the last ``RECENT_SIGNALS`` emissions in memory (``recent()``, shown by
``GET /status`` and pushed to the web app): a bounded deque, fed by ``emit`` and ``note`` (``count``
is the per-request path and stays a bare counter), with only scalar fields, short strings, and no
field whose name suggests a secret.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import deque
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from denis.resilience.metrics import Metrics

__all__ = ["RECENT_SIGNALS", "Signal", "Signals"]

RECENT_SIGNALS = 50
_FIELD_CHARS = 120
_LIST_ITEMS = 10
_SECRET_WORDS = ("token", "secret", "password", "key", "auth", "cookie")


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
        self._recent: deque[dict[str, Any]] = deque(maxlen=RECENT_SIGNALS)

    @property
    def metrics(self) -> Metrics:
        return self._metrics

    def emit(self, signal: Signal, **fields: Any) -> None:
        self._metrics.signal_total.labels(signal=signal.value).inc()
        self._log.warning(signal.value, **fields)
        self._remember(signal, fields)

    def recent(self) -> list[dict[str, Any]]:
        """The last emissions, oldest first: ``{"signal", "at" (ISO-8601 UTC), "fields"}``."""
        return list(self._recent)

    def count(self, signal: Signal) -> None:
        """Count a high-frequency event signal without a log line (e.g. each WS disconnect)."""
        self._metrics.signal_total.labels(signal=signal.value).inc()

    def note(self, signal: Signal, **fields: Any) -> None:
        """Log a state change that is not itself counted (e.g. leaving a degraded mode)."""
        self._log.info(signal.value, **fields)
        self._remember(signal, fields)

    def _remember(self, signal: Signal, fields: dict[str, Any]) -> None:
        at = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        self._recent.append({"signal": signal.value, "at": at, "fields": _safe_fields(fields)})


def _safe_fields(fields: dict[str, Any]) -> dict[str, Any]:
    safe: dict[str, Any] = {}
    for name, value in fields.items():
        if any(word in name.lower() for word in _SECRET_WORDS):
            continue
        if isinstance(value, list | tuple | set | frozenset):
            safe[name] = [_safe_scalar(item) for item in list(value)[:_LIST_ITEMS]]
        else:
            safe[name] = _safe_scalar(value)
    return safe


def _safe_scalar(value: object) -> str | int | float | bool | None:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return str(value)[:_FIELD_CHARS]
