"""What Denis says, in English and Spanish.

Device names: English replies use a device's name; Spanish ones its first alias when it has
one (the default home lists the Spanish name first), else its name. Spanish state words
agree with the kind of thing (la luz encendida, la puerta abierta, el termostato encendido).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from denis.graph.model import Area, Device
from denis.sync_plane import spoken_date

__all__ = [
    "action_phrase",
    "area_name",
    "confirm_phrase",
    "device_name",
    "join",
    "say",
    "spoken_date",
    "spoken_duration",
    "spoken_number",
    "spoken_time",
    "state_phrase",
]

_TEXT: dict[str, dict[str, str]] = {
    "greeting": {
        "en": "Hello! I'm Denis. Ask me to switch a light, open the garage or check the "
              "temperature.",
        "es": "¡Hola! Soy Denis. Pídeme encender una luz, abrir el garaje o saber la temperatura.",
    },
    "help": {
        "en": 'I can switch lights on and off, dim them, open and close the garage door, lock '
              'and unlock the front door, set the thermostat, tell you the temperature, the '
              'time and the date, and run timers. Try: "turn on the kitchen light", "what is '
              'the temperature in the living room?", "set a timer for 5 minutes".',
        "es": "Puedo encender y apagar luces, regularlas, abrir y cerrar la puerta del garaje, "
              "cerrar y abrir la puerta principal, poner el termostato, decirte la temperatura, "
              "la hora y la fecha, y poner temporizadores. Prueba: «enciende la luz de la "
              "cocina», «¿qué temperatura hace en el salón?», «pon un temporizador de 5 minutos».",
    },
    "unknown": {
        "en": 'Sorry, I didn\'t understand that. Try "turn on the kitchen light", "what is the '
              'temperature in the living room?", "what time is it?" or "help".',
        "es": "Perdona, no lo he entendido. Prueba «enciende la luz de la cocina», «¿qué "
              "temperatura hace en el salón?», «¿qué hora es?» o «ayuda».",
    },
    "no_target": {
        "en": "Which device? I couldn't find one that matches in this home.",
        "es": "¿Qué dispositivo? No he encontrado ninguno que encaje en esta casa.",
    },
    "no_route": {
        "en": "I know what you mean, but I can't do that in this home yet.",
        "es": "Te entiendo, pero todavía no puedo hacer eso en esta casa.",
    },
    "not_allowed": {
        "en": "Sorry, you are not allowed to {action}.",
        "es": "Lo siento, no tienes permiso para {action}.",
    },
    "confirm_ask": {
        "en": "Do you want me to {action}? Say yes to confirm.",
        "es": "¿Quieres que {action}? Di sí para confirmar.",
    },
    "confirm_nothing": {
        "en": "There is nothing waiting for a confirmation.",
        "es": "No hay nada pendiente de confirmar.",
    },
    "denied": {"en": "OK, I won't {action}.", "es": "De acuerdo, no voy a {action}."},
    "deny_nothing": {"en": "OK.", "es": "De acuerdo."},
    "home_down": {
        "en": "I can't reach your home right now, so I couldn't {action}. Please try again "
              "in a moment.",
        "es": "Ahora mismo no puedo conectar con tu casa, así que no he podido {action}. "
              "Inténtalo de nuevo en un momento.",
    },
    "slow": {
        "en": "I've sent that ({action}), but the home hasn't confirmed it yet.",
        "es": "Lo he enviado ({action}), pero la casa aún no lo ha confirmado.",
    },
    "slow_read": {
        "en": "I couldn't get that in time; please ask again in a moment.",
        "es": "No he podido saberlo a tiempo; pregúntame de nuevo en un momento.",
    },
    "tool_failed": {
        "en": "Something went wrong while trying to {action}. It has been logged.",
        "es": "Algo ha fallado al intentar {action}. Ha quedado registrado.",
    },
    "cannot": {
        "en": "The {device} can't do that.",
        "es": "{device_cap} no admite eso.",
    },
    "done": {"en": "Done: {states}.", "es": "Hecho: {states}."},
    "state": {"en": "{states}.", "es": "{states}."},
    "state_yes": {"en": "Yes, {states}.", "es": "Sí, {states}."},
    "state_no": {"en": "No, {states}.", "es": "No, {states}."},
    "temperature": {"en": "It's {value} in the {place}.", "es": "En {place} hace {value}."},
    "temperature_plain": {"en": "It's {value}.", "es": "Hace {value}."},
    "set_temperature": {
        "en": "The {device} is set to {value}.",
        "es": "He puesto {device} a {value}.",
    },
    "time": {"en": "It's {time}.", "es": "Son las {time}."},
    "time_one": {"en": "It's {time}.", "es": "Es la {time}."},
    "date": {"en": "Today is {date}.", "es": "Hoy es {date}."},
    "timer_started": {
        "en": "Timer set for {duration}. Ask me how much time is left; I can't ring at the "
              "end yet.",
        "es": "Temporizador de {duration} en marcha. Pregúntame cuánto queda; aún no puedo "
              "avisarte al terminar.",
    },
    "timer_status": {"en": "Time left: {timers}.", "es": "Queda: {timers}."},
    "timer_none": {
        "en": "You have no timers running.",
        "es": "No tienes temporizadores en marcha.",
    },
    "timer_cancelled": {
        "en": "Cancelled {count} timer(s).",
        "es": "He cancelado {count} temporizador(es).",
    },
    "busy": {
        "en": "I can't do that right now; please try again in a moment.",
        "es": "Ahora mismo no puedo hacerlo; inténtalo de nuevo en un momento.",
    },
}  # fmt: skip

_ACTIONS: dict[str, dict[str, str]] = {
    "turn_on": {"en": "turn on the {device}", "es": "encender {device}"},
    "turn_off": {"en": "turn off the {device}", "es": "apagar {device}"},
    "set_brightness": {"en": "set the {device} to {brightness} %",
                       "es": "poner {device} al {brightness} %"},
    "set_temperature": {"en": "set the {device} to {temperature}",
                        "es": "poner {device} a {temperature}"},
    "open": {"en": "open the {device}", "es": "abrir {device}"},
    "close": {"en": "close the {device}", "es": "cerrar {device}"},
    "lock": {"en": "lock the {device}", "es": "cerrar con llave {device}"},
    "unlock": {"en": "unlock the {device}", "es": "abrir {device}"},
    "read": {"en": "check the {device}", "es": "consultar {device}"},
    "timer": {"en": "handle the timer", "es": "gestionar el temporizador"},
}  # fmt: skip
_ACTIONS_ES_CONFIRM = {"unlock": "abra {device}", "lock": "cierre con llave {device}"}

# Spanish state words by domain: (feminine, masculine) handled by the noun of the name.
_STATE_WORDS: dict[str, dict[str, str]] = {
    "on": {"en": "on", "es": "encendid{a}"},
    "off": {"en": "off", "es": "apagad{a}"},
    "open": {"en": "open", "es": "abiert{a}"},
    "opening": {"en": "opening", "es": "abriéndose"},
    "closed": {"en": "closed", "es": "cerrad{a}"},
    "closing": {"en": "closing", "es": "cerrándose"},
    "locked": {"en": "locked", "es": "cerrad{a} con llave"},
    "unlocked": {"en": "unlocked", "es": "abiert{a}"},
    "heat": {"en": "heating", "es": "calentando"},
    "cool": {"en": "cooling", "es": "enfriando"},
    "auto": {"en": "on automatic", "es": "en automático"},
    "unavailable": {"en": "unavailable", "es": "no disponible"},
    "unknown": {"en": "in an unknown state", "es": "en un estado desconocido"},
}
_FEMININE_ES = ("luz", "luces", "puerta", "lámpara", "persiana", "cerradura", "calefacción")


def say(key: str, lang: str, **values: Any) -> str:
    text = _TEXT[key].get(lang) or _TEXT[key]["en"]
    return text.format(**values)


def device_name(device: Device, lang: str) -> str:
    if lang == "es" and device.aliases:
        return device.aliases[0]
    return _in_sentence(device.name) if lang == "en" else device.name


def _in_sentence(name: str) -> str:
    """ "Bed Light" → "bed light", as it reads after "the"; acronyms ("TV") stay."""
    return " ".join(w if w.isupper() and len(w) > 1 else w.lower() for w in name.split())


def area_name(area: Area, lang: str) -> str:
    if lang == "es":
        return f"el {area.aliases[0]}" if area.aliases else area.name
    return _in_sentence(area.name)


_PLURAL_WORDS = frozenset({"lights", "lamps", "blinds", "luces", "lámparas", "persianas"})


def _plural(name: str) -> bool:
    return any(word in _PLURAL_WORDS for word in name.casefold().split())


def _es_article(name: str) -> str:
    first = name.split(" ", 1)[0].casefold()
    feminine = first in _FEMININE_ES
    if _plural(name):
        return "las" if feminine else "los"
    return "la" if feminine else "el"


def _device_names(devices: list[Device], lang: str) -> str:
    """The devices' names joined, as they read after a verb ("la luz de la cocina")."""
    names = [device_name(d, lang) for d in devices]
    if lang == "es":
        names = [f"{_es_article(n)} {n}" for n in names]
    return join(names, lang)


