"""The queues, their policies, and which worker group consumes them.

The filesystem transport has no priorities, so priority is by separate consumers: the
``interactive`` worker takes only ``tools_mut`` and ``tools_ro``; everything slow or
background goes to the ``background`` worker. A backlog of housekeeping or playback can
never delay a command to a device.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["POLICIES", "WORKER_GROUPS", "Queue", "QueuePolicy"]


class Queue(StrEnum):
    TOOLS_RO = "tools_ro"
    TOOLS_MUT = "tools_mut"
    TTS = "tts"
    GRAPH_INGEST = "graph_ingest"
    HA_PLAYBACK = "ha_playback"
    HOUSEKEEPING = "housekeeping"
    DEAD_LETTER = "dead_letter"


@dataclass(frozen=True, slots=True)
class QueuePolicy:
    max_retries: int
    background: bool  # refused while the queue's disk is over its threshold


POLICIES: dict[Queue, QueuePolicy] = {
    Queue.TOOLS_MUT: QueuePolicy(max_retries=3, background=False),
    Queue.TOOLS_RO: QueuePolicy(max_retries=1, background=False),
    Queue.TTS: QueuePolicy(max_retries=1, background=True),
    Queue.GRAPH_INGEST: QueuePolicy(max_retries=5, background=True),
    Queue.HA_PLAYBACK: QueuePolicy(max_retries=2, background=True),
    Queue.HOUSEKEEPING: QueuePolicy(max_retries=1, background=True),
    Queue.DEAD_LETTER: QueuePolicy(max_retries=0, background=True),
}

WORKER_GROUPS: dict[str, tuple[Queue, ...]] = {
    "interactive": (Queue.TOOLS_MUT, Queue.TOOLS_RO),
    "background": (Queue.TTS, Queue.GRAPH_INGEST, Queue.HA_PLAYBACK, Queue.HOUSEKEEPING),
}
