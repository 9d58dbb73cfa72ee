"""Zone 1, the sync plane: the request path of ``/chat``.

Owns: bearer-token auth, rate limiting (Redis first, in-memory fallback), the budget gate, the
injection gate (rules, then a learned classifier; it also screens tool text for the assistant),
the responder interface and the turn pipeline that chains them.
Depends on: ``denis.resilience``; Redis (optional, via ``redis`` and ``limits``, imported here
only and translated at this edge).
Degrades: Redis down, refused, slow or hung → in-memory limiter and budget, per process
(mode ``fallback``), back to Redis by itself; responder failing → a short honest answer behind
its breaker (mode ``fallback``).
Emits: ``rate_limit.redis_down``, ``gate.budget_exceeded``, ``gate.injection_blocked``,
``chat.timeout``; the API adds ``ws.disconnect_rate``.
"""

from denis.sync_plane.auth import Principal, TokenStore
from denis.sync_plane.injection import (
    GateVerdict,
    InjectionDetector,
    InjectionGate,
    LayeredInjectionDetector,
    RuleInjectionDetector,
    build_detector,
)
from denis.sync_plane.lang import Lang, detect_lang, spoken_date
from denis.sync_plane.pipeline import ChatPipeline, TurnReply, TurnRequest
from denis.sync_plane.plane import SyncPlane, open_sync_plane
from denis.sync_plane.responder import BasicResponder, Reply, Responder, Turn

__all__ = [
    "BasicResponder",
    "ChatPipeline",
    "GateVerdict",
    "InjectionDetector",
    "InjectionGate",
    "Lang",
    "LayeredInjectionDetector",
    "Principal",
    "Reply",
    "Responder",
    "RuleInjectionDetector",
    "SyncPlane",
    "TokenStore",
    "Turn",
    "TurnReply",
    "TurnRequest",
    "build_detector",
    "detect_lang",
    "open_sync_plane",
    "spoken_date",
]