def action_phrase(action: str, devices: list[Device], lang: str, data: dict[str, Any]) -> str:
    values = {
        "device": _device_names(devices, lang),
        **{k: spoken_number(v, lang) for k, v in data.items()},
    }
    if "temperature" in data:
        values["temperature"] = f"{spoken_number(data['temperature'], lang)} °C"
    template = _ACTIONS.get(action, _ACTIONS["read"])
    return (template.get(lang) or template["en"]).format(**values)


def confirm_phrase(action: str, devices: list[Device], lang: str) -> str:
    if lang == "es" and action in _ACTIONS_ES_CONFIRM:
        return _ACTIONS_ES_CONFIRM[action].format(device=_device_names(devices, "es"))
    return action_phrase(action, devices, lang, {})


def state_phrase(device: Device, state: dict[str, Any], lang: str) -> str:
    """ "the kitchen light is on (50 %)" / "la luz de la cocina está encendida (50 %)"."""
    value = str(state.get("state", "unknown"))
    attributes = state.get("attributes") or {}
    name = device_name(device, lang)
    if device.domain == "sensor":
        unit = attributes.get("unit_of_measurement", "")
        reading = f"{spoken_number(value, lang)} {unit}".strip()
        return f"{name}: {reading}"
    word = _STATE_WORDS.get(value, {"en": value, "es": value})
    if lang == "es":
        plural = _plural(name)
        feminine = _es_article(name) in ("la", "las")
        ending = ("as" if plural else "a") if feminine else ("os" if plural else "o")
        verb = "están" if plural else "está"
        text = f"{_es_article(name)} {name} {verb} {word['es'].format(a=ending)}"
    else:
        text = f"the {name} {'are' if _plural(name) else 'is'} {word['en']}"
    brightness = attributes.get("brightness")
    if device.domain == "light" and value == "on" and brightness is not None:
        text += f" ({spoken_number(brightness, lang)} %)"
    if device.domain == "climate" and attributes.get("temperature") is not None:
        target = spoken_number(attributes["temperature"], lang)
        text += f" ({'set to' if lang == 'en' else 'a'} {target} °C)"
    return text


