"""What the edge needs from the zones, wired by ``denis.app``."""

from __future__ import annotations

from dataclasses import dataclass

from denis.async_plane import AsyncPlane
from denis.graph import GraphZone
from denis.resilience import Clock, HealthBoard, Signals
from denis.settings import ApiSettings
from denis.sync_plane import ChatPipeline, TokenStore

__all__ = ["Services"]


@dataclass(frozen=True, slots=True)
class Services:
    settings: ApiSettings
    pipeline: ChatPipeline
    tokens: TokenStore
    health: HealthBoard
    signals: Signals
    clock: Clock
    jobs: AsyncPlane
    graph: GraphZone
