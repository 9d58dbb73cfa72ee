"""What answers a turn once the gates let it through.

``Responder`` is the interface the assistant core implements later; ``BasicResponder`` is the
foundation's small real one: greetings, time and date, help, in English and Spanish.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from denis.resilience import Deadline
from denis.sync_plane.auth import Principal
from denis.sync_plane.lang import Lang, spoken_date

__all__ = ["BasicResponder", "Reply", "Responder", "Turn"]


# Per-turn value, never mutated; not ``frozen`` for speed (see ``sync_plane.pipeline.TurnRequest``).
@dataclass(slots=True)
class Turn:
    text: str
    lang: Lang
    session_id: str
    principal: Principal
    hops: int
    trace_id: str


# Per-turn value, never mutated; not ``frozen`` for speed (see ``sync_plane.pipeline.TurnRequest``).
@dataclass(slots=True)
class Reply:
    text: str
    intent: str
    audio_url: str | None = None
    degraded: frozenset[str] = field(default_factory=frozenset)
    tokens_used: int | None = None  # a responder that calls an LLM reports its usage here
    tool: str | None = None  # the tool the turn ran, for its DecisionTrace


class Responder(Protocol):
    async def respond(self, turn: Turn, deadline: Deadline) -> Reply: ...


# First match wins; greeting last, so "hola, ¿qué hora es?" asks the time.
_INTENTS: list[tuple[str, re.Pattern[str]]] = [
    ("time", re.compile(r"\b(what time|the time|time is it|qu[ée] hora|la hora)\b", re.IGNORECASE)),
    ("date", re.compile(r"\b(what day|the date|today's date|what is today|qu[ée] d[ií]a|la fecha|qu[ée] fecha)\b", re.IGNORECASE)),
    ("help", re.compile(r"\b(help|what can you do|ayuda|qu[ée] puedes hacer)\b", re.IGNORECASE)),
    ("greeting", re.compile(r"^\W*(hello|hi|hey|good (morning|afternoon|evening)|hola|buen[oa]s( (d[ií]as|tardes|noches))?)\b", re.IGNORECASE)),
]  # fmt: skip

_TEXT = {
    "greeting": {"en": "Hello! I'm Denis. How can I help?", "es": "¡Hola! Soy Denis. ¿En qué te ayudo?"},
    "help": {
        "en": "I can tell you the time and the date. Try: \"what time is it?\" or \"what's the date?\"",
        "es": "Puedo decirte la hora y la fecha. Prueba: «¿qué hora es?» o «¿qué día es hoy?»",
    },
    "unknown": {
        "en": "Sorry, I didn't understand that. Try \"what time is it?\", \"what's the date?\" or \"help\".",
        "es": "Perdona, no lo he entendido. Prueba «¿qué hora es?», «¿qué día es hoy?» o «ayuda».",
    },
}  # fmt: skip


class BasicResponder:
    def __init__(self, now: Callable[[], dt.datetime] | None = None) -> None:
        # Local wall-clock time. Only its fields are read, so a naive ``datetime.now()`` does
        # (0.3 µs; ``.astimezone()`` on top, the same fields with a tzinfo, cost 4 µs).
        self._now = now if now is not None else dt.datetime.now

    async def respond(self, turn: Turn, deadline: Deadline) -> Reply:  # noqa: ARG002 - no I/O
        intent = "unknown"
        for name, rx in _INTENTS:
            if rx.search(turn.text):
                intent = name
                break
        if intent == "time":
            return Reply(self._time(turn.lang), intent)
        if intent == "date":
            return Reply(self._date(turn.lang), intent)
        return Reply(_TEXT[intent][turn.lang], intent)

    def _time(self, lang: Lang) -> str:
        now = self._now()
        clock = f"{now.hour:02d}:{now.minute:02d}"  # what "%H:%M" gives, without strftime
        if lang == "es":
            return f"Son las {clock}." if now.hour != 1 else f"Es la {clock}."
        return f"It's {clock}."

    def _date(self, lang: Lang) -> str:
        day = spoken_date(self._now(), lang)
        return f"Hoy es {day}." if lang == "es" else f"Today is {day}."
