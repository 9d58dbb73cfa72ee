"""The assistant on a real Home Assistant, through ``POST /chat``: its devices imported into the
graph, commands carried out, and Home Assistant hung (SIGSTOP) or dead (SIGKILL) answered
honestly within the request's deadline, behind the ``home_assistant`` breaker on ``/status``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

import httpx
import pytest

from servers import HomeAssistantServer

CHAT_TIMEOUT_S = 4.0
HA_TIMEOUT_S = 1.0
BED_LIGHT = "light.bed_light"  # "Bed Light" in Home Assistant's demo


def chat(client, auth, text: str) -> tuple[dict[str, Any], float]:
    began = time.monotonic()
    response = client.post("/chat", json={"text": text, "session_id": "ha"}, headers=auth)
    took = time.monotonic() - began
    assert response.status_code == 200, response.text
    return response.json(), took


def ha_entity(server: HomeAssistantServer, entity_id: str) -> dict[str, Any]:
    """Home Assistant's own state object for ``entity_id`` (``state``, ``attributes``)."""
    response = httpx.get(
        f"{server.url}/api/states/{entity_id}",
        headers={"Authorization": f"Bearer {server.token}"},
        timeout=10,
    )
    response.raise_for_status()
    entity: dict[str, Any] = response.json()
    return entity


def ha_state(server: HomeAssistantServer, entity_id: str) -> str:
    return str(ha_entity(server, entity_id)["state"])


def ha_client(make_client, server: HomeAssistantServer, **settings: Any):
    client = make_client(
        ha_url=server.url,
        ha_token=server.token,
        ha_timeout_s=HA_TIMEOUT_S,
        chat_timeout_s=CHAT_TIMEOUT_S,
        tts_command="/nonexistent/tts",  # voice is not what these tests are about
        **settings,
    )
    resolver = client.app.state.services.graph.resolver
    deadline = time.monotonic() + 30
    while not any(d.id == BED_LIGHT for d in resolver.cache.home.devices):
        assert time.monotonic() < deadline, "Home Assistant's devices were not imported"
        time.sleep(0.1)
    return client


@pytest.mark.integration
def test_commands_and_questions_reach_a_real_home_assistant(
    make_client, auth, home_assistant_session
) -> None:
    client = ha_client(make_client, home_assistant_session)
    reply, _ = chat(client, auth, "turn on the bed light")
    assert reply["reply"].startswith("Done: the bed light is on"), reply
    assert ha_state(home_assistant_session, BED_LIGHT) == "on"
    reply, _ = chat(client, auth, "turn off the bed light")
    assert reply["reply"] == "Done: the bed light is off."
    assert ha_state(home_assistant_session, BED_LIGHT) == "off"
    reply, _ = chat(client, auth, "is the bed light on?")
    assert reply["reply"] == "No, the bed light is off."
    assert "home" not in reply["degraded"]


@pytest.mark.chaos
def test_home_assistant_hung_then_back(make_client, auth, home_assistant_factory) -> None:
    server = home_assistant_factory()
    client = ha_client(make_client, server, ha_breaker_threshold=2, ha_breaker_cooldown_s=1.0)
    server.pause()
    try:
        for _ in range(3):
            reply, took = chat(client, auth, "turn on the bed light")
            assert took < CHAT_TIMEOUT_S + 1, "answered within the request deadline"
            assert reply["reply"].startswith("I can't reach your home right now"), reply
            assert "home" in reply["degraded"]
        status = client.get("/status", headers=auth).json()
        assert status["breakers"]["home_assistant"] == "open"
        reply, took = chat(client, auth, "turn on the bed light")
        assert took < HA_TIMEOUT_S, "the open breaker answers without waiting on Home Assistant"
        assert chat(client, auth, "what time is it?")[0]["reply"].startswith("It's ")
    finally:
        server.resume()
    time.sleep(1.2)  # the breaker's cool-down: the next command is its half-open probe
    reply, _ = chat(client, auth, "turn on the bed light")
    assert reply["reply"].startswith("Done: the bed light is on"), reply
    assert client.get("/status", headers=auth).json()["breakers"]["home_assistant"] == "closed"


@pytest.mark.chaos
def test_home_assistant_killed(make_client, auth, home_assistant_factory) -> None:
    server = home_assistant_factory()
    client = ha_client(make_client, server)
    server.kill()
    reply, took = chat(client, auth, "turn off the bed light")
    assert took < HA_TIMEOUT_S + 1
    assert reply["reply"].startswith("I can't reach your home right now"), reply
    assert "home" in reply["degraded"]


@pytest.mark.integration
@pytest.mark.parametrize("player", ["media_player.bedroom", "media_player.walkman"])
def test_a_spoken_reply_is_played_on_the_media_player(
    make_client, auth, home_assistant_session, data_dir, player
) -> None:
    plays = player == "media_player.bedroom"  # the walkman cannot play media: HA answers 500
    client = make_client(
        ha_url=home_assistant_session.url,
        ha_token=home_assistant_session.token,
        ha_media_player=player,
        public_url="http://127.0.0.1:8084",
    )
    reply, _ = chat(client, auth, "what time is it?")
    assert reply["audio_url"] is not None, reply
    assert reply["degraded"] == []  # playback never holds up or degrades the reply
    deadline = time.monotonic() + 20
    result = None
    while result is None and time.monotonic() < deadline:
        with sqlite3.connect(data_dir / "jobs.sqlite3") as conn:
            row = conn.execute(
                "SELECT result FROM jobs WHERE name = 'voice.play' AND state = 'done'"
            ).fetchone()
        result = json.loads(row[0]) if row else None
        time.sleep(0.1)
    assert result is not None, "the playback job ran"
    assert result["ok"] is plays
    if plays:
        played = ha_entity(home_assistant_session, player)["attributes"].get("media_content_id")
        assert played == "http://127.0.0.1:8084" + reply["audio_url"]
    else:
        assert "could not play" in result["detail"]
