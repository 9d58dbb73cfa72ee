"""The turn pipeline: hop check → rate limit → budget gate → injection gate → responder → reply.

The rate limits and the budget reservation are one step, the admission (``AdmissionGate``).

Framework-free: the HTTP route and the WebSocket both call ``ChatPipeline.run``. The whole turn
runs under the request's deadline; past it the work is cancelled (nothing keeps running) and
``DeadlineExceededError`` is raised. Every step that can fail on a dependency degrades instead:
the limiter and budget fall back to memory, the responder to a short honest answer behind its
breaker. Zones the turn ran degraded in are listed in the reply.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import NoReturn

import structlog

from denis.errors import DeadlineExceededError
from denis.resilience import CircuitBreaker, Deadline, Signal, Signals, check_hops
from denis.sync_plane.admission import AdmissionGate
from denis.sync_plane.auth import Principal
from denis.sync_plane.budget import BudgetGate, count_tokens
from denis.sync_plane.injection import InjectionGate
from denis.sync_plane.lang import Lang, detect_lang
from denis.sync_plane.responder import Reply, Responder, Turn

__all__ = ["ChatPipeline", "TurnReply", "TurnRequest"]

_log = structlog.get_logger("denis.sync_plane")
SYNC_ZONE = "sync"

_FALLBACK_TEXT = {
    "en": "Sorry, I'm running in a reduced mode right now and can't answer that. Please try again in a moment.",
    "es": "Perdona, ahora mismo funciono en modo reducido y no puedo responder a eso. Inténtalo de nuevo en un momento.",
}  # fmt: skip


# Per-turn values: treated as immutable but not ``frozen`` (a frozen dataclass's ``__init__``
# sets each field through ``object.__setattr__``, about 0.1 µs a field, on every turn).
@dataclass(slots=True)
class TurnRequest:
    text: str
    principal: Principal
    client_addr: str
    trace_id: str
    hops: int = 0
    session_id: str = "default"
    lang: Lang | None = None


# Per-turn value, never mutated; not ``frozen`` for speed (see ``TurnRequest``).
@dataclass(slots=True)
class TurnReply:
    reply: str
    lang: Lang
    intent: str
    trace_id: str
    degraded: list[str] = field(default_factory=list)
    audio_url: str | None = None
    tool: str | None = None


class ChatPipeline:
    def __init__(  # noqa: PLR0913 - the pipeline is where the sync plane's parts meet
        self,
        *,
        admission: AdmissionGate,
        budget: BudgetGate,
        injection: InjectionGate,
        responder: Responder,
        responder_breaker: CircuitBreaker,
        responder_timeout_s: float,
        signals: Signals,
    ) -> None:
        self._admission = admission
        self._budget = budget
        self._injection = injection
        self._responder = responder
        self._breaker = responder_breaker
        self._responder_timeout_s = responder_timeout_s
        self._signals = signals

    async def run(self, request: TurnRequest, deadline: Deadline) -> TurnReply:
        """Answer one turn within ``deadline`` or raise a ``DenisError``."""
        check_hops(request.hops)
        timeout = asyncio.timeout(deadline.remaining_s())
        try:
            async with timeout:
                return await self._handle(request, deadline)
        except TimeoutError:
            if not timeout.expired():
                raise
            self._timed_out(deadline)

    async def _handle(self, request: TurnRequest, deadline: Deadline) -> TurnReply:
        text_tokens = count_tokens(request.text)  # counted once: the reservation and the settle
        reservation, degraded = await self._admission.admit(
            request.principal.user, request.client_addr, text_tokens, deadline
        )
        lang = request.lang or detect_lang(request.text)
        turn = Turn(
            request.text,
            lang,
            request.session_id,
            request.principal,
            request.hops,
            request.trace_id,
        )
        try:
            self._injection.check(request.text)
            reply = await self._respond(turn, deadline)
        except BaseException:
            self._budget.release(reservation)  # a refused or unfinished turn costs nothing
            raise
        used = reply.tokens_used
        if used is None:
            used = text_tokens + count_tokens(reply.text)
        self._budget.settle(reservation, used)
        zones = (reply.degraded | {SYNC_ZONE}) if degraded else reply.degraded
        return TurnReply(
            reply=reply.text,
            lang=lang,
            intent=reply.intent,
            trace_id=request.trace_id,
            degraded=sorted(zones),
            audio_url=reply.audio_url,
            tool=reply.tool,
        )

    async def _respond(self, turn: Turn, deadline: Deadline) -> Reply:
        permit = self._breaker.try_acquire()
        if permit is None:
            return self._fallback(turn)
        try:
            if self._responder_timeout_s < deadline.remaining_s():
                async with asyncio.timeout(self._responder_timeout_s):
                    reply = await self._responder.respond(turn, deadline)
            else:
                # The request's deadline ends first, and ``run`` already times the whole turn
                # out then. A second timer for (almost) the same instant would race the first:
                # on uvloop, whose clock has millisecond steps, it could fire before
                # ``deadline.expired`` turns true, and a timed-out turn was answered 200 with
                # the fallback (and blamed on the responder) instead of 408.
                reply = await self._responder.respond(turn, deadline)
        except asyncio.CancelledError:
            self._breaker.release(permit)
            raise
        except Exception as exc:  # noqa: BLE001 - any responder failure gets the fallback answer
            self._breaker.record_failure(permit)
            if deadline.expired:
                self._timed_out(deadline)
            _log.info("responder.error", error=type(exc).__name__)
            return self._fallback(turn)
        self._breaker.record_success(permit)
        return reply

    def _fallback(self, turn: Turn) -> Reply:
        return Reply(_FALLBACK_TEXT[turn.lang], "fallback", degraded=frozenset({SYNC_ZONE}))

    def _timed_out(self, deadline: Deadline) -> NoReturn:
        self._signals.emit(Signal.CHAT_TIMEOUT, budget_s=deadline.budget_s)
        raise DeadlineExceededError(
            f"no answer within {deadline.budget_s:g} s; the request was stopped, please retry",
            retry_after_s=1.0,
        )
