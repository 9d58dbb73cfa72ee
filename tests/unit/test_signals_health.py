"""Signal names, the metrics registry, and the health board behind ``/status``."""

from __future__ import annotations

import datetime as dt

import pytest
from prometheus_client import CollectorRegistry

from denis.resilience import (
    CircuitBreaker,
    HealthBoard,
    ManualClock,
    Signal,
    Signals,
    ZoneStatus,
)
from denis.resilience.metrics import Metrics
from denis.resilience.signals import RECENT_SIGNALS, SEED_SIGNALS

# The 19 signals of the seed (shared/seed/000_7e20a4e11984624f.txt), in its order.
SEED_NAMES = [
    "rate_limit.redis_down",
    "gate.budget_exceeded",
    "gate.injection_blocked",
    "chat.timeout",
    "ws.disconnect_rate",
    "celery.broker_down",
    "celery.worker_down",
    "celery.queue.len",
    "celery.task.failed",
    "queue.disk_percent",
    "neo4j.connect_error",
    "neo4j.query_timeout",
    "neo4j.write_queue",
    "neo4j.pool_exhausted",
    "decisiontrace.dropped",
    "ws.server_disconnect",
    "voice.latency",
    "telemetry.latency",
    "ws.reconnect_storm",
]


def signal_count(registry: CollectorRegistry, name: str) -> float | None:
    return registry.get_sample_value("denis_signal_total", {"signal": name})


def breaker_gauge(registry: CollectorRegistry, name: str) -> float | None:
    return registry.get_sample_value("denis_breaker_state", {"breaker": name})


def transitions(registry: CollectorRegistry, name: str, state: str) -> float | None:
    return registry.get_sample_value(
        "denis_breaker_transitions_total", {"breaker": name, "state": state}
    )


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


@pytest.fixture
def signals(metrics: Metrics) -> Signals:
    return Signals(metrics)


# -- names -------------------------------------------------------------------------------


def test_the_seed_signals_come_first_in_the_seed_order() -> None:
    assert len(SEED_NAMES) == 19
    assert [signal.value for signal in Signal][:19] == SEED_NAMES
    assert [signal.value for signal in SEED_SIGNALS] == SEED_NAMES


def test_signal_names_are_unique_and_namespaced() -> None:
    names = [signal.value for signal in Signal]
    assert len(names) == len(set(names))
    assert all("." in name and name == name.lower() for name in names)
    beyond = names[19:]
    assert {"breaker.opened", "breaker.half_opened", "breaker.closed"} <= set(beyond)


# -- metrics -----------------------------------------------------------------------------


def test_every_signal_is_exported_at_zero_before_anything_happens(metrics: Metrics) -> None:
    for signal in Signal:
        assert signal_count(metrics.registry, signal.value) == 0.0, signal


def test_emit_and_count_add_one_note_does_not(signals: Signals, metrics: Metrics) -> None:
    signals.emit(Signal.GATE_BUDGET_EXCEEDED, used=10, limit=5)
    signals.count(Signal.WS_DISCONNECT_RATE)
    signals.count(Signal.WS_DISCONNECT_RATE)
    signals.note(Signal.RECOVERED, dependency="redis")
    assert signal_count(metrics.registry, "gate.budget_exceeded") == 1.0
    assert signal_count(metrics.registry, "ws.disconnect_rate") == 2.0
    assert signal_count(metrics.registry, "dependency.recovered") == 0.0
    untouched = set(Signal) - {Signal.GATE_BUDGET_EXCEEDED, Signal.WS_DISCONNECT_RATE}
    assert all(signal_count(metrics.registry, s.value) == 0.0 for s in untouched)


def test_each_metrics_object_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    Signals(first).emit(Signal.CHAT_TIMEOUT)
    assert signal_count(first.registry, "chat.timeout") == 1.0
    assert signal_count(second.registry, "chat.timeout") == 0.0


# -- health board: breaker transitions ------------------------------------------------------


def test_breaker_transitions_become_signals_and_the_state_gauge(
    signals: Signals, metrics: Metrics
) -> None:
    registry = metrics.registry
    clock = ManualClock()
    board = HealthBoard(signals)
    breaker = board.add_breaker(
        CircuitBreaker("redis", failure_threshold=2, cooldown_s=5.0, clock=clock)
    )
    assert breaker_gauge(registry, "redis") == 0.0

    breaker.record_failure(breaker.acquire())
    assert breaker_gauge(registry, "redis") == 0.0
    assert signal_count(registry, "breaker.opened") == 0.0
    breaker.record_failure(breaker.acquire())
    assert breaker_gauge(registry, "redis") == 2.0
    assert signal_count(registry, "breaker.opened") == 1.0
    assert transitions(registry, "redis", "open") == 1.0

    breaker.try_acquire()  # still cooling: no transition, no signal
    clock.advance(5.0)
    probe = breaker.acquire()
    assert breaker_gauge(registry, "redis") == 1.0
    assert signal_count(registry, "breaker.half_opened") == 1.0
    breaker.try_acquire()  # refused while the probe is out: no signal
    breaker.record_failure(probe)
    assert breaker_gauge(registry, "redis") == 2.0
    assert signal_count(registry, "breaker.opened") == 2.0

    clock.advance(5.0)
    breaker.record_success(breaker.acquire())
    assert breaker_gauge(registry, "redis") == 0.0
    assert signal_count(registry, "breaker.half_opened") == 2.0
    assert signal_count(registry, "breaker.closed") == 1.0
    assert transitions(registry, "redis", "open") == 2.0
    assert transitions(registry, "redis", "half_open") == 2.0
    assert transitions(registry, "redis", "closed") == 1.0
    for name in SEED_NAMES:
        assert signal_count(registry, name) == 0.0, "a breaker emits only breaker.* signals"


