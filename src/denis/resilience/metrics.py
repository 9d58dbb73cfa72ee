"""Prometheus metrics, on an injected registry (each test and each app gets its own)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from denis.resilience.signals import Signal

__all__ = ["Metrics"]

BREAKER_STATE_VALUE = {"closed": 0, "half_open": 1, "open": 2}


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.signal_total = Counter(
            "denis_signal", "Signals emitted, by name.", ["signal"], registry=self.registry
        )
        for signal in Signal:
            self.signal_total.labels(signal=signal.value)
        self.breaker_state = Gauge(
            "denis_breaker_state",
            "Circuit breaker state: 0 closed, 1 half open, 2 open.",
            ["breaker"],
            registry=self.registry,
        )
        self.breaker_transitions_total = Counter(
            "denis_breaker_transitions",
            "Circuit breaker transitions, by breaker and new state.",
            ["breaker", "state"],
            registry=self.registry,
        )
        self.zone_degraded = Gauge(
            "denis_zone_degraded",
            "1 while the zone runs in its degraded mode.",
            ["zone"],
            registry=self.registry,
        )
        self.chat_requests_total = Counter(
            "denis_chat_requests",
            "Chat turns answered, by outcome code ('ok' or an error code).",
            ["outcome"],
            registry=self.registry,
        )
        self.chat_latency_seconds = Histogram(
            "denis_chat_latency_seconds",
            "Time to answer a chat turn.",
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30),
        )
        self.queue_length = Gauge(
            "denis_queue_length", "Messages waiting, by queue.", ["queue"], registry=self.registry
        )
        self.queue_disk_percent = Gauge(
            "denis_queue_disk_percent",
            "How full the file queue's disk is, in percent.",
            registry=self.registry,
        )
        self.worker_up = Gauge(
            "denis_worker_up",
            "1 while a live worker consumes the queue.",
            ["queue"],
            registry=self.registry,
        )
        self.trace_buffer_level = Gauge(
            "denis_decisiontrace_buffer",
            "DecisionTraces waiting in memory for the graph writer (neo4j.write_queue).",
            registry=self.registry,
        )
        self.limiter_backend = Gauge(
            "denis_rate_limiter_on_redis",
            "1 while the rate limiter and budget store use Redis, 0 on the in-memory fallback.",
            registry=self.registry,
        )
        # Reported by the web app (POST /telemetry): what the person in front of it waited.
        self.client_rtt_seconds = Histogram(
            "denis_client_rtt_seconds",
            "WebSocket round trips measured by the web app.",
            registry=self.registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.voice_latency_seconds = Histogram(
            "denis_voice_latency_seconds",
            "Voice turns measured by the web app, end of speech to the reply heard.",
            registry=self.registry,
            buckets=(0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30),
        )
