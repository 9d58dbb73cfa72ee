"""The legacy cache: the last good ``HomeGraph``, in memory and persisted in the data dir.

Refreshed from the graph while it is healthy; read instead of the graph while it is down; read
from disk at start, so a Denis restarted during a graph outage still resolves routes, policies
and devices. Written atomically (temp file and rename).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from denis.graph.model import Device, HomeGraph, Policy, PolicyDecision, Route

__all__ = ["LegacyCache", "decide"]


def decide(governing: Sequence[Policy], user: str) -> PolicyDecision:
    """Combine the policies governing a tool: no policy → allowed; else the user must be named
    (or ``*``) by one of them, and any of them may ask for a confirmation."""
    if not governing:
        return PolicyDecision(allowed=True, confirm=False)
    matching = [p for p in governing if "*" in p.users or user in p.users]
    if not matching:
        return PolicyDecision(allowed=False, confirm=False, policy=governing[0].name)
    confirm = next((p for p in matching if p.confirm), None)
    return PolicyDecision(
        allowed=True, confirm=confirm is not None, policy=(confirm or matching[0]).name
    )


class LegacyCache:
    def __init__(self, path: Path) -> None:
        self._path = path
        self.home = HomeGraph()
        self._devices: dict[str, Device] = {}

    def read_disk(self) -> bool:
        try:
            data = json.loads(self._path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        self.remember(HomeGraph.from_json(data), persist=False)
        return True

    def remember(self, home: HomeGraph, *, persist: bool = True) -> None:
        self.home = home
        index: dict[str, Device] = {}
        for device in home.devices:
            for name in (device.id, device.name, *device.aliases):
                index.setdefault(name.casefold(), device)
        self._devices = index
        if persist:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(home.to_json()), encoding="utf-8")
            tmp.replace(self._path)

    def route(self, intent: str) -> Route | None:
        return next((r for r in self.home.routes if r.intent == intent), None)

    def decide(self, tool: str, user: str) -> PolicyDecision:
        return decide([p for p in self.home.policies if p.tool == tool], user)

    def device(self, name: str) -> Device | None:
        return self._devices.get(name.casefold())