def test_each_breaker_has_its_own_gauge(signals: Signals, metrics: Metrics) -> None:
    board = HealthBoard(signals)
    bad = board.add_breaker(CircuitBreaker("redis", failure_threshold=1, clock=ManualClock()))
    board.add_breaker(CircuitBreaker("responder", failure_threshold=1, clock=ManualClock()))
    bad.record_failure(bad.acquire())
    assert breaker_gauge(metrics.registry, "redis") == 2.0
    assert breaker_gauge(metrics.registry, "responder") == 0.0
    assert board.snapshot()["breakers"] == {"redis": "open", "responder": "closed"}


# -- health board: /status ---------------------------------------------------------------


def test_snapshot_has_the_status_shape_from_design(signals: Signals, metrics: Metrics) -> None:
    board = HealthBoard(signals)
    clock = ManualClock()
    breaker = board.add_breaker(
        CircuitBreaker("redis", failure_threshold=1, cooldown_s=5.0, clock=clock)
    )
    sync_mode = ["normal"]
    board.add_zone("sync", lambda: ZoneStatus(sync_mode[0]))
    board.add_zone("async", lambda: ZoneStatus("fail_open", {"pending": 3}))
    board.add_zone("graph", lambda: ZoneStatus("legacy"))
    board.add_queue("tts", lambda: 7)

    snapshot = board.snapshot()
    assert set(snapshot) == {"zones", "breakers", "queues", "signals"}
    assert snapshot["signals"] == []
    assert snapshot["zones"] == {
        "sync": {"mode": "normal"},
        "async": {"mode": "fail_open", "pending": 3},
        "graph": {"mode": "legacy"},
    }
    assert snapshot["breakers"] == {"redis": "closed"}
    assert snapshot["queues"] == {"tts": 7}

    degraded = "denis_zone_degraded"
    assert metrics.registry.get_sample_value(degraded, {"zone": "sync"}) == 0.0
    assert metrics.registry.get_sample_value(degraded, {"zone": "async"}) == 1.0
    assert metrics.registry.get_sample_value(degraded, {"zone": "graph"}) == 1.0

    # the snapshot reads live state each time
    sync_mode[0] = "fallback"
    breaker.record_failure(breaker.acquire())
    snapshot = board.snapshot()
    assert snapshot["zones"]["sync"] == {"mode": "fallback"}
    assert snapshot["breakers"] == {"redis": "open"}
    assert board.modes() == (
        ("sync", "fallback"),
        ("async", "fail_open"),
        ("graph", "legacy"),
        ("redis", "open"),
    )
    [opened] = snapshot["signals"]
    assert opened["signal"] == "breaker.opened"
    assert opened["fields"] == {"breaker": "redis", "previous": "closed"}
    at = dt.datetime.fromisoformat(opened["at"])
    assert at.tzinfo is not None
    assert at.utcoffset() == dt.timedelta(0)
    assert opened["at"].endswith("Z")
    assert metrics.registry.get_sample_value(degraded, {"zone": "sync"}) == 1.0
    clock.advance(5.0)
    assert board.snapshot()["breakers"] == {"redis": "half_open"}


def test_zone_status_degraded_means_anything_but_normal() -> None:
    assert not ZoneStatus("normal").degraded
    for mode in ("fallback", "fail_open", "legacy"):
        assert ZoneStatus(mode).degraded


# -- recent signals: the last emissions, for /status and the web app -------------------------


def test_recent_keeps_the_last_emissions_and_notes_but_not_counts(signals: Signals) -> None:
    signals.count(Signal.WS_DISCONNECT_RATE)  # per-request counts stay out of the buffer
    assert signals.recent() == []
    for level in range(RECENT_SIGNALS + 5):
        signals.emit(Signal.NEO4J_WRITE_QUEUE, level=level)
    signals.note(Signal.RECOVERED, dependency="redis")
    recent = signals.recent()
    assert len(recent) == RECENT_SIGNALS
    assert recent[0]["fields"] == {"level": 6}  # the oldest ones were dropped
    assert recent[-2]["fields"] == {"level": RECENT_SIGNALS + 4}
    assert recent[-1] == {**recent[-1], "signal": "dependency.recovered"}
    assert recent[-1]["fields"] == {"dependency": "redis"}


def test_recent_fields_are_short_scalars_without_secrets(signals: Signals) -> None:
    signals.emit(
        Signal.CELERY_BROKER_DOWN,
        error="x" * 1000,
        queues=("tools_ro", "tools_mut"),
        api_key="sk-123",
        token="denis_abc",
        Password="hunter2",
        budget_s=1.5,
        nan=float("nan"),
        obj=object(),
        flag=True,
        none=None,
    )
    [entry] = signals.recent()
    fields = entry["fields"]
    assert set(fields) == {"error", "queues", "budget_s", "nan", "obj", "flag", "none"}
    assert len(fields["error"]) < 200
    assert fields["queues"] == ["tools_ro", "tools_mut"]
    assert (fields["budget_s"], fields["nan"], fields["flag"], fields["none"]) == (
        1.5,
        None,
        True,
        None,
    )
    assert isinstance(fields["obj"], str)
    assert "sk-123" not in repr(signals.recent())
    assert "hunter2" not in repr(signals.recent())
