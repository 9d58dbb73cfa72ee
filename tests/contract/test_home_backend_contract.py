"""One behaviour suite for both home backends: the demo home (SQLite in a temporary data dir) and
a real Home Assistant (``demo`` integration, one per session). The demo home is built with the
same entity ids as Home Assistant's demo, so the same tests read the same devices.

Then what only one of them has: the demo home survives a restart and two processes writing at
once; Home Assistant imports its areas and devices, and plays media or says clearly why not.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from denis.assistant.home import (
    DemoHome,
    HomeAssistant,
    HomeBackend,
    HomeCommandFailedError,
    HomeUnavailableError,
    UnknownDeviceError,
)
from denis.errors import InvalidInputError
from denis.graph.model import Device, HomeGraph
from denis.resilience import CircuitBreaker
from servers import HomeAssistantServer, ws_command

LIGHT, LOCK, COVER = "light.bed_light", "lock.front_door", "cover.garage_door"
CLIMATE, SENSOR = "climate.heatpump", "sensor.outside_temperature"
DEVICES = (
    Device(LIGHT, "Bed light", "bedroom", "light"),
    Device(LOCK, "Front door", None, "lock"),
    Device(COVER, "Garage door", None, "cover"),
    Device(CLIMATE, "Heat pump", None, "climate"),
    Device(SENSOR, "Outside temperature", None, "sensor"),
)
TIMEOUT_S = 5.0  # a demo lock takes 2 s to lock


@pytest.fixture(params=["demo", pytest.param("home_assistant", marks=pytest.mark.integration)])
def home(request: pytest.FixtureRequest, data_dir: Path) -> HomeBackend:
    if request.param == "demo":
        return DemoHome(data_dir, DEVICES)  # nothing to close: each call opens its own connection
    ha: HomeAssistant = request.getfixturevalue("ha")
    return ha


@pytest.fixture
def ha(home_assistant_session: HomeAssistantServer) -> Iterator[HomeAssistant]:
    backend = HomeAssistant(home_assistant_session.url, home_assistant_session.token, TIMEOUT_S)
    try:
        yield backend
    finally:
        backend.close()


# -- both backends ---------------------------------------------------------------------------


def test_a_light_turns_on_and_off_and_reads_back(home: HomeBackend) -> None:
    on = home.call(LIGHT, "turn_on", {})
    assert on.state == "on"
    assert on.attributes["brightness"] > 0
    assert home.get_state(LIGHT).state == "on"
    off = home.call(LIGHT, "turn_off", {})
    assert (off.state, off.attributes["brightness"]) == ("off", 0)
    assert home.get_state(LIGHT).state == "off"


def test_brightness_is_a_percentage_and_zero_is_off(home: HomeBackend) -> None:
    dimmed = home.call(LIGHT, "set_brightness", {"brightness": 40})
    assert (dimmed.state, dimmed.attributes["brightness"]) == ("on", 40)
    assert home.get_state(LIGHT).attributes["brightness"] == 40
    dark = home.call(LIGHT, "set_brightness", {"brightness": 0})
    assert (dark.state, dark.attributes["brightness"]) == ("off", 0)


def test_a_lock_locks_and_unlocks(home: HomeBackend) -> None:
    assert home.call(LOCK, "unlock", {}).state == "unlocked"
    assert home.get_state(LOCK).state == "unlocked"
    assert home.call(LOCK, "lock", {}).state == "locked"
    assert home.get_state(LOCK).state == "locked"


def test_a_cover_opens_and_closes(home: HomeBackend) -> None:
    assert home.call(COVER, "open", {}).state == "open"
    assert home.get_state(COVER).state == "open"
    assert home.call(COVER, "close", {}).state == "closed"
    assert home.get_state(COVER).state == "closed"


def test_a_thermostat_takes_a_target_temperature(home: HomeBackend) -> None:
    assert home.call(CLIMATE, "set_temperature", {"temperature": 23}).attributes[
        "temperature"
    ] == pytest.approx(23)
    state = home.get_state(CLIMATE)
    assert state.attributes["temperature"] == pytest.approx(23)
    assert isinstance(state.attributes["current_temperature"], int | float)
    home.call(CLIMATE, "set_temperature", {"temperature": 21})


def test_a_temperature_sensor_reads_as_a_number_in_celsius(home: HomeBackend) -> None:
    state = home.get_state(SENSOR)
    assert -50 < float(state.state) < 60  # a number, as text
    assert state.attributes["unit_of_measurement"] == "°C"


def test_an_unknown_entity_is_unknown_device(home: HomeBackend) -> None:
    with pytest.raises(UnknownDeviceError):
        home.get_state("light.nowhere")
    with pytest.raises(UnknownDeviceError):
        home.call("light.nowhere", "turn_on", {})
    with pytest.raises(UnknownDeviceError):  # not even an entity id (nor a way into other URLs)
        home.get_state("light.x/../../config")


@pytest.mark.parametrize(
    ("entity_id", "action", "data"),
    [
        (LOCK, "set_brightness", {"brightness": 50}),  # not a light
        (LIGHT, "lock", {}),  # not a lock
        (SENSOR, "turn_on", {}),  # a sensor only reads
        (COVER, "set_temperature", {"temperature": 20}),
        (LIGHT, "set_brightness", {"brightness": 150}),  # out of range
        (LIGHT, "set_brightness", {}),  # missing
        (CLIMATE, "set_temperature", {"temperature": 80}),  # out of the thermostat's range
        (LIGHT, "explode", {}),  # not an action at all
    ],
)
def test_an_action_that_does_not_fit_is_invalid_input_and_changes_nothing(
    home: HomeBackend, entity_id: str, action: str, data: dict[str, object]
) -> None:
    before = home.get_state(entity_id)
    with pytest.raises(InvalidInputError) as raised:
        home.call(entity_id, action, data)
    assert not isinstance(raised.value, UnknownDeviceError)
    assert raised.value.detail
    assert home.get_state(entity_id).state == before.state


# -- the demo home ---------------------------------------------------------------------------


def test_the_demo_home_is_seeded_from_its_devices(data_dir: Path) -> None:
    home = DemoHome(data_dir, DEVICES)
    light = home.get_state(LIGHT)
    assert (light.state, light.attributes["brightness"]) == ("off", 0)
    assert light.attributes["friendly_name"] == "Bed light"
    assert home.get_state(LOCK).state == "locked"
    assert home.get_state(COVER).state == "closed"
    assert home.get_state(CLIMATE).attributes["temperature"] == 21
    assert home.get_state(SENSOR).state == "21.5"


def test_the_demo_home_keeps_its_state_across_a_restart(data_dir: Path) -> None:
    DemoHome(data_dir, DEVICES).call(LIGHT, "set_brightness", {"brightness": 30})
    DemoHome(data_dir, DEVICES).call(LOCK, "unlock", {})
    added = Device("switch.kettle", "Kettle", "kitchen", "switch")
    again = DemoHome(data_dir, (*DEVICES, added))  # a device added since: seeded, others kept
    assert again.get_state(LIGHT).attributes["brightness"] == 30
    assert again.get_state(LOCK).state == "unlocked"
    assert again.get_state(added.id).state == "off"
    assert again.call(added.id, "turn_on", {}).state == "on"
    assert (data_dir / "demo_home.sqlite").is_file()


_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from denis.assistant.home import DemoHome
    from denis.graph.model import Device

    data_dir, me, rounds = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    lights = [Device(f"light.{who}_{n}", f"{who} {n}", None, "light")
              for who in ("a", "b") for n in range(5)]
    home = DemoHome(data_dir, [*lights, Device("lock.shared", "Shared", None, "lock")])
    for i in range(rounds):
        home.call(f"light.{me}_{i % 5}", "set_brightness", {"brightness": i % 100 + 1})
        home.call("lock.shared", "lock" if i % 2 else "unlock", {})
    print("done")
    """
)


