"""Intent recognition: a user's words → an intent and its slots, in English or Spanish.

Uses Home Assistant's own parser (``hassil``) and sentences (``home-assistant-intents``),
restricted to the intents Denis handles, plus Denis's own sentences (``sentences/<lang>.yaml``):
greetings, help, yes/no and the follow-up fragments of a conversation ("and in the bedroom?").
The home's areas and devices (names and aliases) fill the ``{area}`` and ``{name}`` lists, so
slots come back as ids: ``area`` → ``"living_room"``, ``name`` → ``"light.kitchen"``.

Home Assistant answers some sentences with the satellite's own area ("set the temperature to
21", "turn on the lights"); Denis has no satellite areas, so those come back without an
``area`` slot and the responder decides (the previous turn's area, the only such device, or a
question). Accents are folded on both sides ("salon" matches "salón"); ñ is kept.

Degrades: never raises. Text that is empty, longer than ``MAX_TEXT_CHARS`` or that hassil
fails on is simply not recognized (``None``); the responder then asks the LLM or says so.
A language whose sentences are missing from the installed package is skipped (logged once).
"""

from __future__ import annotations

import functools
import math
import time
import unicodedata
from dataclasses import dataclass
from importlib import resources
from typing import Any

import home_assistant_intents
import structlog
import yaml
from hassil import Intents, TextSlotList, filter_intents, merge_dict, recognize_ranked
from hassil.recognize import RecognizeResult

from denis.graph.model import Device, HomeGraph

__all__ = [
    "DENIS_INTENTS",
    "HA_INTENTS",
    "LANGUAGES",
    "MAX_TEXT_CHARS",
    "IntentEngine",
    "IntentMatch",
    "fold_accents",
]

_log = structlog.get_logger("denis.assistant")

LANGUAGES = ("en", "es")
MAX_TEXT_CHARS = 300  # nobody says a 300-character command; longer text goes to the LLM
HA_INTENTS = frozenset(
    {
        "HassTurnOn",  # also "open the garage door" (cover), "lock the front door" (lock)
        "HassTurnOff",  # also "close ..." (cover), "unlock ..." (lock)
        "HassLightSet",  # brightness only
        "HassClimateSetTemperature",
        "HassClimateGetTemperature",
        "HassGetState",
        "HassGetCurrentTime",
        "HassGetCurrentDate",
        "HassStartTimer",
        "HassTimerStatus",
        "HassCancelTimer",
    }
)
DENIS_INTENTS = frozenset(
    {"DenisGreeting", "DenisHelp", "DenisConfirm", "DenisDeny", "DenisFollowUp"}
)
_TIMER_INTENTS = frozenset({"HassStartTimer", "HassTimerStatus", "HassCancelTimer"})
_DURATION_SLOTS = {"hours": 3600, "minutes": 60, "seconds": 1}
_FOLDED_MARKS = frozenset("\u0300\u0301\u0302\u0308")  # grave, acute, circumflex, diaeresis
_KEPT_SYMBOLS = frozenset("°")
_KEPT_KEYS = frozenset({"language", "intents", "lists", "expansion_rules", "skip_words"})


@dataclass(frozen=True, slots=True)
class IntentMatch:
    intent: str  # e.g. "HassTurnOn", "DenisGreeting", "DenisFollowUp"
    lang: str  # "en" | "es": the language whose sentences matched
    slots: dict[str, Any]  # normalized values (see IntentEngine.recognize)
    text: str  # the text matched


def fold_accents(text: str) -> str:
    """Accents off: "Salón" → "Salon", "sí" → "si"; ñ and ç stay (letters, not accents)."""
    decomposed = unicodedata.normalize("NFD", text)
    return unicodedata.normalize("NFC", "".join(c for c in decomposed if c not in _FOLDED_MARKS))


def _clean(text: str) -> str:
    """Control characters, emoji and other symbols → spaces; accents folded; spaces squeezed."""
    kept = "".join(c if c in _KEPT_SYMBOLS or not _is_noise(c) else " " for c in text)
    return " ".join(fold_accents(kept).split())


def _is_noise(char: str) -> bool:
    category = unicodedata.category(char)
    return category[0] == "C" or category == "So"  # controls, format, surrogates; emoji


def _fold_tree(value: Any, key: str = "") -> Any:
    if key in {"out", "slots"}:
        return value  # output values are what slots carry: keep them as written
    if isinstance(value, str):
        return fold_accents(value)
    if isinstance(value, list):
        return [_fold_tree(v) for v in value]
    if isinstance(value, dict):
        return {fold_accents(k): _fold_tree(v, k) for k, v in value.items()}
    return value


def _ha_block(intent: str, block: dict[str, Any]) -> dict[str, Any] | None:
    """Home Assistant's block as Denis uses it, or None if Denis has no use for it."""
    if intent == "HassLightSet" and "brightness}" not in " ".join(block["sentences"]):
        return None  # colours and colour temperatures: Denis sets brightness only
    required = {k: v for k, v in block.get("requires_context", {}).items() if k != "area"}
    return {**block, "requires_context": required}  # the satellite's area: Denis has none


@functools.cache
def _language_intents(lang: str) -> Intents | None:
    """One language's sentences, parsed once per process (they never change at run time)."""
    started = time.perf_counter()
    data = home_assistant_intents.get_intents(lang)
    if data is None:
        _log.warning("intents.language_missing", lang=lang)
        return None
    data = {k: v for k, v in data.items() if k in _KEPT_KEYS}
    data["intents"] = {
        name: {"data": [b for raw in intent["data"] if (b := _ha_block(name, raw)) is not None]}
        for name, intent in data["intents"].items()
        if name in HA_INTENTS
    }
    own = resources.files("denis.assistant").joinpath("sentences", f"{lang}.yaml")
    merge_dict(data, yaml.safe_load(own.read_text(encoding="utf-8")))
    intents = Intents.from_dict(_fold_tree(data))
    for intent in intents.intents.values():
        for block in intent.data:
            _ = block.sentences  # parse the templates now, not during someone's first turn
    _log.info(
        "intents.loaded",
        lang=lang,
        intents=len(intents.intents),
        duration_ms=round((time.perf_counter() - started) * 1000),
    )
    return intents


