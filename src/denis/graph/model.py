"""The graph's model: what the rest of Denis reads from it, as plain frozen values.

``HomeGraph`` is one whole snapshot (routes, policies, areas, devices): what a YAML file loads,
what the legacy cache persists, what the contract suite compares across stores.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Area", "DecisionTrace", "Device", "HomeGraph", "Policy", "PolicyDecision", "Route"]


@dataclass(frozen=True, slots=True)
class Route:
    """``(:Intent {name})-[:ROUTES_TO]->(:Tool {name, queue})``."""

    intent: str
    tool: str
    queue: str


@dataclass(frozen=True, slots=True)
class Policy:
    """Who may use a tool, and whether it needs a confirmation first (e.g. unlocking a door)."""

    name: str
    tool: str
    users: tuple[str, ...] = ("*",)
    confirm: bool = False


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    allowed: bool
    confirm: bool
    policy: str | None = None


@dataclass(frozen=True, slots=True)
class Area:
    id: str
    name: str
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    name: str
    area: str | None
    domain: str
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class HomeGraph:
    routes: tuple[Route, ...] = ()
    policies: tuple[Policy, ...] = ()
    areas: tuple[Area, ...] = ()
    devices: tuple[Device, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HomeGraph:
        return cls(
            routes=tuple(Route(**r) for r in data.get("routes", [])),
            policies=tuple(
                Policy(**{**p, "users": tuple(p.get("users", ("*",)))})
                for p in data.get("policies", [])
            ),
            areas=tuple(
                Area(**{**a, "aliases": tuple(a.get("aliases", ()))}) for a in data.get("areas", [])
            ),
            devices=tuple(
                Device(**{**d, "aliases": tuple(d.get("aliases", ()))})
                for d in data.get("devices", [])
            ),
        )

    def sorted(self) -> HomeGraph:
        """The same graph in a canonical order (stores return rows in any order)."""
        return HomeGraph(
            tuple(sorted(self.routes, key=lambda r: (r.intent, r.tool))),
            tuple(sorted(self.policies, key=lambda p: p.name)),
            tuple(sorted(self.areas, key=lambda a: a.id)),
            tuple(sorted(self.devices, key=lambda d: d.id)),
        )


# Per-turn value, never mutated; not ``frozen`` for speed (see ``sync_plane.pipeline.TurnRequest``).
@dataclass(slots=True)
class DecisionTrace:
    """One request's decision: input → intent → tool → outcome, with timings and modes."""

    trace_id: str
    at: str  # ISO 8601, UTC
    user: str
    text: str
    intent: str
    tool: str | None
    outcome: str
    duration_ms: float
    modes: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DecisionTrace:
        return cls(**{**data, "modes": tuple(data.get("modes", ()))})
