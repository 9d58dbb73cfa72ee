"""The assistant's responder: words → intent → graph route and policy → tool job → reply.

One turn: recognize the intent locally (``hassil``); resolve its targets against the home's
names (from the graph, or the legacy cache when it is down); ask the graph which tool the
intent routes to and whether policy allows it or wants a confirmation first; run the tool as
a job (``tools_ro`` / ``tools_mut``, idempotency key from the turn) within the smaller of the
tool timeout and what is left of the request; phrase the result. What the intents do not
cover goes to the LLM when one is configured. The reply is then spoken (``tts``) if that can
be done in time, and played on a Home Assistant media player when one is configured.

Every dependency here can fail without failing the turn: the home unreachable → an honest
"I can't reach your home" (degraded ``home``); the LLM down → the "I didn't understand" help
(degraded ``llm``); TTS slow or missing → no audio (degraded ``voice``); the tool's job not
finished in time → "sent, not confirmed yet" (degraded ``async``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from denis.assistant import phrases
from denis.assistant.conversation import Conversation, Conversations, Exchange, PendingAction
from denis.assistant.intents import IntentEngine
from denis.assistant.tools import PLAY_JOB, TOOLS, job_name
from denis.assistant.voice import VoiceOut
from denis.async_plane import Dispatcher, JobOutcome
from denis.errors import DenisError, HopLimitError
from denis.graph import GraphResolver
from denis.graph.model import Device, HomeGraph
from denis.resilience import Clock, Deadline
from denis.settings import AssistantSettings
from denis.sync_plane import GateVerdict, Reply, Turn

__all__ = ["AssistantResponder"]

_log = structlog.get_logger("denis.assistant")

_CONFIRM_TTL_S = 60.0
_REPLY_MARGIN_S = 0.3  # kept back from a tool's wait so the reply still goes out in time
_MIN_TOOL_S = 0.05
_DEVICE_INTENTS = {
    "HassTurnOn",
    "HassTurnOff",
    "HassLightSet",
    "HassGetState",
    "HassClimateGetTemperature",
    "HassClimateSetTemperature",
}
# When a sentence names an area but no device or domain, these domains are meant.
_DEFAULT_DOMAINS = {
    "HassTurnOn": ("light", "switch"),
    "HassTurnOff": ("light", "switch"),
    "HassLightSet": ("light",),
    "HassClimateSetTemperature": ("climate",),
    "HassClimateGetTemperature": ("climate", "sensor"),
    "HassGetState": ("light", "switch", "cover", "lock", "climate", "sensor"),
}
_LLM_SYSTEM = {
    "en": "You are Denis, a helpful voice assistant for a home. Answer in one or two short "
    "sentences, in English. You cannot control devices in this conversation; if asked to, say "
    "which command to use instead (e.g. 'turn on the kitchen light').",
    "es": "Eres Denis, un asistente de voz para el hogar. Responde en una o dos frases cortas, "
    "en español. En esta conversación no puedes controlar dispositivos; si te lo piden, di qué "
    "orden usar (por ejemplo «enciende la luz de la cocina»).",
}


class LlmAnswerLike(Protocol):
    @property
    def text(self) -> str: ...
    @property
    def tokens_used(self) -> int: ...


class Llm(Protocol):
    @property
    def configured(self) -> bool: ...
    async def complete(
        self, messages: list[dict[str, str]], deadline: Deadline
    ) -> LlmAnswerLike: ...


class ToolTextScreen(Protocol):
    """The injection gate's check for text the user did not type (``InjectionGate``)."""

    def check_tool_text(self, text: str) -> GateVerdict: ...


@dataclass(frozen=True, slots=True)
class _Step:
    """What every step of one turn needs."""

    turn: Turn
    conversation: Conversation
    deadline: Deadline
    home: HomeGraph


@dataclass(slots=True)
class _Answer:
    text: str
    intent: str
    slots: dict[str, Any] = field(default_factory=dict)
    tool: str | None = None
    degraded: set[str] = field(default_factory=set)
    tokens_used: int | None = None


