"""How the assistant is put together: its job types (for the API and the workers alike) and,
in the API process, the responder with its engine, home, LLM, voice and conversations.

``app.py`` calls ``register_assistant`` when it builds the job registry and
``open_assistant`` in its lifespan; nothing else here is imported from outside the package.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import structlog

from denis.assistant.conversation import Conversations
from denis.assistant.home.ha_import import screen_names
from denis.assistant.intents import IntentEngine
from denis.assistant.llm import LlmClient, open_llm
from denis.assistant.responder import AssistantResponder, ToolTextScreen
from denis.assistant.tools import HomeRuntime, register_assistant_jobs
from denis.assistant.voice import VoiceOut, register_voice_jobs
from denis.async_plane import Dispatcher, JobRegistry
from denis.errors import DenisError
from denis.graph import GraphResolver
from denis.graph.model import HomeGraph
from denis.resilience import CircuitBreaker, Clock, Deadline, HealthBoard, Signals
from denis.settings import AssistantSettings

__all__ = ["AssistantParts", "import_home_assistant", "open_assistant", "register_assistant"]

_log = structlog.get_logger("denis.assistant")
_IMPORT_BUDGET_S = 20.0
_IMPORT_RETRY_S = 60.0


@dataclass(frozen=True, slots=True)
class AssistantParts:
    runtime: HomeRuntime


def register_assistant(
    registry: JobRegistry,
    settings: AssistantSettings,
    *,
    home_breaker: CircuitBreaker | None = None,
) -> AssistantParts:
    runtime = HomeRuntime(settings, breaker=home_breaker)
    register_assistant_jobs(registry, runtime)
    register_voice_jobs(registry, settings)
    return AssistantParts(runtime)


@asynccontextmanager
async def open_assistant(  # noqa: PLR0913 - explicit wiring
    settings: AssistantSettings,
    *,
    parts: AssistantParts,
    resolver: GraphResolver,
    jobs: Dispatcher,
    signals: Signals,
    health: HealthBoard,
    clock: Clock,
    screen: ToolTextScreen | None = None,
) -> AsyncIterator[AssistantResponder]:
    """``screen``: the injection gate's tool-text check, run on what goes to the LLM and on
    Home Assistant's names (None: nothing screened)."""
    runtime = parts.runtime
    engine = await asyncio.to_thread(IntentEngine, resolver.cache.home)
    llm: LlmClient | None = open_llm(settings, signals, clock, health) if settings.llm_url else None
    responder = AssistantResponder(
        settings=settings,
        intents=engine,
        resolver=resolver,
        jobs=jobs,
        conversations=Conversations(
            max_sessions=settings.conversation_max_sessions,
            ttl_s=settings.conversation_ttl_s,
            turns=settings.conversation_turns,
            clock=clock,
        ),
        clock=clock,
        llm=llm,
        voice=VoiceOut(settings, dispatcher=jobs, signals=signals, clock=clock),
        on_home_change=runtime.adopt,
        screen=screen,
    )
    tasks: list[asyncio.Task[None]] = []
    if runtime.kind == "home_assistant":
        tasks.append(asyncio.create_task(_keep_imported(runtime, resolver, clock, screen)))
    try:
        yield responder
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if llm is not None:
            await llm.aclose()
        await asyncio.to_thread(runtime.close)


async def import_home_assistant(
    runtime: HomeRuntime,
    resolver: GraphResolver,
    deadline: Deadline,
    screen: ToolTextScreen | None = None,
) -> HomeGraph | None:
    """Areas and devices from Home Assistant into the graph, keeping the graph's routes and
    policies. None if Home Assistant or the graph could not be reached."""
    try:
        async with asyncio.timeout(deadline.remaining_s()):
            imported = await asyncio.to_thread(runtime.import_home)
    except (DenisError, TimeoutError) as exc:
        _log.info("assistant.ha_import_failed", error=str(exc)[:200])
        return None
    if screen is not None:  # names reach LLM prompts: an injection in a name goes no further
        gate = screen
        imported = await asyncio.to_thread(
            screen_names, imported, lambda text: gate.check_tool_text(text).blocked
        )
    current = resolver.cache.home
    home = HomeGraph(
        routes=current.routes,
        policies=current.policies,
        areas=imported.areas,
        devices=imported.devices,
    ).sorted()
    if not await resolver.load(home, deadline):
        resolver.cache.remember(home)  # the graph is down: serve the new names from the cache
    return home


async def _keep_imported(
    runtime: HomeRuntime, resolver: GraphResolver, clock: Clock, screen: ToolTextScreen | None
) -> None:
    """Import Home Assistant's areas and devices at start, and again until it has worked."""
    while True:
        home = await import_home_assistant(
            runtime, resolver, Deadline.start(clock, _IMPORT_BUDGET_S), screen
        )
        if home is not None:
            _log.info("assistant.ha_imported", devices=len(home.devices), areas=len(home.areas))
            return
        await asyncio.sleep(_IMPORT_RETRY_S)