@dataclass(frozen=True, slots=True)
class _HomeView:
    """What recognition needs from one home: its lists, devices, and sentences it can use."""

    devices: dict[str, Device]
    slot_lists: dict[str, Any]
    intents: dict[str, Intents]


def _home_view(home: HomeGraph, languages: dict[str, Intents]) -> _HomeView:
    areas = {(fold_accents(n), a.id) for a in home.areas for n in (a.name, *a.aliases)}
    names = {(fold_accents(n), d.id, d.domain) for d in home.devices for n in (d.name, *d.aliases)}
    slot_lists = {
        "area": TextSlotList.from_tuples(sorted(areas), allow_template=False, name="area"),
        "name": TextSlotList.from_tuples(
            [(text, dev, {"domain": domain}) for text, dev, domain in sorted(names)],
            allow_template=False,
            name="name",
        ),
        "floor": TextSlotList(name="floor", values=[]),  # Denis's homes have no floors
    }
    domains = {d.domain for d in home.devices}
    return _HomeView(
        devices={d.id: d for d in home.devices},
        slot_lists=slot_lists,
        intents={
            lang: filter_intents(intents, domains=domains, keep_domainless=True)
            for lang, intents in languages.items()
        },
    )


class IntentEngine:
    """Recognizes intents against one home's names; ``update_home`` when the names change."""

    def __init__(self, home: HomeGraph) -> None:
        self._languages = {
            lang: intents for lang in LANGUAGES if (intents := _language_intents(lang)) is not None
        }
        self._home = home
        self._view = _home_view(home, self._languages)

    def update_home(self, home: HomeGraph) -> None:
        """Cheap when nothing changed (identity, then equality of areas and devices)."""
        if home is self._home:
            return
        old, self._home = self._home, home
        if (home.areas, home.devices) == (old.areas, old.devices):
            return
        self._view = _home_view(home, self._languages)
        _log.info("intents.home_updated", areas=len(home.areas), devices=len(home.devices))

    def recognize(self, text: str, lang: str) -> IntentMatch | None:
        """The best match in ``lang``, else in the other language; None if neither matches.

        Slots: ``area`` (area id), ``name`` (device id), ``domain`` (named in the sentence, or
        the named device's), ``brightness`` (int 0-100), ``temperature`` (float), ``state``
        ("on", "open", "locked"...) and ``response`` (Home Assistant's kind of question:
        "one_yesno", "any", "which", ...) for HassGetState, ``duration_s`` (int) and
        ``timer_name`` for timers; any other slot under Home Assistant's name for it.
        """
        if not isinstance(text, str) or len(text) > MAX_TEXT_CHARS:
            return None
        cleaned = _clean(text)
        if not cleaned:
            return None
        view = self._view
        lang = lang.replace("_", "-").split("-")[0].lower()  # "es-ES", "en_US" → "es", "en"
        order = [lang] if lang in view.intents else []
        order += [other for other in view.intents if other != lang]
        for candidate in order:
            result = _recognize(cleaned, candidate, view)
            if result is not None:
                return IntentMatch(
                    result.intent.name, candidate, _slots(result, view), text.strip()
                )
        return None


def _recognize(text: str, lang: str, view: _HomeView) -> RecognizeResult | None:
    try:
        results = recognize_ranked(
            text,
            view.intents[lang],
            slot_lists=view.slot_lists,
            language=lang,
            best_slot_name="name",  # a device's name first, as in Home Assistant
        )
    except Exception as exc:  # noqa: BLE001 - user text hassil cannot parse is "not understood", never an error
        _log.warning("intents.recognize_failed", lang=lang, error=type(exc).__name__)
        return None
    # Then a named area over Home Assistant's "here" ("la luz de la habitación" is "this room's
    # light" to Home Assistant, but the bedroom's to a home that calls its bedroom "habitación").
    return next((r for r in results if _names_a_place(r)), None) or next(iter(results), None)


def _names_a_place(result: RecognizeResult) -> bool:
    return any(
        key in {"name", "area"} and not entity.is_wildcard
        for key, entity in result.entities.items()
    )


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _slots(result: RecognizeResult, view: _HomeView) -> dict[str, Any]:
    intent = result.intent.name
    slots: dict[str, Any] = {}
    duration_s = 0.0
    for key, entity in result.entities.items():
        value, number = entity.value, _number(entity.value)
        if intent in _TIMER_INTENTS and key in _DURATION_SLOTS and number is not None:
            duration_s += number * _DURATION_SLOTS[key]
        elif key == "name" and (intent in _TIMER_INTENTS or entity.is_wildcard):
            slots["timer_name"] = str(value).strip()
        elif key == "brightness" and number is not None:
            slots[key] = max(0, min(100, round(number)))
        elif key == "temperature" and number is not None:
            slots[key] = number
        else:
            slots[key] = value
    if duration_s > 0:
        slots["duration_s"] = round(duration_s)
    device = view.devices.get(slots.get("name", ""))
    if device is not None and "domain" not in slots:
        slots["domain"] = device.domain
    if intent == "HassGetState" and result.response:
        slots["response"] = result.response
    return slots