class AssistantResponder:
    def __init__(  # noqa: PLR0913 - explicit wiring
        self,
        *,
        settings: AssistantSettings,
        intents: IntentEngine,
        resolver: GraphResolver,
        jobs: Dispatcher,
        conversations: Conversations,
        clock: Clock,
        llm: Llm | None = None,
        voice: VoiceOut | None = None,
        on_home_change: Callable[[HomeGraph], None] | None = None,
        screen: ToolTextScreen | None = None,
    ) -> None:
        self._settings = settings
        self._intents = intents
        self._resolver = resolver
        self._jobs = jobs
        self._conversations = conversations
        self._clock = clock
        self._llm = llm
        self._voice = voice
        self._on_home_change = on_home_change
        self._screen = screen
        self._home: HomeGraph | None = None

    async def respond(self, turn: Turn, deadline: Deadline) -> Reply:
        conversation = self._conversations.get(turn.principal.user, turn.session_id)
        answer = await self._answer(turn, conversation, deadline)
        conversation.remember(Exchange(turn.text, answer.text, answer.intent, answer.slots))
        audio_url = await self._speak(answer, turn, deadline)
        return Reply(
            answer.text,
            answer.intent,
            audio_url=audio_url,
            degraded=frozenset(answer.degraded),
            tokens_used=answer.tokens_used,
            tool=answer.tool,
        )

    # -- understanding --------------------------------------------------------------------

    async def _answer(self, turn: Turn, conversation: Conversation, deadline: Deadline) -> _Answer:
        home = self._resolver.cache.home
        if home is not self._home:
            self._intents.update_home(home)
            self._home = home if await self._home_changed(home) else None
        # Pure CPU (1 to 3 ms, more on long sentences): off the event loop, so one slow sentence
        # does not hold up every other request.
        match = await asyncio.to_thread(self._intents.recognize, turn.text, turn.lang)
        if match is None:
            conversation.pending = None
            return await self._unknown(turn, conversation, deadline)
        intent, slots = match.intent, dict(match.slots)
        if intent in ("DenisConfirm", "DenisDeny"):
            return await self._confirm(turn, conversation, deadline, yes=intent == "DenisConfirm")
        conversation.pending = None  # anything else drops an unconfirmed command
        if intent == "DenisFollowUp":
            if conversation.last_intent is None:
                return await self._unknown(turn, conversation, deadline)
            intent, slots = conversation.last_intent, _follow_up(conversation.last_slots, slots)
        if intent in ("DenisGreeting", "DenisHelp"):
            key = "greeting" if intent == "DenisGreeting" else "help"
            return _Answer(phrases.say(key, turn.lang), intent)
        step = _Step(turn, conversation, deadline, home)
        if intent in _DEVICE_INTENTS:
            return await self._device_intent(step, intent, slots)
        return await self._plain_intent(turn, intent, slots, deadline)

    async def _home_changed(self, home: HomeGraph) -> bool:
        """Tell the home backend (the demo home seeds new devices); False if that failed, so
        the next turn tries again. Never fails the turn: several API processes seeding one
        demo-home file at once can find it locked."""
        if self._on_home_change is None:
            return True
        try:
            await asyncio.to_thread(self._on_home_change, home)
        except Exception as exc:  # noqa: BLE001 - the turn goes on with the home as it is
            _log.info("assistant.home_sync_failed", error=type(exc).__name__)
            return False
        return True

    async def _unknown(self, turn: Turn, conversation: Conversation, deadline: Deadline) -> _Answer:
        if self._llm is None or not self._llm.configured:
            return _Answer(phrases.say("unknown", turn.lang), "unknown")
        messages = [{"role": "system", "content": _LLM_SYSTEM.get(turn.lang, _LLM_SYSTEM["en"])}]
        for exchange in conversation.history():
            if not self._screened(exchange.reply_text):
                continue  # a reply carrying tool text (a device name...) that reads as an attack
            messages.append({"role": "user", "content": exchange.user_text})
            messages.append({"role": "assistant", "content": exchange.reply_text})
        messages.append({"role": "user", "content": turn.text})
        try:
            answer = await self._llm.complete(messages, deadline)
        except DenisError as exc:
            _log.info("assistant.llm_unavailable", code=exc.code)
            return _Answer(phrases.say("unknown", turn.lang), "unknown", degraded={"llm"})
        return _Answer(answer.text, "llm", tokens_used=answer.tokens_used)

    def _screened(self, text: str) -> bool:
        """True if ``text`` may go to the LLM: nothing in it reads as an injection."""
        if self._screen is None:
            return True
        verdict = self._screen.check_tool_text(text)
        if verdict.blocked:
            _log.info("assistant.llm_context_dropped", layer=verdict.layer, rule=verdict.rule)
        return not verdict.blocked

    async def _confirm(
        self, turn: Turn, conversation: Conversation, deadline: Deadline, *, yes: bool
    ) -> _Answer:
        lang, intent = turn.lang, "DenisConfirm" if yes else "DenisDeny"
        pending = self._conversations.take_pending(conversation)
        if not yes:
            if pending is None:
                return _Answer(phrases.say("deny_nothing", lang), intent)
            return _Answer(phrases.say("denied", lang, action=pending.description), intent)
        if pending is None:
            return _Answer(phrases.say("confirm_nothing", lang), intent)
        spec = TOOLS[pending.tool]
        outcome, degraded = await self._run(pending.tool, pending.args, pending.key, turn, deadline)
        devices = self._devices(pending.args.get("entity_ids", []))
        text, more = self._phrase_device_outcome(
            outcome, spec.action or "read", devices, lang, pending.args.get("data", {})
        )
        return _Answer(text, intent, tool=pending.tool, degraded=degraded | more)

    # -- device intents ---------------------------------------------------------------------

    async def _device_intent(self, step: _Step, intent: str, slots: dict[str, Any]) -> _Answer:
        targets = _targets(intent, slots, step.home)
        answer = _Answer("", intent, slots)
        if not targets:
            answer.text = phrases.say("no_target", step.turn.lang)
            return answer
        by_domain: dict[str, list[Device]] = defaultdict(list)
        for device in targets:
            by_domain[device.domain].append(device)
        texts = [
            await self._device_group(step, answer, domain, devices)
            for domain, devices in sorted(by_domain.items())
        ]
        answer.text = " ".join(texts)
        return answer

    async def _device_group(
        self, step: _Step, answer: _Answer, domain: str, devices: list[Device]
    ) -> str:
        turn, deadline, lang = step.turn, step.deadline, step.turn.lang
        intent, slots = answer.intent, answer.slots
        found = (await self._resolver.route(f"{intent}:{domain}", deadline)).value
        if found is None:
            found = (await self._resolver.route(intent, deadline)).value
        if found is None or found.tool not in TOOLS:
            return phrases.say("no_route", lang)
        tool = found.tool
        answer.tool = tool
        spec = TOOLS[tool]
        data = _tool_data(slots)
        action = spec.action or "read"
        args: dict[str, Any] = {"entity_ids": [d.id for d in devices], "data": data}
        key = None
        if spec.action is not None:
            decision = (await self._resolver.decide(tool, turn.principal.user, deadline)).value
            if not decision.allowed:
                description = phrases.action_phrase(action, devices, lang, data)
                return phrases.say("not_allowed", lang, action=description)
            key = _key(turn.trace_id, tool, args)
            if decision.confirm:
                step.conversation.pending = PendingAction(
                    tool,
                    args,
                    phrases.action_phrase(action, devices, lang, data),
                    key,
                    self._clock.now_s() + _CONFIRM_TTL_S,
                )
                asked = phrases.confirm_phrase(action, devices, lang)
                return phrases.say("confirm_ask", lang, action=asked)
        outcome, degraded = await self._run(tool, args, key, turn, deadline)
        if spec.action is None:
            text, more = self._phrase_read(outcome, intent, slots, devices, lang)
        else:
            text, more = self._phrase_device_outcome(outcome, action, devices, lang, data)
        answer.degraded |= degraded | more
        return text

    # -- other intents ----------------------------------------------------------------------

    async def _plain_intent(
        self, turn: Turn, intent: str, slots: dict[str, Any], deadline: Deadline
    ) -> _Answer:
        lang = turn.lang
        route = (await self._resolver.route(intent, deadline)).value
        if route is None or route.tool not in TOOLS:
            if intent in ("HassGetCurrentTime", "HassGetCurrentDate"):
                return self._clock_answer(intent, lang, dt.datetime.now().astimezone())
            return _Answer(phrases.say("no_route", lang), intent, slots)
        tool = route.tool
        args: dict[str, Any] = {"user": turn.principal.user}
        if "duration_s" in slots:
            args["duration_s"] = int(slots["duration_s"])
        mutating = TOOLS[tool].action is not None or TOOLS[tool].queue.value == "tools_mut"
        key = _key(turn.trace_id, tool, args) if mutating else None
        outcome, degraded = await self._run(tool, args, key, turn, deadline)
        result = outcome.result if outcome.state == "done" else None
        if not isinstance(result, dict) or not result.get("ok"):
            if tool.startswith("clock."):  # the clock is never worth failing a turn over
                answer = self._clock_answer(intent, lang, dt.datetime.now().astimezone())
                answer.degraded |= degraded
                return answer
            key_text = "slow_read" if outcome.unsettled else "busy"
            return _Answer(phrases.say(key_text, lang), intent, slots, tool, degraded)
        if tool.startswith("clock."):
            answer = self._clock_answer(intent, lang, dt.datetime.fromisoformat(result["now"]))
        else:
            answer = _Answer(_timer_text(tool, result, lang), intent, slots)
        answer.tool, answer.degraded = tool, degraded
        return answer

    def _clock_answer(self, intent: str, lang: str, now: dt.datetime) -> _Answer:
        if intent == "HassGetCurrentDate":
            return _Answer(phrases.say("date", lang, date=phrases.spoken_date(now.date(), lang)),
                           intent)  # fmt: skip
        time_text, singular = phrases.spoken_time(now, lang)
        return _Answer(phrases.say("time_one" if singular else "time", lang, time=time_text),
                       intent)  # fmt: skip

    # -- running tools ------------------------------------------------------------------------

    async def _run(
        self, tool: str, args: dict[str, Any], key: str | None, turn: Turn, deadline: Deadline
    ) -> tuple[JobOutcome, set[str]]:
        budget_s = min(self._settings.tool_timeout_s, deadline.remaining_s() - _REPLY_MARGIN_S)
        tool_deadline = Deadline.start(self._clock, max(_MIN_TOOL_S, budget_s))
        try:
            outcome = await self._jobs.submit(
                job_name(tool),
                args,
                deadline=tool_deadline,
                hops=turn.hops,
                key=key,
                wait=True,
            )
        except HopLimitError:
            raise
        except DenisError as exc:
            _log.info("assistant.tool_unavailable", tool=tool, code=exc.code)
            return JobOutcome(key or "", "busy", TOOLS[tool].queue.value, inline=True), {"async"}
        degraded = {"async"} if outcome.unsettled else set()
        return outcome, degraded

    def _phrase_device_outcome(
        self,
        outcome: JobOutcome,
        action: str,
        devices: list[Device],
        lang: str,
        data: dict[str, Any],
    ) -> tuple[str, set[str]]:
        description = phrases.action_phrase(action, devices, lang, data)
        result, failed = self._succeeded(outcome, "slow", description, devices, lang)
        if failed is not None:
            return failed
        states = self._state_texts(result, devices, lang)
        if action == "set_temperature" and "temperature" in data:
            value = f"{phrases.spoken_number(data['temperature'], lang)} °C"
            names = phrases.join([phrases.device_name(d, lang) for d in devices], lang)
            return phrases.say("set_temperature", lang, device=names, value=value), set()
        return phrases.say("done", lang, states=phrases.join(states, lang)), set()

    def _succeeded(
        self, outcome: JobOutcome, slow: str, description: str, devices: list[Device], lang: str
    ) -> tuple[dict[str, Any], tuple[str, set[str]] | None]:
        """The tool's result, and the reply instead when it did not succeed: not settled in
        time (the ``slow`` phrase), failed, or answered with an error."""
        if outcome.unsettled:
            return {}, (phrases.say(slow, lang, action=description), set())
        result = outcome.result if outcome.state == "done" else None
        if not isinstance(result, dict):
            return {}, (phrases.say("tool_failed", lang, action=description), set())
        if not result.get("ok"):
            return result, self._phrase_failure(result, description, devices, lang)
        return result, None

    def _phrase_failure(
        self, result: dict[str, Any], description: str, devices: list[Device], lang: str
    ) -> tuple[str, set[str]]:
        code = result.get("code")
        if code == "home_unavailable":
            return phrases.say("home_down", lang, action=description), {"home"}
        if code == "invalid" and devices:
            name = phrases.device_name(devices[0], lang)
            return phrases.say(
                "cannot", lang, device=name, device_cap=name[:1].upper() + name[1:]
            ), set()
        if code == "unknown_device":
            return phrases.say("no_target", lang), set()
        return phrases.say("tool_failed", lang, action=description), set()

    def _phrase_read(
        self,
        outcome: JobOutcome,
        intent: str,
        slots: dict[str, Any],
        devices: list[Device],
        lang: str,
    ) -> tuple[str, set[str]]:
        description = phrases.action_phrase("read", devices, lang, {})
        result, failed = self._succeeded(outcome, "slow_read", description, devices, lang)
        if failed is not None:
            return failed
        if intent == "HassClimateGetTemperature":
            return self._temperature_text(result, devices, lang), set()
        states = self._state_texts(result, devices, lang)
        asked = slots.get("state")
        if asked is not None and len(result["states"]) == 1:
            matches = str(result["states"][0].get("state")) == str(asked)
            key = "state_yes" if matches else "state_no"
            return phrases.say(key, lang, states=phrases.join(states, lang)), set()
        text = phrases.say("state", lang, states=phrases.join(states, lang))
        return text[:1].upper() + text[1:], set()

    def _temperature_text(self, result: dict[str, Any], devices: list[Device], lang: str) -> str:
        home = self._resolver.cache.home
        for state, device in zip(result["states"], devices, strict=False):
            attributes = state.get("attributes") or {}
            value = attributes.get("current_temperature")
            if value is None and device.domain == "sensor":
                value = state.get("state")
            if value is None:
                continue
            reading = f"{phrases.spoken_number(value, lang)} °C"
            area = next((a for a in home.areas if a.id == device.area), None)
            if area is None:
                return phrases.say("temperature_plain", lang, value=reading)
            return phrases.say(
                "temperature", lang, value=reading, place=phrases.area_name(area, lang)
            )
        return phrases.say("slow_read", lang)

    def _state_texts(self, result: dict[str, Any], devices: list[Device], lang: str) -> list[str]:
        by_id = {d.id: d for d in devices}
        texts = []
        for state in result.get("states", []):
            device = by_id.get(str(state.get("entity_id")))
            if device is not None:
                texts.append(phrases.state_phrase(device, state, lang))
        return texts

    def _devices(self, entity_ids: Sequence[str]) -> list[Device]:
        by_id = {d.id: d for d in self._resolver.cache.home.devices}
        return [by_id[e] for e in entity_ids if e in by_id]

    # -- voice ----------------------------------------------------------------------------------

    async def _speak(self, answer: _Answer, turn: Turn, deadline: Deadline) -> str | None:
        if self._voice is None:
            return None
        audio_url = await self._voice.speak(answer.text, turn.lang, deadline, turn.hops)
        if audio_url is None:
            answer.degraded.add("voice")
            return None
        settings = self._settings
        if settings.ha_url and settings.ha_media_player and settings.public_url:
            try:  # played by a worker when it can; the reply does not wait for it
                await self._jobs.submit(
                    PLAY_JOB,
                    {"entity_id": settings.ha_media_player, "url": settings.public_url + audio_url},
                    deadline=deadline,
                    hops=turn.hops,
                    wait=False,
                )
            except DenisError as exc:
                _log.info("assistant.playback_not_queued", code=exc.code)
        return audio_url


