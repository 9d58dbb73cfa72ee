"""What a test reads back from Denis: signal counters from ``/metrics``, ``/status``, and
crashes in a real process's log.

``signal_counts`` / ``signal_in`` parse a ``/metrics`` exposition however it was fetched (an
in-process ``TestClient``, a sync or async ``httpx`` client against a real process);
``signal_count`` and ``status`` fetch it from an in-process app; ``ws_authenticate`` opens
``WS /chat`` on a real process. A missing counter is an
``AssertionError`` naming it, never a silent zero.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from starlette.testclient import TestClient

    from servers import DenisProcess

SIGNAL_TOTAL = "denis_signal_total"


def signal_counts(metrics_text: str) -> dict[str, float]:
    """Every ``denis_signal_total`` sample in a ``/metrics`` exposition, by signal name."""
    return {
        sample.labels["signal"]: sample.value
        for family in text_string_to_metric_families(metrics_text)
        for sample in family.samples
        if sample.name == SIGNAL_TOTAL
    }


def signal_in(metrics_text: str, name: str) -> float:
    """The count of signal ``name``; fails when the exposition has no such counter."""
    counts = signal_counts(metrics_text)
    assert name in counts, f"no {SIGNAL_TOTAL}{{signal={name!r}}} in /metrics"
    return counts[name]


def signal_count(client: TestClient, auth: dict[str, str], name: str) -> float:
    response = client.get("/metrics", headers=auth)
    assert response.status_code == 200, response.text
    return signal_in(response.text, name)


def assert_error(response: Any, status: int, code: str) -> str:
    """An error answer as DESIGN.md specifies it: ``status``, the body exactly
    ``{"error": {"code": code, "detail": <a non-empty sentence>}}``, no traceback. Returns the
    detail."""
    assert response.status_code == status, response.text
    body = response.json()
    detail = body["error"]["detail"]
    assert body == {"error": {"code": code, "detail": detail}}
    assert isinstance(detail, str)
    assert detail
    assert "Traceback" not in response.text
    return detail


def ws_authenticate(ws: Any, token: str, timeout_s: float) -> dict[str, Any]:
    """The first frames of ``WS /chat`` on a real server (a ``websockets`` sync client):
    ``auth``, then ``auth_ok`` and ``ready`` (returned)."""
    ws.send(json.dumps({"type": "auth", "token": token}))
    assert json.loads(ws.recv(timeout=timeout_s))["type"] == "auth_ok"
    ready: dict[str, Any] = json.loads(ws.recv(timeout=timeout_s))
    assert ready["type"] == "ready", ready
    return ready


def status(client: TestClient, auth: dict[str, str]) -> dict[str, Any]:
    response = client.get("/status", headers=auth)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def log_size(proc: DenisProcess) -> int:
    """Characters logged so far: the ``offset`` for ``log_problems``."""
    return len(proc.log_path.read_text(encoding="utf-8", errors="replace"))


def log_problems(proc: DenisProcess, offset: int = 0) -> list[str]:
    """Log lines past ``offset`` that show a request crashed inside the server."""
    text = proc.log_path.read_text(encoding="utf-8", errors="replace")[offset:]
    return [
        line
        for line in text.splitlines()
        if "Traceback" in line or "unexpected_error" in line or "Exception in ASGI" in line
    ]
