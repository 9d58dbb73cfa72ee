"""The pure parts of the home backends: which service an action becomes, how Home Assistant's
states and areas read as Denis's, which action fits which device."""

from __future__ import annotations

import json

import pytest

from denis.assistant.home.actions import DOMAIN_ACTIONS, check_action
from denis.assistant.home.backend import HomeUnavailableError
from denis.assistant.home.ha import from_ha_state, service_for
from denis.assistant.home.ha_import import import_home
from denis.errors import InvalidInputError
from denis.graph.model import Area, Device


@pytest.mark.parametrize(("ha", "denis"), [(255, 100), (128, 50), (1, 1), (None, 0)])
def test_brightness_reads_as_a_percentage(ha: int | None, denis: int) -> None:
    raw = {"entity_id": "light.a", "state": "on", "attributes": {"brightness": ha, "effect": "x"}}
    state = from_ha_state(raw)
    assert state.attributes == {"brightness": denis}


def test_only_the_attributes_denis_reads_are_kept() -> None:
    attributes = {"temperature": 21, "current_temperature": 20, "hvac_modes": ["heat"]}
    state = from_ha_state({"entity_id": "climate.a", "state": "heat", "attributes": attributes})
    assert state.attributes == {"temperature": 21, "current_temperature": 20}


@pytest.mark.parametrize(
    ("entity_id", "action", "data", "path", "extra"),
    [
        ("light.a", "set_brightness", {"brightness": 40}, "light/turn_on", {"brightness_pct": 40}),
        ("switch.a", "turn_off", {}, "switch/turn_off", {}),
        ("cover.a", "open", {}, "cover/open_cover", {}),
        ("lock.a", "unlock", {}, "lock/unlock", {}),
        (
            "climate.a",
            "set_temperature",
            {"temperature": 22.5},
            "climate/set_temperature",
            {"temperature": 22.5},
        ),
    ],
)
def test_actions_become_home_assistant_services(
    entity_id: str, action: str, data: dict[str, object], path: str, extra: dict[str, object]
) -> None:
    checked = check_action(entity_id, action, data)
    assert service_for(entity_id, action, checked) == (path, {"entity_id": entity_id, **extra})


@pytest.mark.parametrize("value", [True, "40", float("nan"), -1, 101])
def test_brightness_must_be_a_number_from_0_to_100(value: object) -> None:
    with pytest.raises(InvalidInputError):
        check_action("light.a", "set_brightness", {"brightness": value})


def test_import_keeps_the_domains_denis_uses_and_temperature_sensors_only() -> None:
    states = [
        {"entity_id": "light.bed", "state": "off", "attributes": {"friendly_name": "Bed"}},
        {"entity_id": "sensor.out", "state": "15", "attributes": {"device_class": "temperature"}},
        {"entity_id": "sensor.hum", "state": "50", "attributes": {"unit_of_measurement": "%"}},
        {"entity_id": "vacuum.robo", "state": "docked", "attributes": {}},
        {"entity_id": "lock.front_door", "state": "locked", "attributes": {}},
        "not a state",
    ]
    areas = json.dumps([{"id": "bedroom", "name": "Bedroom", "entities": ["light.bed"]}])
    graph = import_home(states, areas, set(DOMAIN_ACTIONS))
    assert graph.areas == (Area("bedroom", "Bedroom"),)
    assert graph.devices == (
        Device("light.bed", "Bed", "bedroom", "light"),
        Device("lock.front_door", "front door", None, "lock"),
        Device("sensor.out", "out", None, "sensor"),
    )


def test_an_import_that_makes_no_sense_is_home_unavailable() -> None:
    with pytest.raises(HomeUnavailableError):
        import_home([], "<html>", set(DOMAIN_ACTIONS))
    with pytest.raises(HomeUnavailableError):
        import_home({"not": "a list"}, "[]", set(DOMAIN_ACTIONS))
