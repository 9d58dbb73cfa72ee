"""What the edge needs from the zones, wired by ``denis.app``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from denis.async_plane import AsyncPlane
from denis.graph import GraphZone
from denis.resilience import Clock, Deadline, HealthBoard, Signals
from denis.settings import ApiSettings
from denis.sync_plane import TokenStore, TurnReply, TurnRequest

__all__ = ["ChatHandler", "Services"]


class ChatHandler(Protocol):
    """What answers a turn: the sync plane's pipeline, as wired by ``denis.app``."""

    async def run(self, request: TurnRequest, deadline: Deadline) -> TurnReply: ...


@dataclass(frozen=True, slots=True)
class Services:
    settings: ApiSettings
    pipeline: ChatHandler
    tokens: TokenStore
    health: HealthBoard
    signals: Signals
    clock: Clock
    jobs: AsyncPlane
    graph: GraphZone
