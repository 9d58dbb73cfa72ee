"""The whole graph zone on a real Neo4j: the first run, a Denis API process on Neo4j, the
``denis graph`` commands, and a restart during an outage that still answers from the cache.

A Neo4j JVM that has just started plans its first queries slowly (seconds, on a loaded
machine), which a long-running server never does; each test warms the server up with the
zone's own queries first, on an empty graph, so "the first run" is still a first run.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from denis.graph import (
    Area,
    DecisionTrace,
    Device,
    HomeGraph,
    Policy,
    PolicyDecision,
    Resolved,
    Route,
    default_home,
    open_graph_zone,
)
from denis.graph.neo4j_store import Neo4jGraphStore
from denis.resilience import Deadline, HealthBoard, MonotonicClock, Signal, Signals
from denis.resilience.metrics import Metrics
from denis.settings import GraphSettings, Settings
from servers import Neo4jServer, create_token

pytestmark = pytest.mark.integration

SLOW_S = 30.0

CUSTOM_HOME_YAML = """\
areas:
  - {id: salon, name: Salón, aliases: [sala de estar]}
  - {id: cocina, name: Cocina}
devices:
  - {id: light.lampara, name: Lámpara de pie, area: salon, domain: light, aliases: [la lámpara]}
  - {id: light.cocina, name: Luz de la cocina, area: cocina, domain: light}
routes:
  - {intent: HassTurnOn, tool: device.turn_on, queue: tools_mut}
  - {intent: HassTurnOff, tool: device.turn_off, queue: tools_mut}
  - {intent: HassGetState, tool: device.get_state, queue: tools_ro}
policies:
  - {name: only-alice-switches-on, tool: device.turn_on, users: [alice]}
