"""Which action fits which kind of device, and what data it needs: one table both backends check
before they touch anything, so the demo home and Home Assistant refuse the same things the same
way (``InvalidInputError`` with a message that names the device and the action).
"""

from __future__ import annotations

import math
from typing import Any

from denis.assistant.home.backend import ACTIONS
from denis.errors import InvalidInputError

__all__ = ["DOMAIN_ACTIONS", "check_action", "domain_of"]

# The domains Denis's tools use, and what each can be asked to do. A sensor only reads.
DOMAIN_ACTIONS: dict[str, frozenset[str]] = {
    "light": frozenset({"turn_on", "turn_off", "set_brightness"}),
    "switch": frozenset({"turn_on", "turn_off"}),
    "fan": frozenset({"turn_on", "turn_off"}),
    "media_player": frozenset({"turn_on", "turn_off"}),
    "cover": frozenset({"open", "close"}),
    "lock": frozenset({"lock", "unlock"}),
    "climate": frozenset({"set_temperature"}),
    "sensor": frozenset(),
}

MIN_TEMPERATURE = 5.0
MAX_TEMPERATURE = 35.0


def domain_of(entity_id: str) -> str:
    return entity_id.partition(".")[0]


def check_action(entity_id: str, action: str, data: dict[str, Any]) -> dict[str, Any]:
    """Validate ``action`` on ``entity_id`` and return the data it needs, normalised
    (``brightness`` an int 0-100, ``temperature`` a float); raise ``InvalidInputError``."""
    if action not in ACTIONS:
        raise InvalidInputError(f"unknown action {action!r}")
    domain = domain_of(entity_id)
    if action not in DOMAIN_ACTIONS.get(domain, frozenset()):
        raise InvalidInputError(f"{entity_id} ({domain}) cannot {action.replace('_', ' ')}")
    if action == "set_brightness":
        return {"brightness": _number(data, "brightness", 0, 100, integer=True)}
    if action == "set_temperature":
        return {"temperature": _number(data, "temperature", MIN_TEMPERATURE, MAX_TEMPERATURE)}
    return {}


def _number(
    data: dict[str, Any], key: str, low: float, high: float, *, integer: bool = False
) -> Any:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInputError(f"{key} must be a number from {low:g} to {high:g}")
    if not low <= value <= high:
        raise InvalidInputError(f"{key} must be from {low:g} to {high:g}, not {value:g}")
    return round(value) if integer else float(value)
