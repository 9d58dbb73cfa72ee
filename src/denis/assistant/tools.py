"""The tools: job functions that read and change the home, run on ``tools_ro`` / ``tools_mut``.

A tool is a job type ``tool.<name>`` (the graph routes an intent to ``<name>``). Read-only
tools go on ``tools_ro``; mutating ones on ``tools_mut``, where the async plane's idempotency
key (the ledger's claim) keeps a command from running twice however it is re-delivered.
A tool runs on a worker or, when the broker or the workers are down, inline in the API; it
does not care which.

A tool never raises for a failure of the home: it returns ``{"ok": false, "code": ...}``. So
a command that could not reach Home Assistant is not retried behind the user's back minutes
later; the user was told it failed and can ask again. Exceptions are left for what a retry
can fix (a worker killed mid-job is re-dispatched by the journal and claimed once).
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from denis.assistant.home import (
    HomeBackend,
    HomeCommandFailedError,
    HomeUnavailableError,
    UnknownDeviceError,
)
from denis.assistant.timers import TimerStore
from denis.async_plane import JobContext, JobRegistry, Queue
from denis.errors import DenisError, InvalidInputError
from denis.graph.model import HomeGraph
from denis.resilience import CircuitBreaker
from denis.settings import AssistantSettings

__all__ = ["TOOLS", "HomeRuntime", "ToolSpec", "job_name", "register_assistant_jobs"]

_log = structlog.get_logger("denis.assistant")
PLAY_JOB = "voice.play"


@dataclass(frozen=True, slots=True)
class ToolSpec:
    queue: Queue
    action: str | None  # the device action; None for a read or a non-device tool


TOOLS: dict[str, ToolSpec] = {
    "device.turn_on": ToolSpec(Queue.TOOLS_MUT, "turn_on"),
    "device.turn_off": ToolSpec(Queue.TOOLS_MUT, "turn_off"),
    "light.set_brightness": ToolSpec(Queue.TOOLS_MUT, "set_brightness"),
    "climate.set_temperature": ToolSpec(Queue.TOOLS_MUT, "set_temperature"),
    "lock.lock": ToolSpec(Queue.TOOLS_MUT, "lock"),
    "lock.unlock": ToolSpec(Queue.TOOLS_MUT, "unlock"),
    "cover.open": ToolSpec(Queue.TOOLS_MUT, "open"),
    "cover.close": ToolSpec(Queue.TOOLS_MUT, "close"),
    "device.get_state": ToolSpec(Queue.TOOLS_RO, None),
    "sensor.get_temperature": ToolSpec(Queue.TOOLS_RO, None),
    "clock.time": ToolSpec(Queue.TOOLS_RO, None),
    "clock.date": ToolSpec(Queue.TOOLS_RO, None),
    "timer.start": ToolSpec(Queue.TOOLS_MUT, None),
    "timer.status": ToolSpec(Queue.TOOLS_RO, None),
    "timer.cancel": ToolSpec(Queue.TOOLS_MUT, None),
}


def job_name(tool: str) -> str:
    return f"tool.{tool}"


class HomeRuntime:
    """The home backend of this process, made on first use (after a worker's fork, never
    before it: an HTTP client does not survive a fork)."""

    def __init__(
        self, settings: AssistantSettings, *, breaker: CircuitBreaker | None = None
    ) -> None:
        self._settings = settings
        self._breaker = breaker
        self._backend: HomeBackend | None = None
        self._lock = threading.Lock()

    @property
    def kind(self) -> str:
        return "home_assistant" if self._settings.ha_url else "demo"

    def backend(self) -> HomeBackend:
        with self._lock:
            if self._backend is None:
                self._backend = self._make()
            return self._backend

    def adopt(self, home: HomeGraph) -> None:
        """The graph's home changed: the demo home seeds any device it has not seen (Home
        Assistant's devices are its own business)."""
        if self.kind != "demo":
            return
        from denis.assistant.home.demo import DemoHome  # noqa: PLC0415 - only if used

        seeded = DemoHome(self._settings.data_dir, home.devices)
        with self._lock:
            self._backend = seeded

    def import_home(self) -> HomeGraph:
        """Home Assistant's areas and devices (no routes or policies)."""
        backend = self.backend()
        importer = getattr(backend, "import_home", None)
        if importer is None:
            raise InvalidInputError("only a Home Assistant home can be imported")
        home: HomeGraph = importer()
        return home

    def _make(self) -> HomeBackend:
        settings = self._settings
        if settings.ha_url:
            from denis.assistant.home.ha import HomeAssistant  # noqa: PLC0415 - only if used

            return HomeAssistant(
                settings.ha_url,
                settings.ha_token or "",
                settings.ha_timeout_s,
                breaker=self._breaker,
            )
        from denis.assistant.home.demo import DemoHome  # noqa: PLC0415 - only if used

        return DemoHome(settings.data_dir, None)

    def close(self) -> None:
        with self._lock:
            if self._backend is not None:
                self._backend.close()
                self._backend = None