"""
CUSTOM_HOME = HomeGraph(
    routes=(
        Route("HassTurnOn", "device.turn_on", "tools_mut"),
        Route("HassTurnOff", "device.turn_off", "tools_mut"),
        Route("HassGetState", "device.get_state", "tools_ro"),
    ),
    policies=(Policy("only-alice-switches-on", "device.turn_on", ("alice",)),),
    areas=(Area("salon", "Salón", ("sala de estar",)), Area("cocina", "Cocina")),
    devices=(
        Device("light.lampara", "Lámpara de pie", "salon", "light", ("la lámpara",)),
        Device("light.cocina", "Luz de la cocina", "cocina", "light"),
    ),
).sorted()


UNLOCK_CONFIRM = PolicyDecision(allowed=True, confirm=True, policy="unlocking-needs-confirmation")


def graph_settings(data_dir: Path, url: str) -> GraphSettings:
    # A query timeout above a loaded machine's hiccups: this file is not about timeouts.
    return Settings(data_dir=data_dir, graph_url=url, graph_query_timeout_s=5.0).graph


def trace(trace_id: str) -> DecisionTrace:
    return DecisionTrace(
        trace_id=trace_id,
        at="2025-03-01T12:00:00+00:00",
        user="alice",
        text="abre la puerta principal",
        intent="HassLockUnlock",
        tool="lock.unlock",
        outcome="confirm",
        duration_ms=4.0,
    )


async def wipe(store: Neo4jGraphStore) -> None:
    await store.load(HomeGraph(), SLOW_S)
    await store._write([("MATCH (x:DecisionTrace) DETACH DELETE x", {})], SLOW_S)


async def warm_up(url: str, data_dir: Path) -> None:
    """Run every query the zone uses once, then leave the graph empty."""
    store = Neo4jGraphStore(graph_settings(data_dir, url))
    try:
        await store.ping(SLOW_S)
        await store.load(default_home(), SLOW_S)
        await store.snapshot(SLOW_S)
        await store.route("HassTurnOn", SLOW_S)
        await store.policies("lock.unlock", SLOW_S)
        await store.write_traces([trace("warm-up")], SLOW_S)
        await store.count_traces(SLOW_S)
        await wipe(store)
    finally:
        await store.close()


class Zone:
    """What ``app.py`` gives the zone: its own signals, health board and clock."""

    def __init__(self) -> None:
        self.metrics = Metrics(CollectorRegistry())
        self.signals = Signals(self.metrics)
        self.health = HealthBoard(self.signals)
        self.clock = MonotonicClock()

    def open(self, settings: GraphSettings) -> Any:
        return open_graph_zone(settings, signals=self.signals, health=self.health, clock=self.clock)

    def deadline(self) -> Deadline:
        return Deadline.start(self.clock, 10.0)

    def signal_count(self, signal: Signal) -> float | None:
        return self.metrics.registry.get_sample_value(
            "denis_signal_total", {"signal": signal.value}
        )


async def test_first_run_then_a_restart_during_an_outage_answers_from_the_cache(
    neo4j_server: Neo4jServer, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    settings = graph_settings(data_dir, neo4j_server.url)
    await warm_up(neo4j_server.url, tmp_path)

    # First run: an empty graph gets the default home, and the cache follows it.
    first = Zone()
    async with first.open(settings) as zone:
        status = first.health.snapshot()
        assert status["zones"]["graph"] == {
            "mode": "normal",
            "store": "neo4j",
            "cached_routes": len(default_home().routes),
        }
        assert status["breakers"]["graph"] == "closed"
        found = await zone.resolver.route("HassTurnOff:lock", first.deadline())
        assert found == Resolved(
            Route("HassTurnOff:lock", "lock.unlock", "tools_mut"), legacy=False
        )
        decision = await zone.resolver.decide("lock.unlock", "alice", first.deadline())
        assert decision.value == UNLOCK_CONFIRM
        assert not decision.legacy
        zone.traces.record(trace("before-the-outage"))
    assert (data_dir / "graph-cache.json").exists()
    check = Neo4jGraphStore(settings)
    try:
        assert await check.snapshot(SLOW_S) == default_home()
        assert await check.count_traces(SLOW_S) == 1, "the writer put the trace in Neo4j"
    finally:
        await check.close()

    # Denis restarts while Neo4j is dead: the persisted cache answers, in legacy mode.
    neo4j_server.kill()
    second = Zone()
    began = time.monotonic()
    async with second.open(settings) as zone:
        assert time.monotonic() - began < 10, "a dead graph does not hold up the start"
        status = second.health.snapshot()
        assert status["zones"]["graph"] == {
            "mode": "legacy",
            "store": "neo4j",
            "cached_routes": len(default_home().routes),
        }
        found = await zone.resolver.route("HassTurnOff:lock", second.deadline())
        assert found == Resolved(Route("HassTurnOff:lock", "lock.unlock", "tools_mut"), legacy=True)
        decision = await zone.resolver.decide("lock.unlock", "alice", second.deadline())
        assert decision == Resolved(UNLOCK_CONFIRM, legacy=True)
        device = zone.resolver.device("Luz de la cocina")
        assert device.legacy
        assert device.value is not None
        assert device.value.id == "light.kitchen"
        zone.traces.record(trace("during-the-outage"))
    assert (second.signal_count(Signal.NEO4J_CONNECT_ERROR) or 0) >= 2
    # The trace could not reach the graph: it waits in the local log for write-back.
    lines = (data_dir / "decisiontrace.jsonl").read_text("utf-8").splitlines()
    assert [json.loads(line)["trace_id"] for line in lines] == ["during-the-outage"]
    assert second.signal_count(Signal.DECISIONTRACE_DROPPED) == 0


def run_denis(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "denis", *args],
        env={**os.environ, "DENIS_LOG_LEVEL": "WARNING", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def graph_status(url: str, token: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/status", headers={"Authorization": f"Bearer {token}"}, timeout=5)
    assert response.status_code == 200
    graph: dict[str, Any] = response.json()["zones"]["graph"]
    return graph


def test_denis_on_neo4j_and_the_graph_commands(
    neo4j_session: Neo4jServer, denis_factory: Any, tmp_path: Path
) -> None:
    url = neo4j_session.url
    asyncio.run(warm_up(url, tmp_path))
    api_dir, cli_dir = tmp_path / "api", tmp_path / "cli"
    token = create_token(api_dir, "root", admin=True)
    api = denis_factory(
        {
            "DENIS_GRAPH_URL": url,
            "DENIS_GRAPH_CACHE_REFRESH_S": "1",
            "DENIS_GRAPH_QUERY_TIMEOUT_S": "5",  # a loaded machine's hiccups are not the point
        },
        api_dir,
    )
    try:
        assert graph_status(api.url, token) == {
            "mode": "normal",
            "store": "neo4j",
            "cached_routes": len(default_home().routes),
        }

        # `denis graph load` from another machine's point of view: its own data dir.
        home_file = tmp_path / "home.yaml"
        home_file.write_text(CUSTOM_HOME_YAML, encoding="utf-8")
        loaded = run_denis(
            "graph",
            "load",
            str(home_file),
            env={"DENIS_DATA_DIR": str(cli_dir), "DENIS_GRAPH_URL": url},
        )
        assert loaded.returncode == 0, loaded.stderr
        assert json.loads(loaded.stdout.splitlines()[-1]) == {
            "loaded": {"routes": 3, "policies": 1, "areas": 2, "devices": 2}
        }

        # The API's refresher picks the new home up from Neo4j and persists it.
        deadline = time.monotonic() + 20
        while graph_status(api.url, token)["cached_routes"] != 3:
            assert time.monotonic() < deadline, "the API never refreshed its cache"
            time.sleep(0.2)
        exported = run_denis("graph", "export-cache", env={"DENIS_DATA_DIR": str(api_dir)})
        assert exported.returncode == 0, exported.stderr
        assert HomeGraph.from_json(json.loads(exported.stdout)).sorted() == CUSTOM_HOME
        assert graph_status(api.url, token)["mode"] == "normal"
    finally:
        api.stop()
        asyncio.run(wipe_session(url, tmp_path))


async def wipe_session(url: str, data_dir: Path) -> None:
    store = Neo4jGraphStore(graph_settings(data_dir, url))
    try:
        await wipe(store)
    finally:
        await store.close()
