"""A short memory per conversation, so follow-ups and confirmations work.

Keyed by (user, session id): another user's token cannot continue someone else's session or
confirm their pending command. Bounded like the in-memory limiter (``TtlLru``: at most
``max_sessions`` conversations, each forgotten ``ttl_s`` after its last turn), so memory stays
flat however many sessions arrive. Per process: with several API replicas a follow-up that
lands on another replica starts afresh (the answer is then "I didn't understand", never a
wrong action).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from denis.resilience import Clock
from denis.sync_plane.ttl_lru import TtlLru

__all__ = ["Conversation", "Conversations", "Exchange", "PendingAction"]


@dataclass(frozen=True, slots=True)
class Exchange:
    user_text: str
    reply_text: str
    intent: str
    slots: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PendingAction:
    """A command waiting for the user's "yes" (e.g. unlocking a door)."""

    tool: str
    args: dict[str, Any]
    description: str  # what it does, in the user's language ("unlock the Front door")
    key: str  # the idempotency key the command runs with once confirmed
    expires_at_s: float


@dataclass(slots=True)
class Conversation:
    turns: deque[Exchange]
    pending: PendingAction | None = None
    last_intent: str | None = None
    last_slots: dict[str, Any] = field(default_factory=dict)

    def remember(self, exchange: Exchange) -> None:
        self.turns.append(exchange)
        if not exchange.intent.startswith("Denis") and exchange.intent not in ("unknown", "llm"):
            self.last_intent = exchange.intent
            self.last_slots = dict(exchange.slots)

    def history(self) -> list[Exchange]:
        return list(self.turns)


class Conversations:
    def __init__(self, *, max_sessions: int, ttl_s: float, turns: int, clock: Clock) -> None:
        self._store: TtlLru[tuple[str, str], Conversation] = TtlLru(
            max_keys=max_sessions, ttl_s=ttl_s
        )
        self._turns = turns
        self._clock = clock

    def get(self, user: str, session_id: str) -> Conversation:
        """The conversation (a new one if unknown or expired); its lifetime restarts now."""
        now_s = self._clock.now_s()
        key = (user, session_id)
        found = self._store.get(key, now_s)
        if found is None:
            found = Conversation(deque(maxlen=self._turns))
        self._store.set(key, found, now_s)
        return found

    def take_pending(self, conversation: Conversation) -> PendingAction | None:
        """The pending action if it has not expired; it is cleared either way."""
        pending, conversation.pending = conversation.pending, None
        if pending is None or pending.expires_at_s <= self._clock.now_s():
            return None
        return pending

    def live_count(self) -> int:
        return self._store.live_count(self._clock.now_s())