def spoken_number(value: Any, lang: str) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    text = str(int(number)) if number.is_integer() else f"{number:.1f}"
    return text.replace(".", ",") if lang == "es" else text


def spoken_time(now: dt.datetime, lang: str) -> tuple[str, bool]:
    """The time as said in ``lang``, and whether Spanish says "es la" (one o'clock)."""
    if lang == "es":
        return f"{now.hour}:{now.minute:02d}", now.hour in (1, 13)
    hour = now.hour % 12 or 12
    return f"{hour}:{now.minute:02d} {'AM' if now.hour < 12 else 'PM'}", False


def spoken_duration(seconds: int, lang: str) -> str:
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    units = {
        "en": (("hour", "hours"), ("minute", "minutes"), ("second", "seconds")),
        "es": (("hora", "horas"), ("minuto", "minutos"), ("segundo", "segundos")),
    }[lang if lang == "es" else "en"]
    parts = [
        f"{n} {unit[0] if n == 1 else unit[1]}"
        for n, unit in zip((hours, minutes, secs), units, strict=True)
        if n
    ]
    return join(parts or [f"0 {units[2][1]}"], lang)


def join(parts: list[str], lang: str) -> str:
    """ "a, b and c" / "a, b y c"."""
    if len(parts) <= 1:
        return "".join(parts)
    conjunction = " y " if lang == "es" else " and "
    return ", ".join(parts[:-1]) + conjunction + parts[-1]