def _key(trace_id: str, tool: str, args: dict[str, Any]) -> str:
    """The idempotency key of a command: one per turn, tool and arguments, so however the job
    is re-delivered (broker timeout, worker crash, a duplicate "yes") it runs once."""
    digest = hashlib.sha256(repr(sorted(args.items())).encode()).hexdigest()[:16]
    return f"turn:{trace_id}:{tool}:{digest}"


def _follow_up(previous: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    merged = dict(previous)
    if "area" in new or "name" in new:  # a new target replaces the old one entirely
        merged.pop("area", None)
        merged.pop("name", None)
    merged.update(new)
    return merged


def _targets(intent: str, slots: dict[str, Any], home: HomeGraph) -> list[Device]:
    names = slots.get("name")
    if names:
        wanted = set(names) if isinstance(names, list | tuple | set) else {names}
        return [d for d in home.devices if d.id in wanted]
    domain, area = slots.get("domain"), slots.get("area")
    if not area and not domain and intent in ("HassTurnOn", "HassTurnOff"):
        return []  # "turn on" alone names nothing
    if isinstance(domain, str):
        domains: tuple[str, ...] = (domain,)
    elif isinstance(domain, list | tuple):
        domains = tuple(domain)
    else:
        domains = _DEFAULT_DOMAINS.get(intent, ())
    chosen = [d for d in home.devices if d.domain in domains and (not area or d.area == area)]
    if intent == "HassClimateGetTemperature":  # one reading: a sensor's, else a thermostat's
        chosen = chosen if area else chosen[:1]
        return _first(chosen, "sensor") or _first(chosen, "climate")
    if intent == "HassClimateSetTemperature":
        return _first(chosen, "climate")
    return chosen


def _first(devices: list[Device], domain: str) -> list[Device]:
    return [d for d in devices if d.domain == domain][:1]


def _tool_data(slots: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if "brightness" in slots:
        data["brightness"] = max(0, min(100, int(slots["brightness"])))
    if "temperature" in slots:
        data["temperature"] = float(slots["temperature"])
    return data


def _timer_text(tool: str, result: dict[str, Any], lang: str) -> str:
    if tool == "timer.cancel":
        return phrases.say("timer_cancelled", lang, count=result.get("cancelled", 0))
    timers = result.get("timers") or []
    if tool == "timer.start" and timers:
        duration = phrases.spoken_duration(int(timers[0]["duration_s"]), lang)
        return phrases.say("timer_started", lang, duration=duration)
    if not timers:
        return phrases.say("timer_none", lang)
    left = [phrases.spoken_duration(int(t["remaining_s"]), lang) for t in timers]
    return phrases.say("timer_status", lang, timers=phrases.join(left, lang))
