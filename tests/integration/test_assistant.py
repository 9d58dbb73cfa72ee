"""The assistant end to end through ``POST /chat``, in process, on the embedded defaults.

Real parts throughout: the intent parser with Home Assistant's sentences, the embedded graph
(in memory) for routes and policies, the demo home's SQLite file, the async plane's inline
fallback (no worker here; ``test_assistant_processes.py`` has one), espeak-ng for voice, and a
local OpenAI-compatible server (``fake_llm``) where an LLM is configured.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import pytest

from denis.assistant.home.demo import DemoHome
from denis.graph import default_home
from denis.graph.model import Policy
from denis.resilience import Deadline, ManualClock, MonotonicClock
from probes import signal_count
from servers import create_token, free_port

pytestmark = pytest.mark.integration

KITCHEN = "light.kitchen"


def chat(client, auth, text: str, session: str = "s1", **extra: Any) -> dict[str, Any]:
    response = client.post(
        "/chat", json={"text": text, "session_id": session, **extra}, headers=auth
    )
    assert response.status_code == 200, response.text
    return response.json()


def state_of(data_dir: Path, entity_id: str) -> str:
    return DemoHome(data_dir, default_home().devices).get_state(entity_id).state


# -- the demo home --------------------------------------------------------------------------


def test_a_command_changes_the_demo_home_and_a_question_reads_it(
    make_client, auth, data_dir
) -> None:
    client = make_client()
    assert state_of(data_dir, KITCHEN) == "off"
    on = chat(client, auth, "turn on the kitchen light")
    assert on["intent"] == "HassTurnOn"
    assert on["reply"].startswith("Done: the kitchen light is on")
    assert state_of(data_dir, KITCHEN) == "on"
    asked = chat(client, auth, "is the kitchen light on?")
    assert asked["intent"] == "HassGetState"
    assert asked["reply"].startswith("Yes, the kitchen light is on")
    off = chat(client, auth, "apaga la luz de la cocina", lang="es")
    assert off["reply"] == "Hecho: la luz de la cocina está apagada."
    assert state_of(data_dir, KITCHEN) == "off"


def test_the_demo_home_survives_a_restart(make_client, auth, data_dir) -> None:
    first = make_client()
    chat(first, auth, "open the garage door")
    first.__exit__(None, None, None)  # the whole app stops, lifespan and all
    second = make_client()
    assert chat(second, auth, "is the garage door open?")["reply"] == (
        "Yes, the garage door is open."
    )


def test_spanish_questions_brightness_and_temperature(make_client, auth, data_dir) -> None:
    client = make_client()
    temperature = chat(client, auth, "¿qué temperatura hace en el salón?")
    assert (temperature["lang"], temperature["intent"]) == ("es", "HassClimateGetTemperature")
    assert temperature["reply"] == "En el salón hace 21,5 °C."
    dimmed = chat(client, auth, "set the kitchen light to 40%")
    assert dimmed["reply"] == "Done: the kitchen light is on (40 %)."
    demo = DemoHome(data_dir, default_home().devices)
    assert demo.get_state(KITCHEN).attributes["brightness"] == 40
    warmer = chat(client, auth, "set the temperature to 23 degrees")
    assert warmer["reply"] == "The thermostat is set to 23 °C."
    assert demo.get_state("climate.living_room").attributes["temperature"] == 23


def test_time_date_greeting_help_and_not_understood(make_client, auth) -> None:
    client = make_client()
    assert chat(client, auth, "what time is it?")["reply"].startswith("It's ")
    assert chat(client, auth, "¿qué día es hoy?")["reply"].startswith("Hoy es ")
    assert chat(client, auth, "hola")["intent"] == "DenisGreeting"
    assert "kitchen light" in chat(client, auth, "what can you do?")["reply"]
    unknown = chat(client, auth, "what is the capital of Mongolia?")
    assert unknown["intent"] == "unknown"
    assert "Try" in unknown["reply"]  # examples, not a shrug
    assert unknown["degraded"] == []  # no LLM configured: nothing is down


def test_timers_start_report_and_cancel(make_client, auth) -> None:
    client = make_client()
    assert chat(client, auth, "set a timer for 5 minutes")["reply"].startswith(
        "Timer set for 5 minutes."
    )
    assert "minutes" in chat(client, auth, "how much time is left on my timer?")["reply"]
    assert chat(client, auth, "cancel my timer")["reply"] == "Cancelled 1 timer(s)."
    assert chat(client, auth, "how much time is left on my timer?")["reply"] == (
        "You have no timers running."
    )


# -- conversations ----------------------------------------------------------------------------


def test_a_follow_up_reuses_the_last_intent_with_a_new_target(make_client, auth) -> None:
    client = make_client()
    chat(client, auth, "turn on the kitchen light")
    assert chat(client, auth, "is the kitchen light on?")["reply"].startswith("Yes")
    follow = chat(client, auth, "and in the bedroom?")
    assert follow["intent"] == "HassGetState"
    assert follow["reply"] == "No, the bedroom light is off."
    # another session has no history to follow up on
    assert chat(client, auth, "and in the bedroom?", session="other")["intent"] == "unknown"


def test_unlocking_waits_for_a_yes_from_the_same_user_and_session(
    make_client, auth, data_dir
) -> None:
    client = make_client()
    asked = chat(client, auth, "unlock the front door")
    assert asked["reply"] == "Do you want me to unlock the front door? Say yes to confirm."
    assert state_of(data_dir, "lock.front_door") == "locked"
    bob = {"Authorization": f"Bearer {create_token(data_dir, 'bob')}"}
    assert chat(client, bob, "yes")["reply"] == "There is nothing waiting for a confirmation."
    assert chat(client, auth, "yes", session="other")["intent"] == "DenisConfirm"
    assert state_of(data_dir, "lock.front_door") == "locked"
    done = chat(client, auth, "yes")
    assert done["reply"] == "Done: the front door is unlocked."
    assert state_of(data_dir, "lock.front_door") == "unlocked"
    # a second "yes" does not repeat anything
    assert chat(client, auth, "yes")["reply"] == "There is nothing waiting for a confirmation."


def test_a_no_or_another_request_drops_the_pending_unlock(make_client, auth, data_dir) -> None:
    client = make_client()
    chat(client, auth, "desbloquea la puerta principal", lang="es")
    assert chat(client, auth, "no", lang="es")["reply"] == (
        "De acuerdo, no voy a abrir la puerta principal."
    )
    chat(client, auth, "unlock the front door")
    chat(client, auth, "what time is it?")
    assert chat(client, auth, "yes")["reply"] == "There is nothing waiting for a confirmation."
    assert state_of(data_dir, "lock.front_door") == "locked"


def test_a_confirmation_expires(make_client, auth, data_dir) -> None:
    clock = ManualClock()
    client = make_client(app_kwargs={"clock": clock})
    chat(client, auth, "unlock the front door")
    clock.advance(61.0)
    assert chat(client, auth, "yes")["reply"] == "There is nothing waiting for a confirmation."
    assert state_of(data_dir, "lock.front_door") == "locked"


def test_policy_from_the_graph_refuses_a_user_it_does_not_name(make_client, auth, data_dir) -> None:
    client = make_client()
    home = default_home()
    only_root = Policy("only-root-opens-the-garage", "cover.open", ("root",))
    restricted = dataclasses.replace(home, policies=(*home.policies, only_root)).sorted()
    graph = client.app.state.services.graph
    assert client.portal.call(graph.resolver.load, restricted, Deadline.start(MonotonicClock(), 5))
    refused = chat(client, auth, "open the garage door")
    assert refused["reply"] == "Sorry, you are not allowed to open the garage door."
    assert state_of(data_dir, "cover.garage_door") == "closed"
    root = {"Authorization": f"Bearer {create_token(data_dir, 'root')}"}
    assert chat(client, root, "open the garage door")["reply"] == "Done: the garage door is open."


def test_the_decision_trace_names_the_tool(make_client, auth) -> None:
    client = make_client(trace_flush_s=0.1)
    reply = chat(client, auth, "turn on the kitchen light")
    graph = client.app.state.services.graph
    rows: list[Any] = []
    for _ in range(100):
        rows = client.portal.call(
            graph.resolver.store._read,
            "MATCH (t:DecisionTrace {trace_id: $id}) RETURN t.intent, t.tool, t.outcome",
            {"id": reply["trace_id"]},
            2.0,
        )
        if rows:
            break
        time.sleep(0.05)
    assert [list(r) for r in rows] == [["HassTurnOn", "device.turn_on", "ok"]]


# -- the LLM ----------------------------------------------------------------------------------


def test_the_llm_answers_what_intents_do_not_and_its_usage_settles_the_budget(
    make_client, auth, fake_llm
) -> None:
    fake_llm.reply = "Ulaanbaatar. " * 40  # long: counted by characters it would cost ~130
    client = make_client(
        llm_url=fake_llm.url,
        llm_model="tiny",
        budget_tokens_per_day=60,
        budget_reply_reserve_tokens=0,
    )
    first = chat(client, auth, "what is the capital of Mongolia?")
    assert (first["intent"], first["reply"].split()[0]) == ("llm", "Ulaanbaatar.")
    # usage said 18 tokens: a second turn fits in the budget of 60 (by length it would not)
    second = chat(client, auth, "and of Peru?")
    assert second["intent"] == "llm"
    sent = fake_llm.seen()[-1].body
    assert sent["model"] == "tiny"
    contents = [m["content"] for m in sent["messages"]]
    assert "what is the capital of Mongolia?" in contents, "the history goes with the question"
    # intents never reach the LLM
    chat(client, auth, "turn on the kitchen light")
    assert len(fake_llm.seen()) == 2
    statuses = [
        client.post("/chat", json={"text": "and of Chile?"}, headers=auth).status_code
        for _ in range(4)
    ]
    assert 403 in statuses, "the budget is spent by the LLM's usage"


@pytest.mark.parametrize("mode", ["failing", "hung", "malformed"])
def test_an_llm_that_fails_or_hangs_leaves_an_honest_answer_in_time(
    make_client, auth, fake_llm, mode
) -> None:
    fake_llm.mode = mode
    client = make_client(llm_url=fake_llm.url, chat_timeout_s=3.0, llm_timeout_s=30.0)
    started = time.monotonic()
    reply = chat(client, auth, "write me a poem about the sea")
    assert time.monotonic() - started < 3.0 + 1.0, "answered within the request deadline"
    assert reply["intent"] == "unknown"
    assert "llm" in reply["degraded"]
    # the intents still work while the LLM is down
    assert chat(client, auth, "turn on the kitchen light")["intent"] == "HassTurnOn"


# -- voice ----------------------------------------------------------------------------------


def test_a_reply_comes_with_its_audio(make_client, auth) -> None:
    client = make_client()
    reply = chat(client, auth, "what time is it?")
    assert reply["audio_url"] is not None
    audio = client.get(reply["audio_url"])
    assert audio.status_code == 200
    assert audio.content[:4] == b"RIFF"
    assert "voice" not in reply["degraded"]


def test_tts_missing_gives_the_text_without_audio(make_client, auth) -> None:
    client = make_client(tts_command="/nonexistent/espeak-ng")
    reply = chat(client, auth, "turn on the kitchen light")
    assert reply["reply"].startswith("Done:")
    assert reply["audio_url"] is None
    assert reply["degraded"] == ["voice"]
    assert signal_count(client, auth, "voice.latency") == 1


# -- Home Assistant unreachable ----------------------------------------------------------------


def test_home_assistant_refusing_is_an_honest_degraded_answer(make_client, auth) -> None:
    client = make_client(ha_url=f"http://127.0.0.1:{free_port()}", ha_token="t", ha_timeout_s=1.0)
    started = time.monotonic()
    reply = chat(client, auth, "turn on the kitchen light")
    assert time.monotonic() - started < 5.0
    assert reply["reply"].startswith("I can't reach your home right now")
    assert "home" in reply["degraded"]
    assert chat(client, auth, "what time is it?")["reply"].startswith("It's ")


def test_slow_tts_does_not_hold_the_text_reply(make_client, auth, tmp_path) -> None:
    slow = tmp_path / "slow-tts"
    slow.write_text('#!/bin/sh\nsleep 5\nexec espeak-ng "$@"\n')
    slow.chmod(0o755)
    client = make_client(tts_command=str(slow), tts_wait_s=0.5)
    started = time.monotonic()
    reply = chat(client, auth, "what time is it?")
    assert time.monotonic() - started < 0.5 + 1.5, "the text did not wait for the voice"
    assert reply["reply"].startswith("It's ")
    assert (reply["audio_url"], reply["degraded"]) == (None, ["voice"])
    assert signal_count(client, auth, "voice.latency") == 1


def test_with_the_graph_down_commands_resolve_from_the_legacy_cache(
    make_client, auth, data_dir
) -> None:
    first = make_client()  # the embedded graph fills the legacy cache in the data dir
    chat(first, auth, "what time is it?")
    first.__exit__(None, None, None)
    down = make_client(graph_url=f"bolt://127.0.0.1:{free_port()}", graph_query_timeout_s=0.5)
    reply = chat(down, auth, "turn on the bedroom light")
    assert reply["reply"] == "Done: the bedroom light is on (100 %)."
    assert "graph" in reply["degraded"]
    assert state_of(data_dir, "light.bedroom") == "on"
    asked = chat(down, auth, "unlock the front door")  # the cached policy still asks first
    assert asked["reply"].startswith("Do you want me to unlock the front door?")
