"""The ``GraphStore`` interface and the Cypher both implementations share.

Neo4j and the embedded LadybugDB speak the same Cypher for everything Denis asks, so the
queries live here once; an implementation only says how to run a read and how to run a batch of
writes in one transaction. Vendor errors are translated at each implementation's edge into
``GraphError`` (with the signal that names the failure), so nothing above this package sees
a driver exception.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from denis.graph.model import Area, DecisionTrace, Device, HomeGraph, Policy, Route
from denis.resilience import Signal

__all__ = ["CypherStore", "GraphError", "GraphStore", "UnavailableStore"]


class GraphError(Exception):
    """A graph operation failed; ``signal`` names how (connect error, timeout, pool exhausted)."""

    def __init__(self, message: str, signal: Signal | None = None) -> None:
        super().__init__(message)
        self.signal = signal


class GraphStore(Protocol):
    async def ping(self, timeout_s: float) -> None: ...
    async def load(self, home: HomeGraph, timeout_s: float) -> None: ...
    async def snapshot(self, timeout_s: float) -> HomeGraph: ...
    async def route(self, intent: str, timeout_s: float) -> Route | None: ...
    async def policies(self, tool: str, timeout_s: float) -> list[Policy]: ...
    async def write_traces(self, traces: list[DecisionTrace], timeout_s: float) -> None: ...
    async def count_traces(self, timeout_s: float) -> int: ...
    async def close(self) -> None: ...


Statement = tuple[str, dict[str, Any]]
HOME_LABELS = ("Intent", "Tool", "Policy", "Area", "Device")


class CypherStore:
    """The queries; subclasses implement ``_read`` and ``_write``."""

    async def _read(self, query: str, params: dict[str, Any], timeout_s: float) -> list[list[Any]]:
        raise NotImplementedError

    async def _write(self, statements: list[Statement], timeout_s: float) -> None:
        raise NotImplementedError

    async def ping(self, timeout_s: float) -> None:
        await self._read("RETURN 1", {}, timeout_s)

    async def load(self, home: HomeGraph, timeout_s: float) -> None:
        statements: list[Statement] = [
            (f"MATCH (n:{label}) DETACH DELETE n", {}) for label in HOME_LABELS
        ]
        statements += [
            (
                "UNWIND $rows AS r MERGE (i:Intent {name: r.intent}) MERGE (t:Tool {name: r.tool})"
                " SET t.queue = r.queue MERGE (i)-[:ROUTES_TO]->(t)",
                {
                    "rows": [
                        {"intent": r.intent, "tool": r.tool, "queue": r.queue} for r in home.routes
                    ]
                },
            ),
            (
                "UNWIND $rows AS r MERGE (t:Tool {name: r.tool}) MERGE (p:Policy {name: r.name})"
                " SET p.users = r.users, p.confirm = r.confirm MERGE (p)-[:GOVERNS]->(t)",
                {
                    "rows": [
                        {
                            "name": p.name,
                            "tool": p.tool,
                            "users": list(p.users),
                            "confirm": p.confirm,
                        }
                        for p in home.policies
                    ]
                },
            ),
            (
                "UNWIND $rows AS r MERGE (a:Area {id: r.id}) SET a.name = r.name, a.aliases = r.aliases",
                {
                    "rows": [
                        {"id": a.id, "name": a.name, "aliases": list(a.aliases)} for a in home.areas
                    ]
                },
            ),
            (
                "UNWIND $rows AS r MERGE (d:Device {id: r.id})"
                " SET d.name = r.name, d.domain = r.domain, d.aliases = r.aliases",
                {
                    "rows": [
                        {"id": d.id, "name": d.name, "domain": d.domain, "aliases": list(d.aliases)}
                        for d in home.devices
                    ]
                },
            ),
            (
                "UNWIND $rows AS r MATCH (d:Device {id: r.id}), (a:Area {id: r.area})"
                " MERGE (d)-[:IN_AREA]->(a)",
                {"rows": [{"id": d.id, "area": d.area} for d in home.devices if d.area]},
            ),
        ]
        await self._write([s for s in statements if s[1].get("rows", True)], timeout_s)

    async def snapshot(self, timeout_s: float) -> HomeGraph:
        """Four reads sharing one ``timeout_s``, not one each."""
        ends_s = time.monotonic() + timeout_s

        def left() -> float:
            remaining = ends_s - time.monotonic()
            if remaining <= 0:
                raise GraphError("the snapshot ran out of time", Signal.NEO4J_QUERY_TIMEOUT)
            return remaining

        timeout_s = left()
        routes = await self._read(
            "MATCH (i:Intent)-[:ROUTES_TO]->(t:Tool) RETURN i.name, t.name, t.queue", {}, timeout_s
        )
        policies = await self._read(
            "MATCH (p:Policy)-[:GOVERNS]->(t:Tool) RETURN p.name, t.name, p.users, p.confirm",
            {},
            left(),
        )
        areas = await self._read("MATCH (a:Area) RETURN a.id, a.name, a.aliases", {}, left())
        devices = await self._read(
            "MATCH (d:Device) OPTIONAL MATCH (d)-[:IN_AREA]->(a:Area)"
            " RETURN d.id, d.name, a.id, d.domain, d.aliases",
            {},
            left(),
        )
        return HomeGraph(
            tuple(Route(*row) for row in routes),
            tuple(Policy(n, t, tuple(u or ()), bool(c)) for n, t, u, c in policies),
            tuple(Area(i, n, tuple(a or ())) for i, n, a in areas),
            tuple(Device(i, n, a, d, tuple(al or ())) for i, n, a, d, al in devices),
        ).sorted()

    async def route(self, intent: str, timeout_s: float) -> Route | None:
        rows = await self._read(
            "MATCH (i:Intent {name: $intent})-[:ROUTES_TO]->(t:Tool) RETURN t.name, t.queue LIMIT 1",
            {"intent": intent},
            timeout_s,
        )
        return Route(intent, rows[0][0], rows[0][1]) if rows else None

    async def policies(self, tool: str, timeout_s: float) -> list[Policy]:
        rows = await self._read(
            "MATCH (p:Policy)-[:GOVERNS]->(t:Tool {name: $tool}) RETURN p.name, p.users, p.confirm",
            {"tool": tool},
            timeout_s,
        )
        return [Policy(n, tool, tuple(u or ()), bool(c)) for n, u, c in rows]

    async def write_traces(self, traces: list[DecisionTrace], timeout_s: float) -> None:
        await self._write([(MERGE_TRACES, {"rows": trace_rows(traces)})], timeout_s)

    async def count_traces(self, timeout_s: float) -> int:
        rows = await self._read("MATCH (x:DecisionTrace) RETURN count(x)", {}, timeout_s)
        return int(rows[0][0])


# A trace written twice (a spilled batch whose first write did commit) stays one trace.
MERGE_TRACES = (
    "UNWIND $rows AS r MERGE (x:DecisionTrace {trace_id: r.trace_id})"
    " SET x.at = r.at, x.user = r.user, x.text = r.text, x.intent = r.intent,"
    " x.tool = r.tool, x.outcome = r.outcome, x.duration_ms = r.duration_ms,"
    " x.modes = r.modes"
)


def trace_rows(traces: list[DecisionTrace]) -> list[dict[str, Any]]:
    return [{**t.to_json(), "modes": list(t.modes)} for t in traces]


class UnavailableStore(CypherStore):
    """A store that could not be opened: every call fails, so the zone stays in legacy mode."""

    def __init__(self, reason: str) -> None:
        self._reason = reason

    async def _read(self, query: str, params: dict[str, Any], timeout_s: float) -> list[list[Any]]:  # noqa: ARG002
        raise GraphError(self._reason, Signal.NEO4J_CONNECT_ERROR)

    async def _write(self, statements: list[Statement], timeout_s: float) -> None:  # noqa: ARG002
        raise GraphError(self._reason, Signal.NEO4J_CONNECT_ERROR)

    async def close(self) -> None:
        return None