def test_two_processes_writing_at_once_lose_nothing(data_dir: Path) -> None:
    rounds = 200
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(data_dir), me, str(rounds)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for me in ("a", "b")
    ]
    for writer in writers:
        out, err = writer.communicate(timeout=60)
        assert (writer.returncode, out.strip()) == (0, "done"), err[-2000:]
    lights = [Device(f"light.{who}_{n}", "", None, "light") for who in "ab" for n in range(5)]
    home = DemoHome(data_dir, [*lights, Device("lock.shared", "Shared", None, "lock")])
    for who in "ab":
        for n in range(5):
            last = max(i for i in range(rounds) if i % 5 == n)
            state = home.get_state(f"light.{who}_{n}")
            assert (state.state, state.attributes["brightness"]) == ("on", last % 100 + 1)
    assert home.get_state("lock.shared").state == "locked"  # both ended on an odd round


# -- Home Assistant only ---------------------------------------------------------------------


@pytest.mark.integration
def test_import_home_gives_areas_and_devices_usable_as_a_home(
    ha: HomeAssistant, home_assistant_session: HomeAssistantServer, data_dir: Path
) -> None:
    server = home_assistant_session
    ws_command(
        server.url,
        server.token,
        "config/entity_registry/update",
        entity_id=LIGHT,
        area_id="bedroom",
    )
    graph = ha.import_home()
    assert {(a.id, a.name) for a in graph.areas} >= {("bedroom", "Bedroom"), ("kitchen", "Kitchen")}
    devices = {d.id: d for d in graph.devices}
    assert devices[LIGHT] == Device(LIGHT, "Bed Light", "bedroom", "light")
    assert {LOCK, COVER, CLIMATE, SENSOR} <= devices.keys()
    assert {d.domain for d in graph.devices} <= {
        "light",
        "switch",
        "fan",
        "media_player",
        "cover",
        "lock",
        "climate",
        "sensor",
    }
    assert "sensor.outside_humidity" not in devices  # only temperatures among sensors
    assert not any(d.id.startswith(("weather.", "vacuum.")) for d in graph.devices)
    assert (graph.routes, graph.policies) == ((), ())
    assert HomeGraph.from_json(graph.to_json()) == graph
    # Usable as a home: the demo home can be built from what was imported.
    assert DemoHome(data_dir, graph.devices).get_state(LIGHT).state == "off"


