"""The real Neo4j the graph-zone tests run against (``tests/neo4j-launcher``): the official
driver talks to it over Bolt, and the faults the chaos tests need (SIGKILL, SIGSTOP, restart)
behave as a real outage does."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator

import neo4j
import pytest
from neo4j.exceptions import ServiceUnavailable

from servers import Neo4jServer

pytestmark = pytest.mark.integration


def connect(server: Neo4jServer, timeout_s: float = 2.0) -> neo4j.Driver:
    return neo4j.GraphDatabase.driver(
        server.url,
        auth=None,
        connection_timeout=timeout_s,
        connection_acquisition_timeout=timeout_s,
    )


@pytest.fixture
def tag() -> str:
    """A label value of this test's own, so tests sharing ``neo4j_session`` never collide."""
    return uuid.uuid4().hex


@pytest.fixture
def shared(neo4j_session: Neo4jServer, tag: str) -> Iterator[neo4j.Driver]:
    with connect(neo4j_session) as driver:
        yield driver
        driver.execute_query("MATCH (n {tag: $tag}) DETACH DELETE n", tag=tag)


def test_create_then_match_round_trips_over_bolt(shared: neo4j.Driver, tag: str) -> None:
    shared.execute_query(
        "CREATE (:Area {name: $area, tag: $tag})<-[:IN]-(:Device {name: $device, tag: $tag})",
        area="kitchen",
        device="ceiling light",
        tag=tag,
    )
    records, _, _ = shared.execute_query(
        "MATCH (d:Device {tag: $tag})-[:IN]->(a:Area) RETURN d.name AS device, a.name AS area",
        tag=tag,
    )
    assert [(r["device"], r["area"]) for r in records] == [("ceiling light", "kitchen")]
    assert shared.get_server_info().agent.startswith("Neo4j/5.26.")


def test_merge_creates_once_and_then_matches(shared: neo4j.Driver, tag: str) -> None:
    query = (
        "MERGE (i:Intent {name: $intent, tag: $tag}) "
        "MERGE (t:Tool {name: $tool, tag: $tag}) "
        "MERGE (i)-[r:ROUTES_TO]->(t) "
        "ON CREATE SET r.created = true ON MATCH SET r.created = false "
        "RETURN r.created AS created"
    )
    params = {"intent": "lights.on", "tool": "home_assistant", "tag": tag}
    first, _, _ = shared.execute_query(query, params)
    second, _, _ = shared.execute_query(query, params)
    assert [r["created"] for r in first + second] == [True, False]
    counts, _, _ = shared.execute_query(
        "MATCH (n {tag: $tag}) OPTIONAL MATCH (n)-[r:ROUTES_TO]->() "
        "RETURN count(DISTINCT n) AS nodes, count(r) AS routes",
        tag=tag,
    )
    assert (counts[0]["nodes"], counts[0]["routes"]) == (2, 1)


def test_pause_kill_and_restart_behave_like_real_outages(neo4j_server: Neo4jServer) -> None:
    with connect(neo4j_server) as driver:
        driver.execute_query("CREATE (:Policy {name: 'confirm-unlock', needs_confirmation: true})")

    # SIGSTOP: TCP still connects (the kernel queues it) but Bolt never answers.
    neo4j_server.pause()
    with socket.create_connection(("127.0.0.1", neo4j_server.port), timeout=2):
        pass
    began = time.monotonic()
    with connect(neo4j_server, timeout_s=1.0) as driver, pytest.raises(ServiceUnavailable):
        driver.verify_connectivity()
    assert time.monotonic() - began < 15  # bounded by the driver's timeout, not a hang
    neo4j_server.resume()
    with connect(neo4j_server) as driver:
        driver.verify_connectivity()

    # SIGKILL: connections are refused at once.
    neo4j_server.kill()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", neo4j_server.port), timeout=2)
    began = time.monotonic()
    with (
        connect(neo4j_server) as driver,
        driver.session() as session,
        pytest.raises(ServiceUnavailable),
    ):
        session.run("RETURN 1").consume()
    assert time.monotonic() - began < 15  # refused, not retried or waited on

    # Restart on the same port and store: the committed node survived the SIGKILL.
    port = neo4j_server.port
    neo4j_server.restart()
    assert neo4j_server.port == port
    with connect(neo4j_server) as driver:
        records, _, _ = driver.execute_query(
            "MATCH (p:Policy) RETURN p.name AS name, p.needs_confirmation AS confirm"
        )
    assert [(r["name"], r["confirm"]) for r in records] == [("confirm-unlock", True)]
