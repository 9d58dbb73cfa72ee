"""Turn what Home Assistant says about itself (all states, and its areas rendered by a template)
into Denis's ``HomeGraph``: areas, and the devices of the domains Denis's tools use.

``screen_names`` then checks every friendly name with the injection gate before the names can
reach an LLM prompt: a device whose name reads as an injection gets its entity id's name
instead, or is skipped if that too is flagged; an area falls back to its id. Logged once per
import, with entity ids only (never the name).

Routes and policies are not Home Assistant's business: the graph returned has none, and the
caller merges it with its default home's. Entities of other domains are skipped, and so are
sensors that are not temperatures (Denis's tools read temperatures only). Malformed answers are
``HomeUnavailableError`` (Home Assistant is the one not making sense).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import structlog

from denis.assistant.home.actions import domain_of
from denis.assistant.home.backend import HomeUnavailableError
from denis.graph.model import Area, Device, HomeGraph

__all__ = ["import_home", "screen_names"]

_log = structlog.get_logger("denis.assistant")

_TEMPERATURE_UNITS = frozenset({"°C", "°F", "K"})


def import_home(states: Any, areas_json: str, domains: set[str]) -> HomeGraph:
    """``states`` is ``GET /api/states``; ``areas_json`` the rendered areas template."""
    try:
        rendered = json.loads(areas_json)
        areas = [(str(a["id"]), str(a["name"]), [str(e) for e in a["entities"]]) for a in rendered]
    except (ValueError, TypeError, KeyError) as exc:
        raise HomeUnavailableError("Home Assistant's areas could not be read") from exc
    if not isinstance(states, list):
        raise HomeUnavailableError("Home Assistant's states could not be read")
    area_of = {entity: area_id for area_id, _, entities in areas for entity in entities}
    devices = []
    for raw in states:
        if not isinstance(raw, dict) or not isinstance(raw.get("entity_id"), str):
            continue
        entity_id: str = raw["entity_id"]
        attributes = raw.get("attributes") or {}
        if not _usable(entity_id, attributes, domains):
            continue
        name = str(attributes.get("friendly_name") or _id_name(entity_id))
        devices.append(Device(entity_id, name, area_of.get(entity_id), domain_of(entity_id)))
    return HomeGraph(
        areas=tuple(Area(area_id, name) for area_id, name, _ in areas),
        devices=tuple(sorted(devices, key=lambda d: d.id)),
    )


def _id_name(entity_id: str) -> str:
    """The name an entity id reads as: "light.bed_light" → "bed light"."""
    return entity_id.partition(".")[2].replace("_", " ")


def _usable(entity_id: str, attributes: dict[str, Any], domains: set[str]) -> bool:
    domain = domain_of(entity_id)
    if domain not in domains:
        return False
    if domain == "sensor":
        return (
            attributes.get("device_class") == "temperature"
            or attributes.get("unit_of_measurement") in _TEMPERATURE_UNITS
        )
    return True


def screen_names(home: HomeGraph, is_injection: Callable[[str], bool]) -> HomeGraph:
    """``home`` with every device and area name that ``is_injection`` flags renamed to its id's
    name, or (a device whose id is flagged too) left out."""
    devices, renamed, skipped = [], [], []
    for device in home.devices:
        if not is_injection(device.name):
            devices.append(device)
            continue
        fallback = _id_name(device.id)
        if fallback and not is_injection(fallback):
            devices.append(Device(device.id, fallback, device.area, device.domain, device.aliases))
            renamed.append(device.id)
        else:
            skipped.append(device.id)
    areas = []
    for area in home.areas:
        if is_injection(area.name):
            areas.append(Area(area.id, area.id.replace("_", " "), area.aliases))
            renamed.append(f"area:{area.id}")
        else:
            areas.append(area)
    if renamed or skipped:
        _log.warning("assistant.ha_names_screened", renamed=renamed, skipped=skipped)
    return HomeGraph(home.routes, home.policies, tuple(areas), tuple(devices))
