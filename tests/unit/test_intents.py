"""Intent recognition over the default home: English and Spanish sentences → intent and slots."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from denis.assistant import intents as intents_module
from denis.assistant.intents import (
    DENIS_INTENTS,
    HA_INTENTS,
    MAX_TEXT_CHARS,
    IntentEngine,
    IntentMatch,
)
from denis.graph.loader import default_home
from denis.graph.model import Area, Device, HomeGraph

KITCHEN_LIGHT = {"name": "light.kitchen", "domain": "light"}
LIVING_LIGHTS = {"name": "light.living_room", "domain": "light"}
BEDROOM_LIGHT = {"name": "light.bedroom", "domain": "light"}
GARAGE_DOOR = {"name": "cover.garage_door", "domain": "cover"}
FRONT_DOOR = {"name": "lock.front_door", "domain": "lock"}
THERMOSTAT = {"name": "climate.living_room", "domain": "climate"}


def yes_no(device: dict[str, str], state: str) -> dict[str, str]:
    return {**device, "state": state, "response": "one_yesno"}


ENGLISH: list[tuple[str, str, dict[str, Any]]] = [
    ("turn on the kitchen light", "HassTurnOn", KITCHEN_LIGHT),
    ("please turn off the kitchen light", "HassTurnOff", KITCHEN_LIGHT),
    ("Turn On The Living Room Lights", "HassTurnOn", LIVING_LIGHTS),
    ("switch off the bedroom light", "HassTurnOff", BEDROOM_LIGHT),
    ("turn off the kitchen", "HassTurnOff", {"area": "kitchen", "domain": "light"}),
    ("switch the bedroom on", "HassTurnOn", {"area": "bedroom", "domain": "light"}),
    (
        "is the living room light on?",
        "HassGetState",
        {"name": "light.living_room", "domain": "light", "state": "on", "response": "one_yesno"},
    ),
    (
        "turn off the lights in the living room",
        "HassTurnOff",
        {"area": "living_room", "domain": "light"},
    ),
    ("turn on the lights in the salon", "HassTurnOn", {"area": "living_room", "domain": "light"}),
    ("turn on the lights in the garage", "HassTurnOn", {"area": "garage", "domain": "light"}),
    ("turn on the lights", "HassTurnOn", {"domain": "light"}),
    ("open the garage door", "HassTurnOn", GARAGE_DOOR),
    ("close the garage door", "HassTurnOff", GARAGE_DOOR),
    ("lock the front door", "HassTurnOn", FRONT_DOOR),
    ("unlock the front door", "HassTurnOff", FRONT_DOOR),
    ("set the bedroom light to 50%", "HassLightSet", {**BEDROOM_LIGHT, "brightness": 50}),
    (
        "set the living room lights brightness to 30 percent",
        "HassLightSet",
        {**LIVING_LIGHTS, "brightness": 30},
    ),
    (
        "set the kitchen light brightness to 100%",
        "HassLightSet",
        {**KITCHEN_LIGHT, "brightness": 100},
    ),
    ("set brightness to 40%", "HassLightSet", {"brightness": 40, "domain": "light"}),
    ("set the temperature to 21 degrees", "HassClimateSetTemperature", {"temperature": 21.0}),
    ("make it 22 degrees", "HassClimateSetTemperature", {"temperature": 22.0}),
    (
        "set the thermostat to 22.5",
        "HassClimateSetTemperature",
        {**THERMOSTAT, "temperature": 22.5},
    ),
    (
        "set the living room temperature to 20",
        "HassClimateSetTemperature",
        {"area": "living_room", "temperature": 20.0},
    ),
    ("is the garage door open?", "HassGetState", yes_no(GARAGE_DOOR, "open")),
    ("is the garage door closed", "HassGetState", yes_no(GARAGE_DOOR, "closed")),
    ("is the front door locked?", "HassGetState", yes_no(FRONT_DOOR, "locked")),
    ("is the front door unlocked?", "HassGetState", yes_no(FRONT_DOOR, "unlocked")),
    ("is the kitchen light on?", "HassGetState", yes_no(KITCHEN_LIGHT, "on")),
    ("are any lights on?", "HassGetState", {"domain": "light", "state": "on", "response": "any"}),
    ("what is the state of the garage door?", "HassGetState", {**GARAGE_DOOR, "response": "one"}),
    (
        "what is the temperature in the living room?",
        "HassClimateGetTemperature",
        {"area": "living_room"},
    ),
    ("how warm is it in the bedroom", "HassClimateGetTemperature", {"area": "bedroom"}),
    ("what's the temperature?", "HassClimateGetTemperature", {}),
    ("what's the temperature of the thermostat", "HassClimateGetTemperature", THERMOSTAT),
    ("what time is it?", "HassGetCurrentTime", {}),
    ("what's the date today?", "HassGetCurrentDate", {}),
    ("what is today's date", "HassGetCurrentDate", {}),
    ("set a timer for 5 minutes", "HassStartTimer", {"duration_s": 300}),
    ("start a 1 hour and 30 minutes timer", "HassStartTimer", {"duration_s": 5400}),
    ("set a timer for 90 seconds", "HassStartTimer", {"duration_s": 90}),
    ("how much time is left on my timer?", "HassTimerStatus", {}),
    ("how much time is left on the pizza timer?", "HassTimerStatus", {"timer_name": "pizza"}),
    ("cancel the timer", "HassCancelTimer", {}),
    ("cancel the 5 minute timer", "HassCancelTimer", {"start_minutes": 5}),
    ("hello", "DenisGreeting", {}),
    ("good morning Denis", "DenisGreeting", {}),
    ("help", "DenisHelp", {}),
    ("what can you do?", "DenisHelp", {}),
    ("yes", "DenisConfirm", {}),
    ("yes, do it", "DenisConfirm", {}),
    ("confirm", "DenisConfirm", {}),
    ("go ahead", "DenisConfirm", {}),
    ("no", "DenisDeny", {}),
    ("cancel", "DenisDeny", {}),
    ("no, cancel that", "DenisDeny", {}),
    ("never mind", "DenisDeny", {}),
    ("and in the bedroom?", "DenisFollowUp", {"area": "bedroom"}),
    ("what about the kitchen?", "DenisFollowUp", {"area": "kitchen"}),
    ("how about the living room", "DenisFollowUp", {"area": "living_room"}),
    ("the kitchen too", "DenisFollowUp", {"area": "kitchen"}),
    ("and the bedroom light?", "DenisFollowUp", BEDROOM_LIGHT),
    ("what about the garage door?", "DenisFollowUp", GARAGE_DOOR),
]

SPANISH: list[tuple[str, str, dict[str, Any]]] = [
    ("enciende la luz de la cocina", "HassTurnOn", KITCHEN_LIGHT),
    ("apaga la luz de la cocina por favor", "HassTurnOff", KITCHEN_LIGHT),
    ("¿puedes encender la luz de la cocina?", "HassTurnOn", KITCHEN_LIGHT),
    ("enciende las luces del salón", "HassTurnOn", LIVING_LIGHTS),
    ("apaga las luces del salon", "HassTurnOff", LIVING_LIGHTS),
    ("enciende la luz del dormitorio", "HassTurnOn", BEDROOM_LIGHT),
    ("apaga la luz del salón", "HassTurnOff", {"name": "light.living_room", "domain": "light"}),
    ("apaga la luz de la habitacion", "HassTurnOff", {"area": "bedroom", "domain": "light"}),
    ("apaga la cocina", "HassTurnOff", {"area": "kitchen", "domain": "light"}),
    ("enciende las luces", "HassTurnOn", {"domain": "light"}),
    ("abre la puerta del garaje", "HassTurnOn", GARAGE_DOOR),
    ("cierra la puerta del garaje", "HassTurnOff", GARAGE_DOOR),
    ("cierra con llave la puerta principal", "HassTurnOn", FRONT_DOOR),
    ("bloquea la puerta principal", "HassTurnOn", FRONT_DOOR),
    ("desbloquea la puerta principal", "HassTurnOff", FRONT_DOOR),
    ("abre la puerta principal", "HassTurnOff", FRONT_DOOR),
    ("pon la luz del dormitorio al 50%", "HassLightSet", {**BEDROOM_LIGHT, "brightness": 50}),
    (
        "pon el brillo de la luz de la cocina al 30 por ciento",
        "HassLightSet",
        {**KITCHEN_LIGHT, "brightness": 30},
    ),
    (
        "sube la luz del dormitorio al 80 por ciento",
        "HassLightSet",
        {**BEDROOM_LIGHT, "brightness": 80},
    ),
    ("pon el brillo al 40%", "HassLightSet", {"brightness": 40, "domain": "light"}),
    ("pon la temperatura a 21 grados", "HassClimateSetTemperature", {"temperature": 21.0}),
    ("baja la temperatura a 19 grados", "HassClimateSetTemperature", {"temperature": 19.0}),
    ("pon el termostato a 22,5", "HassClimateSetTemperature", {**THERMOSTAT, "temperature": 22.5}),
    (
        "sube la temperatura del salón a 23 grados",
        "HassClimateSetTemperature",
        {"area": "living_room", "temperature": 23.0},
    ),
    ("¿está abierta la puerta del garaje?", "HassGetState", yes_no(GARAGE_DOOR, "open")),
    ("¿está la puerta del garaje abierta?", "HassGetState", yes_no(GARAGE_DOOR, "open")),
    ("¿está cerrada la puerta del garaje?", "HassGetState", yes_no(GARAGE_DOOR, "closed")),
    ("¿está cerrada con llave la puerta principal?", "HassGetState", yes_no(FRONT_DOOR, "locked")),
    ("¿está encendida la luz de la cocina?", "HassGetState", yes_no(KITCHEN_LIGHT, "on")),
    ("¿está apagada la luz del dormitorio?", "HassGetState", yes_no(BEDROOM_LIGHT, "off")),
    (
        "¿hay alguna luz encendida?",
        "HassGetState",
        {"domain": "light", "state": "on", "response": "any"},
    ),
    ("¿qué temperatura hace en el salón?", "HassClimateGetTemperature", {"area": "living_room"}),
    ("que temperatura hace en el salon", "HassClimateGetTemperature", {"area": "living_room"}),
    ("¿hace frío en el dormitorio?", "HassClimateGetTemperature", {"area": "bedroom"}),
    ("¿qué temperatura hace?", "HassClimateGetTemperature", {}),
    ("¿cuál es la temperatura del termostato?", "HassClimateGetTemperature", THERMOSTAT),
    ("¿qué hora es?", "HassGetCurrentTime", {}),
    ("dime la hora", "HassGetCurrentTime", {}),
    ("¿qué día es hoy?", "HassGetCurrentDate", {}),
    ("¿cuál es la fecha de hoy?", "HassGetCurrentDate", {}),
    ("pon un temporizador de 5 minutos", "HassStartTimer", {"duration_s": 300}),
    ("pon un temporizador de una hora y media", "HassStartTimer", {"duration_s": 5400}),
    ("temporizador de 30 segundos", "HassStartTimer", {"duration_s": 30}),
    ("¿cuánto le queda al temporizador?", "HassTimerStatus", {}),
    ("¿cuánto tiempo queda?", "HassTimerStatus", {}),
    ("cancela el temporizador", "HassCancelTimer", {}),
    ("hola", "DenisGreeting", {}),
    ("buenos días", "DenisGreeting", {}),
    ("ayuda", "DenisHelp", {}),
    ("¿qué puedes hacer?", "DenisHelp", {}),
    ("¿qué puedo decirte?", "DenisHelp", {}),
    ("sí", "DenisConfirm", {}),
    ("si", "DenisConfirm", {}),
    ("Sí, adelante", "DenisConfirm", {}),
    ("vale, hazlo", "DenisConfirm", {}),
    ("de acuerdo", "DenisConfirm", {}),
    ("no", "DenisDeny", {}),
    ("cancela", "DenisDeny", {}),
    ("no, déjalo", "DenisDeny", {}),
    ("mejor no", "DenisDeny", {}),
    ("¿y en el dormitorio?", "DenisFollowUp", {"area": "bedroom"}),
    ("¿y el salón?", "DenisFollowUp", {"area": "living_room"}),
    ("¿qué tal en la cocina?", "DenisFollowUp", {"area": "kitchen"}),
    ("lo mismo en la cocina", "DenisFollowUp", {"area": "kitchen"}),
    ("¿y la luz de la cocina?", "DenisFollowUp", KITCHEN_LIGHT),
    ("¿y la puerta del garaje?", "DenisFollowUp", GARAGE_DOOR),
]

NOT_INTENTS = [
    ("en", "tell me a joke"),
    ("en", "what's the weather like tomorrow?"),
    ("en", "who are you"),
    ("en", "turn on the microwave"),
    ("en", "what is the capital of france"),
    ("en", "remind me to buy milk"),
    ("en", "set a timer"),
    ("en", "yes no maybe"),
    ("en", "and"),
    ("es", "cuéntame un chiste"),
    ("es", "qué tiempo hará mañana"),
    ("es", "enciende el microondas"),
    ("es", "cuál es la capital de francia"),
    ("es", "pon un temporizador"),
    ("es", "no sé"),
    ("es", "y"),
]


@pytest.fixture(scope="module")
def engine() -> IntentEngine:
    return IntentEngine(default_home())


@pytest.mark.parametrize(("text", "intent", "slots"), ENGLISH)
def test_english(engine: IntentEngine, text: str, intent: str, slots: dict[str, Any]) -> None:
    assert engine.recognize(text, "en") == IntentMatch(intent, "en", slots, text)


@pytest.mark.parametrize(("text", "intent", "slots"), SPANISH)
def test_spanish(engine: IntentEngine, text: str, intent: str, slots: dict[str, Any]) -> None:
    assert engine.recognize(text, "es") == IntentMatch(intent, "es", slots, text)


def test_the_tables_cover_every_intent() -> None:
    expected = HA_INTENTS | DENIS_INTENTS
    assert {intent for _, intent, _ in ENGLISH} == expected
    assert {intent for _, intent, _ in SPANISH} == expected


@pytest.mark.parametrize(("lang", "text"), NOT_INTENTS)
def test_unrelated_text_is_not_an_intent(engine: IntentEngine, lang: str, text: str) -> None:
    assert engine.recognize(text, lang) is None


def test_the_other_language_is_tried_second(engine: IntentEngine) -> None:
    spanish = engine.recognize("enciende la luz de la cocina", "en")
    english = engine.recognize("turn on the kitchen light", "es")
    assert spanish == IntentMatch("HassTurnOn", "es", KITCHEN_LIGHT, "enciende la luz de la cocina")
    assert english == IntentMatch("HassTurnOn", "en", KITCHEN_LIGHT, "turn on the kitchen light")


def test_regional_and_unknown_languages(engine: IntentEngine) -> None:
    assert engine.recognize("¿qué hora es?", "es-ES") == IntentMatch(
        "HassGetCurrentTime", "es", {}, "¿qué hora es?"
    )
    assert engine.recognize("what time is it", "en_US") == IntentMatch(
        "HassGetCurrentTime", "en", {}, "what time is it"
    )
    match = engine.recognize("hola", "fr")
    assert match is not None
    assert (match.intent, match.lang) == ("DenisGreeting", "es")


def test_accents_and_case_do_not_matter(engine: IntentEngine) -> None:
    expected = {"area": "living_room"}
    for text in ("¿qué temperatura hace en el salón?", "QUE TEMPERATURA HACE EN EL SALON"):
        match = engine.recognize(text, "es")
        assert match is not None
        assert (match.intent, match.slots) == ("HassClimateGetTemperature", expected)


def test_a_match_keeps_the_original_text(engine: IntentEngine) -> None:
    match = engine.recognize("  Turn on the kitchen light 💡 ", "en")
    assert match == IntentMatch("HassTurnOn", "en", KITCHEN_LIGHT, "Turn on the kitchen light 💡")


def renamed_home() -> HomeGraph:
    home = default_home()
    return dataclasses.replace(
        home,
        areas=(*home.areas, Area("office", "Office", ("despacho",))),
        devices=(
            *(d for d in home.devices if d.id != "light.kitchen"),
            Device("light.desk", "Desk lamp", "office", "light", ("lámpara del escritorio",)),
        ),
    )


def test_update_home_changes_the_names() -> None:
    engine = IntentEngine(default_home())
    assert engine.recognize("turn on the desk lamp", "en") is None
    engine.update_home(renamed_home())
    desk = {"name": "light.desk", "domain": "light"}
    assert engine.recognize("turn on the desk lamp", "en") == IntentMatch(
        "HassTurnOn", "en", desk, "turn on the desk lamp"
    )
    assert engine.recognize("apaga la lampara del escritorio", "es") == IntentMatch(
        "HassTurnOff", "es", desk, "apaga la lampara del escritorio"
    )
    assert engine.recognize("¿y en el despacho?", "es") == IntentMatch(
        "DenisFollowUp", "es", {"area": "office"}, "¿y en el despacho?"
    )
    gone = engine.recognize("turn on the kitchen light", "en")  # no such device: the area's lights
    assert gone == IntentMatch(
        "HassTurnOn", "en", {"area": "kitchen", "domain": "light"}, "turn on the kitchen light"
    )


def test_update_home_with_the_same_names_keeps_what_it_built() -> None:
    home = default_home()
    engine = IntentEngine(home)
    built = engine._view
    engine.update_home(home)
    engine.update_home(default_home())  # an equal home, another object
    engine.update_home(dataclasses.replace(home, routes=()))  # routes are not names
    assert engine._view is built
    engine.update_home(renamed_home())
    assert engine._view is not built


HOSTILE = [
    "turn on the kitchen light " * 400,  # 10k characters
    "a" * (MAX_TEXT_CHARS + 1),
    "",
    "   \n\t ",
    "\x00",
    "\x00" * 100,
    "💡🔥🏠",
    "\u202eturn on the kitchen light",  # right-to-left override
    "turn\u200b on the kitchen\u200d light",  # zero-width characters
    "\ud800\udfff",  # lone surrogates
    "{area} <denis> [(|) {name:x}",  # template syntax is text here
    "((((((((((((((((((((",
    "and and and and and and and and and and and and and and and and and and",
    "the " * 70,
    "set a timer for " + "9" * 200 + " minutes",
    "ñ" * 250,
    "e\u0301" * 140,  # combining accents
]


@pytest.mark.parametrize("text", HOSTILE, ids=[f"hostile{i}" for i in range(len(HOSTILE))])
@pytest.mark.parametrize("lang", ["en", "es", "", "xx-YY"])
def test_hostile_input_never_raises(engine: IntentEngine, text: str, lang: str) -> None:
    match = engine.recognize(text, lang)
    assert match is None or match.intent in HA_INTENTS | DENIS_INTENTS


def test_too_long_or_empty_text_is_not_recognized(engine: IntentEngine) -> None:
    assert engine.recognize("turn on the kitchen light " * 400, "en") is None
    assert engine.recognize("", "en") is None
    assert engine.recognize("\x00 \x01 💡", "en") is None


def test_control_characters_are_spaces(engine: IntentEngine) -> None:
    match = engine.recognize("turn on the\x00kitchen\x07light", "en")
    assert match is not None
    assert (match.intent, match.slots) == ("HassTurnOn", KITCHEN_LIGHT)


def test_a_parser_failure_is_not_recognized(
    engine: IntentEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: object, **_kwargs: object) -> None:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(intents_module, "recognize_ranked", broken)
    assert engine.recognize("turn on the kitchen light", "en") is None
