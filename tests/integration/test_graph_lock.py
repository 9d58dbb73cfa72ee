"""LadybugDB locks its files per process: a second Denis on the same embedded graph must still
start, in legacy mode, answering from the cache the first one wrote."""

from __future__ import annotations

import httpx
import pytest

from denis.graph import default_home
from servers import create_token

pytestmark = pytest.mark.integration


def test_a_second_process_on_a_locked_embedded_graph_starts_in_legacy_mode(
    denis_factory, data_dir
) -> None:
    token = create_token(data_dir, "alice")
    headers = {"Authorization": f"Bearer {token}"}
    env = {"DENIS_GRAPH_EMBEDDED_PATH": str(data_dir / "graph" / "db")}
    first = denis_factory(env=env)
    status = httpx.get(f"{first.url}/status", headers=headers, timeout=5).json()
    assert status["zones"]["graph"]["mode"] == "normal"

    second = denis_factory(env=env)  # the database is locked by the first process
    status = httpx.get(f"{second.url}/status", headers=headers, timeout=5).json()
    assert status["zones"]["graph"] == {
        "mode": "legacy",
        "store": "embedded",
        "cached_routes": len(default_home().routes),
    }
    reply = httpx.post(f"{second.url}/chat", json={"text": "hello"}, headers=headers, timeout=5)
    assert reply.status_code == 200
    assert "graph" in reply.json()["degraded"]
