"""The in-process app answers a turn end to end."""

from __future__ import annotations


def test_chat_round_trip(make_client, auth) -> None:
    client = make_client()
    response = client.post("/chat", json={"text": "what time is it?"}, headers=auth)
    assert response.status_code == 200
    body = response.json()
    assert body["intent"] == "HassGetCurrentTime"
    assert body["lang"] == "en"
    assert body["degraded"] == []
