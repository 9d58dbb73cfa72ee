"""``POST /telemetry``: what the web app measured, uploaded in batches.

Body: ``{"events": [{"type": "rtt" | "reconnect" | "error" | "voice" | "ws_state" | ...,
"at": <client ms since the epoch>, "value"?: <ms>, "detail"?: <short string>}, ...]}``, at most
``MAX_EVENTS`` events and ``MAX_BATCH_BYTES`` bytes (else 413 ``too_large``); anything malformed
is 422 ``invalid_input``; a bearer token is required (401). Answer: 200 ``{"accepted": n}``.

What the server does with it:

- every ``rtt`` value goes to ``denis_client_rtt_seconds``, every ``voice`` value to
  ``denis_voice_latency_seconds``;
- a batch with an ``rtt`` over ``SLOW_RTT_MS`` counts ``telemetry.latency`` once (once per
  batch, not per event: a batch is one page's report), a batch with a ``voice`` over
  ``SLOW_VOICE_MS`` counts ``voice.latency`` once. The signal's log line (and its place in the
  recent signals) is written only when a user's page turns slow, not again while it stays slow:
  one line per state change. That per-user memory is a bounded ``TtlLru``.

Nothing from the page is logged verbatim: ``detail`` is accepted (and capped) but never logged,
only counts and the largest value go in the signal's fields.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import State

from denis.api.body import invalid_fields, parse_json, read_body
from denis.api.deps import bearer_token, get_services
from denis.api.services import Services
from denis.errors import InvalidInputError, TooLargeError
from denis.resilience import Deadline, Signal
from denis.sync_plane.ttl_lru import TtlLru

__all__ = ["MAX_BATCH_BYTES", "MAX_EVENTS", "SLOW_RTT_MS", "SLOW_VOICE_MS", "router"]

router = APIRouter()

MAX_EVENTS = 100
MAX_BATCH_BYTES = 64 * 1024
MAX_DETAIL_CHARS = 500
SLOW_RTT_MS = 5000.0
SLOW_VOICE_MS = 3000.0
_MAX_VALUE_MS = 24 * 3600 * 1000.0
_READ_TIMEOUT_S = 10.0
_MAX_USERS = 10_000
_SLOW_MEMORY_S = 600.0


class TelemetryEvent(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    type: str = Field(min_length=1, max_length=32, pattern=r"^[a-z][a-z0-9_.-]*$")
    at: float = Field(ge=0, allow_inf_nan=False)
    value: float | None = Field(default=None, ge=0, le=_MAX_VALUE_MS, allow_inf_nan=False)
    detail: str | None = Field(default=None, max_length=MAX_DETAIL_CHARS)


class TelemetryBatch(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    events: list[TelemetryEvent] = Field(max_length=MAX_EVENTS)


@dataclass(slots=True)
class _Slow:
    rtt: bool = False
    voice: bool = False


@router.post("/telemetry")
async def post_telemetry(request: Request) -> JSONResponse:
    services = get_services(request)
    principal = services.tokens.authenticate(bearer_token(request))
    deadline = Deadline.start(services.clock, _READ_TIMEOUT_S)
    batch = _parse(await read_body(request, MAX_BATCH_BYTES, deadline))
    _watch(request.app.state, services).record(principal.user, batch)
    return JSONResponse({"accepted": len(batch.events)})


def _parse(raw: bytes) -> TelemetryBatch:
    data = parse_json(raw)
    if not isinstance(data, dict) or not isinstance(data.get("events"), list):
        raise InvalidInputError('expected {"events": [{"type": ..., "at": ...}, ...]}')
    if len(data["events"]) > MAX_EVENTS:
        raise TooLargeError(f"a batch holds at most {MAX_EVENTS} events")
    try:
        return TelemetryBatch.model_validate(data)
    except ValidationError as exc:
        raise invalid_fields(exc) from exc


def _watch(state: State, services: Services) -> _Watch:
    watch: _Watch | None = getattr(state, "telemetry_watch", None)
    if watch is None:
        watch = _Watch(services)
        state.telemetry_watch = watch
    return watch


class _Watch:
    """Turns batches into metrics and signals, remembering which users' pages are slow."""

    def __init__(self, services: Services) -> None:
        self._services = services
        self._slow: TtlLru[str, _Slow] = TtlLru(max_keys=_MAX_USERS, ttl_s=_SLOW_MEMORY_S)

    def record(self, user: str, batch: TelemetryBatch) -> None:
        metrics = self._services.signals.metrics
        rtts = [e.value for e in batch.events if e.type == "rtt" and e.value is not None]
        voices = [e.value for e in batch.events if e.type == "voice" and e.value is not None]
        for value in rtts:
            metrics.client_rtt_seconds.observe(value / 1000)
        for value in voices:
            metrics.voice_latency_seconds.observe(value / 1000)
        now_s = self._services.clock.now_s()
        slow = self._slow.get(user, now_s) or _Slow()
        slow.rtt = self._judge(Signal.TELEMETRY_LATENCY, SLOW_RTT_MS, user, rtts, was=slow.rtt)
        slow.voice = self._judge(Signal.VOICE_LATENCY, SLOW_VOICE_MS, user, voices, was=slow.voice)
        self._slow.set(user, slow, now_s)

    def _judge(
        self, signal: Signal, limit_ms: float, user: str, values: list[float], *, was: bool
    ) -> bool:
        """Count ``signal`` once if any value is over ``limit_ms``; log it only when the page
        turns slow. Whether this user's page is slow now (unchanged by a batch without values)."""
        if not values:
            return was
        signals = self._services.signals
        over = [v for v in values if v > limit_ms]
        if not over:
            if was:
                signals.note(Signal.RECOVERED, dependency=signal.value, user=user)
            return False
        if was:
            signals.count(signal)
        else:
            signals.emit(
                signal, user=user, slow=len(over), of=len(values), max_ms=math.ceil(max(over))
            )
        return True