@pytest.mark.integration
def test_play_media_plays_or_says_clearly_why_not(ha: HomeAssistant) -> None:
    breaker = CircuitBreaker("home", failure_threshold=2)
    ha.breaker = breaker
    ha.play_media("media_player.bedroom", "http://127.0.0.1:1/reply.mp3")
    assert ha.get_state("media_player.bedroom").state == "playing"
    for player in ("media_player.walkman", "media_player.browse", "media_player.walkman"):
        began = time.monotonic()  # they cannot play media: Home Assistant answers 500
        with pytest.raises(HomeCommandFailedError, match=rf"{player} could not play"):
            ha.play_media(player, "http://127.0.0.1:1/reply.mp3")
        assert time.monotonic() - began < TIMEOUT_S + 1  # did not hang
    assert breaker.state == "closed"  # a failed command is not an outage
    with pytest.raises(InvalidInputError, match="not a media player"):
        ha.play_media(LIGHT, "http://127.0.0.1:1/reply.mp3")


@pytest.mark.integration
def test_ping_and_a_rejected_token(
    ha: HomeAssistant, home_assistant_session: HomeAssistantServer
) -> None:
    ha.ping()
    wrong = HomeAssistant(home_assistant_session.url, "not-a-token", TIMEOUT_S)
    try:
        with pytest.raises(HomeUnavailableError, match="rejected the token"):
            wrong.ping()
        with pytest.raises(HomeUnavailableError, match="rejected the token"):
            wrong.get_state(LIGHT)
    finally:
        wrong.close()
