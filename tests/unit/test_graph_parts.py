"""The graph zone's parts on their own, on a fake clock and without sockets: home files, the
legacy cache, the resolver's breaker and legacy mode, and the DecisionTrace recorder.

The graph behind the resolver is the real embedded store (LadybugDB, in memory) behind a switch
(``SwitchableStore``) that makes every call raise ``GraphError`` while it is "down": the failure
the resolver exists to contain. That is the resolver's unit under test; that real outages
(a killed or hung Neo4j) produce exactly such errors is proven by the contract, integration and
chaos suites. The recorder runs on the same resolver, so "graph down" means what it means in
production: failed writes count towards the breaker, and an open breaker skips the graph.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from denis.cli import app as cli_app
from denis.errors import InvalidInputError
from denis.graph import (
    GRAPH_ZONE,
    Area,
    DecisionTrace,
    Device,
    GraphError,
    GraphResolver,
    HomeGraph,
    Policy,
    PolicyDecision,
    Resolved,
    Route,
    default_home,
    parse_home,
    read_home_file,
)
from denis.graph.cache import LegacyCache, decide
from denis.graph.embedded_store import EmbeddedGraphStore, _encode_traces
from denis.graph.traces import TraceRecorder
from denis.resilience import CircuitBreaker, Deadline, HealthBoard, ManualClock, Signal, Signals
from denis.resilience.metrics import Metrics

LONG_S = 30.0  # a real-time limit for the embedded engine that a loaded machine never reaches

# What the graph holds, and an older home the cache holds: every answer shows where it came from.
GRAPH_HOME = HomeGraph(
    routes=(
        Route("HassTurnOn", "device.turn_on", "tools_mut"),
        Route("HassLockUnlock", "lock.unlock", "tools_mut"),
        Route("HassGetState", "device.get_state", "tools_ro"),
    ),
    policies=(
        Policy("unlock-confirm", "lock.unlock", ("*",), confirm=True),
        Policy("only-alice-reads", "device.get_state", ("alice",)),
    ),
    areas=(Area("kitchen", "Kitchen", ("cocina",)),),
    devices=(Device("light.kitchen", "Kitchen light", "kitchen", "light", ("luz de la cocina",)),),
).sorted()
CACHED_HOME = HomeGraph(
    routes=(Route("HassTurnOn", "cached.turn_on", "tools_mut"),),
    policies=(Policy("cached-nobody", "lock.unlock", ("bob",)),),
    areas=(Area("living_room", "Living room", ("salón",)),),
    devices=(
        Device("light.salon", "Living room lights", "living_room", "light", ("luces del salón",)),
        Device("sensor.outside", "Outside temperature", None, "sensor"),
    ),
).sorted()
FROM_GRAPH = Route("HassTurnOn", "device.turn_on", "tools_mut")
FROM_CACHE = Route("HassTurnOn", "cached.turn_on", "tools_mut")


def allowed(policy: str | None = None, *, confirm: bool = False) -> PolicyDecision:
    return PolicyDecision(allowed=True, confirm=confirm, policy=policy)


def denied(policy: str) -> PolicyDecision:
    return PolicyDecision(allowed=False, confirm=False, policy=policy)


def trace(n: int, **changes: Any) -> DecisionTrace:
    fields: dict[str, Any] = {
        "trace_id": f"trace-{n:03d}",
        "at": "2025-03-01T12:00:00+00:00",
        "user": "alice",
        "text": f"enciende la luz de la cocina ({n})",
        "intent": "HassTurnOn",
        "tool": "device.turn_on",
        "outcome": "ok",
        "duration_ms": 1.25,
        "modes": ("graph.legacy",),
    }
    return DecisionTrace(**{**fields, **changes})


def ids(numbers: range) -> list[str]:
    return [f"trace-{n:03d}" for n in numbers]


class SwitchableStore:
    """A real ``GraphStore`` behind a switch: while ``down``, every call raises ``GraphError``
    with ``signal`` before reaching it. Counts the calls that came and the timeout each had."""

    def __init__(self, inner: EmbeddedGraphStore) -> None:
        self.inner = inner
        self.down = False
        self.signal: Signal | None = Signal.NEO4J_CONNECT_ERROR
        self.calls = 0
        self.timeouts: list[float] = []
        self.fail_writes_after: int | None = None  # trace batches written before going down

    def _enter(self, timeout_s: float) -> None:
        self.calls += 1
        self.timeouts.append(timeout_s)
        if self.down:
            raise GraphError("the graph is down (test switch)", self.signal)

    async def ping(self, timeout_s: float) -> None:
        self._enter(timeout_s)
        await self.inner.ping(timeout_s)

    async def load(self, home: HomeGraph, timeout_s: float) -> None:
        self._enter(timeout_s)
        await self.inner.load(home, timeout_s)

    async def snapshot(self, timeout_s: float) -> HomeGraph:
        self._enter(timeout_s)
        return await self.inner.snapshot(timeout_s)

    async def route(self, intent: str, timeout_s: float) -> Route | None:
        self._enter(timeout_s)
        return await self.inner.route(intent, timeout_s)

    async def policies(self, tool: str, timeout_s: float) -> list[Policy]:
        self._enter(timeout_s)
        return await self.inner.policies(tool, timeout_s)

    async def write_traces(self, traces: list[DecisionTrace], timeout_s: float) -> None:
        if self.fail_writes_after is not None:
            if self.fail_writes_after == 0:
                self.down = True
            self.fail_writes_after -= 1
        self._enter(timeout_s)
        await self.inner.write_traces(traces, timeout_s)

    async def count_traces(self, timeout_s: float) -> int:
        self._enter(timeout_s)
        return await self.inner.count_traces(timeout_s)

    async def close(self) -> None:
        await self.inner.close()


@dataclass
class Rig:
    """A resolver (breaker 5 failures / 30 s, on a ManualClock) over a switchable real store,
    with a legacy cache in ``data/`` that holds ``CACHED_HOME``."""

    inner: EmbeddedGraphStore
    store: SwitchableStore
    resolver: GraphResolver
    signals: Signals
    clock: ManualClock
    data_dir: Path

    @property
    def cache_path(self) -> Path:
        return self.data_dir / "graph-cache.json"

    @property
    def spill_path(self) -> Path:
        return self.data_dir / "decisiontrace.jsonl"

    @property
    def replay_path(self) -> Path:
        return self.data_dir / "decisiontrace.replaying"

    def deadline(self, budget_s: float = 10.0) -> Deadline:
        return Deadline.start(self.clock, budget_s)

    def count(self, signal: Signal) -> float | None:
        return self.signals.metrics.registry.get_sample_value(
            "denis_signal_total", {"signal": signal.value}
        )

    def buffer_gauge(self) -> float | None:
        return self.signals.metrics.registry.get_sample_value("denis_decisiontrace_buffer")

    def recorder(
        self, *, capacity: int = 100, batch_size: int = 10, spill_path: Path | None = None
    ) -> TraceRecorder:
        return TraceRecorder(
            resolver=self.resolver,
            signals=self.signals,
            clock=self.clock,
            spill_path=spill_path or self.spill_path,
            capacity=capacity,
            batch_size=batch_size,
            flush_s=0.5,
            write_timeout_s=LONG_S,
        )

    async def stored_ids(self) -> list[str]:
        rows = await self.inner._read("MATCH (x:DecisionTrace) RETURN x.trace_id", {}, LONG_S)
        return sorted(row[0] for row in rows)

    def spilled(self, path: Path | None = None) -> list[str]:
        path = path or self.spill_path
        if not path.exists():
            return []
        return [json.loads(line)["trace_id"] for line in path.read_text("utf-8").splitlines()]

    def log_files(self) -> list[str]:
        return sorted(p.name for p in self.data_dir.glob("decisiontrace.*"))

    async def open_breaker(self) -> None:
        self.store.down = True
        for _ in range(self.resolver.breaker.failure_threshold):
            await self.resolver.route("HassTurnOn", self.deadline())
        assert self.resolver.breaker.state == "open"

    async def close_breaker(self) -> None:
        """The graph is back: after the cool-down, a refresh (as the refresher does) probes."""
        self.store.down = False
        self.clock.advance(30.0)
        assert await self.resolver.refresh(self.deadline())
        assert self.resolver.breaker.state == "closed"


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    inner = await EmbeddedGraphStore(Path(":memory:")).open()
    try:
        await inner.load(GRAPH_HOME, LONG_S)
        data_dir = tmp_path / "data"
        cache = LegacyCache(data_dir / "graph-cache.json")
        cache.remember(CACHED_HOME)
        clock = ManualClock()
        signals = Signals(Metrics(CollectorRegistry()))
        breaker = HealthBoard(signals).add_breaker(
            CircuitBreaker(GRAPH_ZONE, failure_threshold=5, cooldown_s=30.0, clock=clock)
        )
        store = SwitchableStore(inner)
        resolver = GraphResolver(
            store=store,
            cache=cache,
            breaker=breaker,
            signals=signals,
            query_timeout_s=LONG_S,
            backend="embedded",
            clock=clock,
        )
        yield Rig(inner, store, resolver, signals, clock, data_dir)
    finally:
        await inner.close()


@pytest.fixture
def cache_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "graph-cache.json"


# -- home files ------------------------------------------------------------------------------


def test_the_default_home_parses_into_a_consistent_graph() -> None:
    home = default_home()
    assert home == home.sorted()
    assert len(home.routes) == 15
    by_intent = {r.intent: r.tool for r in home.routes}
    assert by_intent["HassTurnOff:lock"] == "lock.unlock", "unlocking is its own tool"
    assert {r.queue for r in home.routes} <= {"tools_ro", "tools_mut"}
    intents = [r.intent for r in home.routes]
    assert len(set(intents)) == len(intents), "one route per intent"
    assert FROM_GRAPH in home.routes
    unlock = next(p for p in home.policies if p.tool == "lock.unlock")
    assert (unlock.users, unlock.confirm) == (("*",), True)
    areas = {a.id for a in home.areas}
    assert all(d.area in areas for d in home.devices)
    kitchen_light = next(d for d in home.devices if d.id == "light.kitchen")
    assert "luz de la cocina" in kitchen_light.aliases
    assert "salón" in next(a for a in home.areas if a.id == "living_room").aliases


def test_a_home_file_parses_with_defaults_and_unicode(tmp_path: Path) -> None:
    path = tmp_path / "home.yaml"
    path.write_text(
        "areas:\n  - {id: salon, name: Salón, aliases: [sala de estar]}\n"
        "devices:\n"
        "  - {id: light.salon, name: Lámpara, area: salon, domain: light}\n"
        "  - {id: sensor.outside, name: Outside, domain: sensor}\n"
        "routes:\n  - {intent: HassTurnOn, tool: device.turn_on, queue: tools_mut}\n"
        "policies:\n  - {name: anyone, tool: device.turn_on}\n",
        encoding="utf-8",
    )
    assert read_home_file(path) == HomeGraph(
        routes=(FROM_GRAPH,),
        policies=(Policy("anyone", "device.turn_on", ("*",), confirm=False),),
        areas=(Area("salon", "Salón", ("sala de estar",)),),
        devices=(
            Device("light.salon", "Lámpara", "salon", "light"),
            Device("sensor.outside", "Outside", None, "sensor"),
        ),
    )
    assert parse_home("") == HomeGraph(), "an empty file is an empty home"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("areas: [unclosed", "not valid YAML"),
        ("areas: [{id: a, name: A, colour: red}]", "invalid field(s): areas.0.colour"),
        ("rooms: []", "invalid field(s): rooms"),
        ("routes: [{intent: X, tool: t, queue: nope}]", "invalid field(s): routes.0.queue"),
        ("routes: [{intent: X, queue: tools_ro}]", "invalid field(s): routes.0.tool"),
        ("policies: [{name: p, tool: t, users: []}]", "invalid field(s): policies.0.users"),
        ("devices: [{id: d, name: D, area: attic, domain: light}]", "unknown areas: attic"),
        ("- just\n- a list\n", "invalid field(s): (top level)"),
    ],
)
def test_an_invalid_home_file_is_refused_with_a_clear_message(text: str, expected: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_home(text)
    assert expected in caught.value.detail
    assert caught.value.code == "invalid_input"


def test_a_missing_home_file_is_invalid_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="cannot read"):
        read_home_file(tmp_path / "nope.yaml")


def test_graph_load_of_an_invalid_file_loads_nothing(tmp_path: Path) -> None:
    """`denis graph load` validates the whole file before opening the graph at all."""
    data_dir = tmp_path / "data"
    bad = tmp_path / "home.yaml"
    bad.write_text(
        "routes: [{intent: HassTurnOn, tool: device.turn_on, queue: tools_mut}]\n"
        "devices: [{id: light.attic, name: Attic light, area: attic, domain: light}]\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(
        cli_app,
        ["graph", "load", str(bad)],
        env={"DENIS_DATA_DIR": str(data_dir), "DENIS_GRAPH_URL": ""},
    )
    assert result.exit_code == 2
    assert "unknown areas: attic" in result.stderr
    assert result.stdout == ""
    # Neither the embedded graph nor the cache was created: nothing was loaded anywhere.
    assert not (data_dir / "graph").exists()
    assert not (data_dir / "graph-cache.json").exists()


# -- the legacy cache ------------------------------------------------------------------------


def test_the_cache_persists_and_reads_back_from_disk(cache_path: Path) -> None:
    home = default_home()
    LegacyCache(cache_path).remember(home)
    assert not cache_path.with_suffix(".tmp").exists(), "written by temp file and rename"
    restarted = LegacyCache(cache_path)
    assert restarted.home == HomeGraph()
    assert restarted.read_disk()
    assert restarted.home == home
    # The device index is rebuilt from disk too.
    assert restarted.device("luz de la cocina") == next(
        d for d in home.devices if d.id == "light.kitchen"
    )
    assert restarted.route("HassTurnOff:lock") == Route(
        "HassTurnOff:lock", "lock.unlock", "tools_mut"
    )


def test_remember_without_persist_leaves_the_disk_alone(cache_path: Path) -> None:
    cache = LegacyCache(cache_path)
    cache.remember(CACHED_HOME, persist=False)
    assert cache.home == CACHED_HOME
    assert not cache_path.exists()


@pytest.mark.parametrize("content", [None, "", "{not json", "[1, 2]x"])
def test_a_missing_or_corrupt_cache_file_reads_as_nothing(
    cache_path: Path, content: str | None
) -> None:
    if content is not None:
        cache_path.parent.mkdir(parents=True)
        cache_path.write_text(content, encoding="utf-8")
    cache = LegacyCache(cache_path)
    assert not cache.read_disk()
    assert cache.home == HomeGraph()
    assert cache.route("HassTurnOn") is None


@pytest.mark.parametrize(
    ("name", "device_id"),
    [
        ("light.kitchen", "light.kitchen"),
        ("LIGHT.KITCHEN", "light.kitchen"),
        ("kitchen light", "light.kitchen"),
        ("Luz de la Cocina", "light.kitchen"),
        ("luces del salón", "light.living_room"),
        ("LUCES DEL SALÓN", "light.living_room"),
        ("Salón Lights", "light.living_room"),
        ("puerta principal", "lock.front_door"),
        ("the moon", None),
        ("luces del salon", None),  # accents are part of the name; only case is folded
    ],
)
def test_devices_resolve_by_id_name_or_alias_ignoring_case(
    cache_path: Path, name: str, device_id: str | None
) -> None:
    cache = LegacyCache(cache_path)
    cache.remember(default_home(), persist=False)
    found = cache.device(name)
    assert (found.id if found else None) == device_id


@pytest.mark.parametrize(
    ("policies", "expected"),
    [
        ([], allowed()),
        ([Policy("p", "t", ("bob",))], denied("p")),
        ([Policy("p", "t", ("bob", "alice"))], allowed("p")),
        ([Policy("p", "t", ("*",), confirm=True)], allowed("p", confirm=True)),
        (
            [Policy("named", "t", ("alice",)), Policy("all-confirm", "t", ("*",), confirm=True)],
            allowed("all-confirm", confirm=True),
        ),
        (
            [Policy("bob-confirms", "t", ("bob",), confirm=True), Policy("alice", "t", ("alice",))],
            allowed("alice"),
        ),
    ],
)
def test_decide_combines_the_policies_of_a_tool(
    policies: list[object], expected: PolicyDecision
) -> None:
    assert decide(policies, "alice") == expected


def test_the_cache_decides_per_tool(cache_path: Path) -> None:
    cache = LegacyCache(cache_path)
    cache.remember(GRAPH_HOME, persist=False)
    assert cache.decide("lock.unlock", "anyone") == allowed("unlock-confirm", confirm=True)
    assert cache.decide("device.get_state", "bob") == denied("only-alice-reads")
    assert cache.decide("device.turn_on", "bob") == allowed()


# -- the resolver: breaker and legacy mode ----------------------------------------------------


async def test_a_healthy_graph_answers_not_the_cache(rig: Rig) -> None:
    resolver = rig.resolver
    assert await resolver.route("HassTurnOn", rig.deadline()) == Resolved(FROM_GRAPH, legacy=False)
    assert (await resolver.route("HassNothing", rig.deadline())).value is None
    decision = await resolver.decide("lock.unlock", "bob", rig.deadline())
    assert decision == Resolved(allowed("unlock-confirm", confirm=True), legacy=False)
    assert rig.store.calls == 3
    assert resolver.status().mode == "normal"
    assert resolver.status().details == {"store": "embedded", "cached_routes": 1}


async def test_five_failures_open_the_breaker_and_the_cache_answers_without_the_graph(
    rig: Rig,
) -> None:
    resolver = rig.resolver
    rig.store.down = True
    cached = Resolved(FROM_CACHE, legacy=True)
    for _ in range(5):
        assert await resolver.route("HassTurnOn", rig.deadline()) == cached
    assert rig.store.calls == 5
    assert resolver.breaker.state == "open"
    assert rig.count(Signal.NEO4J_CONNECT_ERROR) == 5
    assert rig.count(Signal.BREAKER_OPENED) == 1
    assert resolver.legacy
    assert resolver.status().mode == "legacy"

    # Open: the graph is skipped altogether, every answer comes from the cache.
    for _ in range(20):
        assert await resolver.route("HassTurnOn", rig.deadline()) == cached
        decision = await resolver.decide("lock.unlock", "alice", rig.deadline())
        assert decision == Resolved(denied("cached-nobody"), legacy=True)
    device = resolver.device("luces del salón")
    assert device.legacy
    assert device.value is not None
    assert device.value.id == "light.salon"
    rig.clock.advance(29.9)
    assert (await resolver.route("HassTurnOn", rig.deadline())).legacy
    assert rig.store.calls == 5, "no graph call while the breaker is open"
    assert rig.count(Signal.NEO4J_CONNECT_ERROR) == 5

    # After the cool-down one probe goes through; the graph is back, so the breaker closes.
    rig.store.down = False
    rig.clock.advance(0.1)
    assert await resolver.route("HassTurnOn", rig.deadline()) == Resolved(FROM_GRAPH, legacy=False)
    assert rig.store.calls == 6
    assert resolver.breaker.state == "closed"
    assert not resolver.legacy
    assert resolver.status().mode == "normal"
    assert not resolver.device("luces del salón").legacy
    assert rig.count(Signal.BREAKER_HALF_OPENED) == 1
    assert rig.count(Signal.BREAKER_CLOSED) == 1


async def test_a_failed_probe_opens_the_breaker_for_another_cooldown(rig: Rig) -> None:
    resolver = rig.resolver
    await rig.open_breaker()
    rig.clock.advance(30.0)
    assert (await resolver.route("HassTurnOn", rig.deadline())).legacy
    assert rig.store.calls == 6, "the half-open probe"
    assert resolver.breaker.state == "open"
    rig.clock.advance(29.0)
    assert (await resolver.decide("lock.unlock", "alice", rig.deadline())).legacy
    assert rig.store.calls == 6
    rig.store.down = False
    rig.clock.advance(1.0)
    decision = await resolver.decide("lock.unlock", "alice", rig.deadline())
    assert decision == Resolved(allowed("unlock-confirm", confirm=True), legacy=False)
    assert rig.store.calls == 7
    assert resolver.breaker.state == "closed"


@pytest.mark.parametrize(
    "signal",
    [Signal.NEO4J_CONNECT_ERROR, Signal.NEO4J_QUERY_TIMEOUT, Signal.NEO4J_POOL_EXHAUSTED, None],
)
async def test_each_failure_counts_its_own_signal(rig: Rig, signal: Signal | None) -> None:
    rig.store.down, rig.store.signal = True, signal
    for _ in range(3):
        await rig.resolver.route("HassTurnOn", rig.deadline())
    named = (Signal.NEO4J_CONNECT_ERROR, Signal.NEO4J_QUERY_TIMEOUT, Signal.NEO4J_POOL_EXHAUSTED)
    assert {s: rig.count(s) for s in named} == {s: (3.0 if s == signal else 0.0) for s in named}
    # Whatever the signal, a failure is a failure for the breaker: two more open it.
    for _ in range(2):
        await rig.resolver.route("HassTurnOn", rig.deadline())
    assert rig.resolver.breaker.state == "open"


async def test_one_failure_means_legacy_until_the_next_success(rig: Rig) -> None:
    resolver = rig.resolver
    rig.store.down = True
    assert (await resolver.route("HassTurnOn", rig.deadline())).legacy
    assert resolver.breaker.state == "closed"
    assert resolver.legacy, "the last call failed: answers may be stale"
    assert resolver.status().mode == "legacy"
    assert resolver.device("kitchen light").legacy
    rig.store.down = False
    assert not (await resolver.route("HassTurnOn", rig.deadline())).legacy
    assert not resolver.legacy
    assert resolver.status().mode == "normal"


async def test_the_graph_gets_the_smaller_of_its_timeout_and_the_requests_time(rig: Rig) -> None:
    rig.store.down = True  # nothing real runs: only the timeouts handed down are looked at
    await rig.resolver.route("HassTurnOn", rig.deadline(60.0))
    await rig.resolver.route("HassTurnOn", rig.deadline(1.5))
    assert rig.store.timeouts == [LONG_S, 1.5]


async def test_a_request_out_of_time_never_touches_the_graph(rig: Rig) -> None:
    expired = rig.deadline(1.0)
    rig.clock.advance(1.0)
    assert await rig.resolver.route("HassTurnOn", expired) == Resolved(FROM_CACHE, legacy=True)
    assert rig.store.calls == 0
    # Not the graph's fault: no failure counted, so the mode stays normal.
    assert rig.resolver.breaker.state == "closed"
    assert rig.resolver.status().mode == "normal"


async def test_load_and_refresh_keep_the_persisted_cache_in_step(rig: Rig) -> None:
    resolver = rig.resolver
    assert await resolver.refresh(rig.deadline())
    assert resolver.cache.home == GRAPH_HOME
    assert resolver.status().details["cached_routes"] == 3

    new_home = default_home()
    assert await resolver.load(new_home, rig.deadline())
    assert await rig.inner.snapshot(LONG_S) == new_home
    assert resolver.cache.home == new_home
    on_disk = LegacyCache(rig.cache_path)
    assert on_disk.read_disk()
    assert on_disk.home == new_home

    rig.store.down = True
    assert not await resolver.load(GRAPH_HOME, rig.deadline())
    assert not await resolver.refresh(rig.deadline())
    assert resolver.cache.home == new_home, "a failed load or refresh keeps the last good home"
    assert await rig.inner.snapshot(LONG_S) == new_home
    assert on_disk.read_disk()
    assert on_disk.home == new_home


# -- DecisionTrace: the recorder ---------------------------------------------------------------


def test_record_is_synchronous_and_never_raises(rig: Rig) -> None:
    """Even with the buffer full and the spill log unwritable (a directory in its place)."""
    rig.spill_path.mkdir(parents=True)
    recorder = rig.recorder(capacity=3)
    assert not inspect.iscoroutinefunction(TraceRecorder.record)
    for n in range(10):
        assert recorder.record(trace(n)) is None
    assert len(recorder) == 3
    assert rig.store.calls == 0, "the request path does no graph I/O"
    assert rig.count(Signal.DECISIONTRACE_DROPPED) == 7


async def test_a_full_buffer_spills_to_the_log_and_signals_write_queue_once(rig: Rig) -> None:
    recorder = rig.recorder(capacity=4)
    for n in range(7):
        recorder.record(trace(n))
    assert len(recorder) == 4
    assert rig.spilled() == ids(range(4, 7))
    assert rig.count(Signal.NEO4J_WRITE_QUEUE) == 1, "once per fill, not per trace"
    assert rig.store.calls == 0

    # The writer drains the buffer into the graph, then writes the spilled ones back.
    await recorder.flush()
    assert len(recorder) == 0
    assert await rig.stored_ids() == ids(range(7))
    assert rig.log_files() == []
    assert recorder.written == 7
    assert rig.buffer_gauge() == 0

    # Drained below half: the next fill is a new episode, signalled again.
    for n in range(10, 15):
        recorder.record(trace(n))
    assert rig.count(Signal.NEO4J_WRITE_QUEUE) == 2
    assert rig.count(Signal.DECISIONTRACE_DROPPED) == 0


async def test_flush_with_the_graph_down_spills_and_loses_nothing(rig: Rig) -> None:
    recorder = rig.recorder(batch_size=2)
    rig.store.down = True
    for n in range(5):
        recorder.record(trace(n))
    await recorder.flush()
    # One failed write sends the whole buffer to the log at once, so it never fills up.
    assert rig.spilled() == ids(range(5))
    assert len(recorder) == 0
    assert rig.buffer_gauge() == 0
    assert rig.store.calls == 1, "one failed write, not one per batch"

    await rig.open_breaker()
    calls = rig.store.calls
    for n in range(5, 8):
        recorder.record(trace(n))
    await recorder.flush()
    await recorder.flush()
    assert len(recorder) == 0
    assert rig.spilled() == ids(range(8))
    assert rig.store.calls == calls, "no graph call while the breaker is open"
    assert await rig.inner.count_traces(LONG_S) == 0
    assert rig.count(Signal.DECISIONTRACE_DROPPED) == 0


async def test_when_even_the_log_fails_the_traces_are_counted_dropped(rig: Rig) -> None:
    rig.spill_path.mkdir(parents=True)  # a directory where the log should be: appends fail
    recorder = rig.recorder(batch_size=10)
    rig.store.down = True
    for n in range(4):
        recorder.record(trace(n))
    await recorder.flush()
    assert len(recorder) == 0
    assert rig.count(Signal.DECISIONTRACE_DROPPED) == 4


async def test_spilled_traces_are_written_back_when_the_graph_returns(rig: Rig) -> None:
    recorder = rig.recorder()
    rig.store.down = True
    for n in range(5):  # five flushes, five failed writes: the breaker opens
        recorder.record(trace(n))
        await recorder.flush()
    assert rig.resolver.breaker.state == "open"
    for n in range(5, 8):
        recorder.record(trace(n))
    await recorder.flush()
    assert rig.store.calls == 5
    assert rig.spilled() == ids(range(8))
    assert await rig.inner.count_traces(LONG_S) == 0

    # The graph is back; after the cool-down the next write is the probe, then the log replays.
    rig.store.down = False
    rig.clock.advance(30.0)
    recorder.record(trace(8))
    await recorder.flush()
    assert rig.resolver.breaker.state == "closed"
    assert await rig.stored_ids() == ids(range(9))
    assert rig.log_files() == []
    assert rig.count(Signal.DECISIONTRACE_DROPPED) == 0


async def test_more_than_five_batches_are_written_back_over_several_flushes(rig: Rig) -> None:
    recorder = rig.recorder(batch_size=2)
    rig.store.down = True
    for n in range(14):
        recorder.record(trace(n))
    while len(recorder):
        await recorder.flush()
    await rig.close_breaker()
    await recorder.flush()
    assert len(await rig.stored_ids()) == 10, "five batches of two per flush"
    assert rig.log_files() == ["decisiontrace.replaying"]
    await recorder.flush()
    assert await rig.stored_ids() == ids(range(14))
    assert rig.log_files() == []


async def test_a_replay_cut_short_resumes_and_newer_spills_follow_it(rig: Rig) -> None:
    recorder = rig.recorder(batch_size=2)
    rig.store.down = True
    for n in range(16):
        recorder.record(trace(n))
    while len(recorder):
        await recorder.flush()
    assert len(rig.spilled()) == 16
    await rig.close_breaker()

    rig.store.fail_writes_after = 3  # the graph drops again in the middle of the replay
    await recorder.flush()
    assert len(await rig.stored_ids()) == 6
    assert rig.spilled(rig.replay_path) == ids(range(6, 16))
    recorder.record(trace(100))
    await recorder.flush()  # down: spilled to a new log, beside the interrupted replay
    assert rig.spilled() == ["trace-100"]

    rig.store.fail_writes_after = None
    await rig.close_breaker()
    await recorder.flush()  # five batches of two: the interrupted replay is done
    assert await rig.stored_ids() == ids(range(16))
    assert rig.log_files() == ["decisiontrace.jsonl"]
    await recorder.flush()  # then the newer log
    assert await rig.stored_ids() == [*ids(range(16)), "trace-100"]
    assert rig.log_files() == []


async def test_a_torn_line_in_the_log_does_not_stop_the_write_back(rig: Rig) -> None:
    """A process killed in the middle of an append leaves half a line: that one trace is
    counted as dropped, the others are written back, and the writer keeps going."""
    recorder = rig.recorder()
    whole = [json.dumps(trace(n).to_json()) for n in range(3)]
    write_text(rig.spill_path, "\n".join(whole) + "\n" + whole[0][:25])
    await recorder.flush()
    assert await rig.stored_ids() == ids(range(3))
    assert rig.log_files() == []
    assert rig.count(Signal.DECISIONTRACE_DROPPED) == 1
    recorder.record(trace(3))
    await recorder.flush()
    assert await rig.stored_ids() == ids(range(4))


async def test_drain_at_shutdown_spills_what_the_graph_cannot_take(rig: Rig) -> None:
    recorder = rig.recorder(batch_size=2)
    rig.store.down = True
    odd = {"text": "¿qué hora es? 🕒", "tool": None, "modes": ()}
    for n in range(5):
        recorder.record(trace(n, **odd))
    await recorder.drain()
    assert len(recorder) == 0
    assert read_traces(rig.spill_path) == [trace(n, **odd) for n in range(5)]


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def read_traces(path: Path) -> list[DecisionTrace]:
    lines = path.read_text("utf-8").splitlines()
    return [DecisionTrace.from_json(json.loads(line)) for line in lines]


_VALUES = st.text(alphabet=st.sampled_from(["a", "é", " ", ",", "~", "!", "\x1e", "\x1f", "🙂"]))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(_VALUES, _VALUES, _VALUES, st.none() | _VALUES, st.booleans()),
        min_size=1,
        max_size=4,
    )
)
def test_a_trace_batch_encodes_to_exactly_its_rows_and_fields(
    rows: list[tuple[str, str, str, str | None, bool]],
) -> None:
    """The embedded store's one-string batch (``_encode_traces``) splits back into one row per
    trace and nine fields per row, each value with the separators replaced, whether the batch
    took the as-is join or was joined again from cleaned copies."""
    traces = [
        trace(n, user=user, text=text, intent=intent, tool=tool, modes=("sync",) if m else ())
        for n, (user, text, intent, tool, m) in enumerate(rows)
    ]
    clean = str.maketrans({"\x1e": "\ufffd", "\x1f": "\ufffd"})
    decoded = [row.split("\x1f") for row in _encode_traces(traces).split("\x1e")]
    assert decoded == [
        [
            f"~{t.trace_id}",
            f"~{t.at}",
            "~" + t.user.translate(clean),
            "~" + t.text.translate(clean),
            "~" + t.intent.translate(clean),
            "!" if t.tool is None else "~" + t.tool.translate(clean),
            f"~{t.outcome}",
            f"~{float(t.duration_ms)!r}",
            "~" + ",".join(t.modes),
        ]
        for t in traces
    ]