def _failure(code: str, detail: str, states: list[dict[str, Any]]) -> dict[str, Any]:
    return {"ok": False, "code": code, "detail": detail, "states": states}


def _device_tool(runtime: HomeRuntime, action: str | None) -> Callable[..., Any]:
    def run(_: JobContext, args: dict[str, Any]) -> Any:
        entity_ids = [str(e) for e in args.get("entity_ids", [])]
        if not entity_ids:
            raise InvalidInputError("a device tool needs entity_ids")
        data = dict(args.get("data") or {})
        states: list[dict[str, Any]] = []
        for entity_id in entity_ids:
            try:
                home = runtime.backend()
                state = (
                    home.get_state(entity_id)
                    if action is None
                    else home.call(entity_id, action, data)
                )
            except HomeCommandFailedError as exc:  # it answered, but could not do it
                return _failure("command_failed", exc.detail, states)
            except HomeUnavailableError as exc:
                return _failure("home_unavailable", exc.detail, states)
            except UnknownDeviceError as exc:
                return _failure("unknown_device", exc.detail, states)
            except InvalidInputError as exc:
                return _failure("invalid", exc.detail, states)
            states.append(state.as_json())
        return {"ok": True, "states": states, "pid": os.getpid()}

    return run


def _clock(_: JobContext, __: dict[str, Any]) -> Any:
    return {"ok": True, "now": dt.datetime.now().astimezone().isoformat(timespec="seconds")}


def _timer_tool(op: str) -> Callable[..., Any]:
    def run(ctx: JobContext, args: dict[str, Any]) -> Any:
        store = TimerStore(ctx.data_dir / "timers.sqlite3")
        user = str(args.get("user", ""))
        if op == "start":
            try:
                timer = store.start(user, int(args.get("duration_s", 0)))
            except ValueError as exc:
                return _failure("invalid", str(exc), [])
            return {"ok": True, "timers": [_timer_json(timer)]}
        if op == "cancel":
            return {"ok": True, "cancelled": store.cancel_all(user)}
        return {"ok": True, "timers": [_timer_json(t) for t in store.active(user)]}

    return run


def _timer_json(timer: Any) -> dict[str, Any]:
    return {"id": timer.id, "duration_s": timer.duration_s, "remaining_s": timer.remaining_s}


def _play(runtime: HomeRuntime) -> Callable[..., Any]:
    def run(_: JobContext, args: dict[str, Any]) -> Any:
        home = runtime.backend()
        play = getattr(home, "play_media", None)
        if play is None:
            return _failure("unsupported", "this home has no media players", [])
        try:
            play(str(args["entity_id"]), str(args["url"]), "music")
        except DenisError as exc:  # unreachable, refused, or the player cannot play media
            _log.info("voice.playback_failed", code=exc.code, detail=exc.detail[:200])
            return _failure(exc.code, exc.detail, [])
        return {"ok": True}

    return run


def register_assistant_jobs(registry: JobRegistry, runtime: HomeRuntime) -> None:
    for tool, spec in TOOLS.items():
        fn: Callable[..., Any]
        if tool.startswith("clock."):
            fn = _clock
        elif tool.startswith("timer."):
            fn = _timer_tool(tool.removeprefix("timer."))
        else:
            fn = _device_tool(runtime, spec.action)
        registry.add(job_name(tool), spec.queue, fn)
    registry.add(PLAY_JOB, Queue.HA_PLAYBACK, _play(runtime))
