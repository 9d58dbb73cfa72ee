"""``POST /telemetry``: the web app's batches become histograms and the ``telemetry.latency``
and ``voice.latency`` signals; bad batches get the standard error bodies; nothing the page sent
is logged verbatim."""

from __future__ import annotations

import json
from typing import Any

import pytest
import structlog
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from denis.api.telemetry import MAX_BATCH_BYTES, MAX_EVENTS
from probes import assert_error, signal_count, status

AT = 1_712_345_678_901


def metric(client: TestClient, auth: dict[str, str], name: str, **labels: str) -> float:
    response = client.get("/metrics", headers=auth)
    assert response.status_code == 200
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    raise AssertionError(f"no {name} {labels}")


def recent(client: TestClient, auth: dict[str, str], name: str) -> list[dict[str, Any]]:
    return [s for s in status(client, auth)["signals"] if s["signal"] == name]


def post(client: TestClient, auth: dict[str, str], *events: dict[str, Any]):
    return client.post("/telemetry", json={"events": list(events)}, headers=auth)


def rtt(ms: float) -> dict[str, Any]:
    return {"type": "rtt", "at": AT, "value": ms}


def voice(ms: float) -> dict[str, Any]:
    return {"type": "voice", "at": AT, "value": ms}


def test_a_batch_is_accepted_and_measured(make_client, auth) -> None:
    client = make_client()
    response = post(
        client,
        auth,
        rtt(120),
        rtt(80.5),
        {"type": "reconnect", "at": AT, "value": 1000, "detail": "attempt 2"},
        {"type": "error", "at": AT, "detail": "the reply could not be shown"},
        {"type": "ws_state", "at": AT, "detail": "http"},
        voice(900),
        {"type": "future_kind", "at": AT, "extra": "ignored"},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 7}
    assert metric(client, auth, "denis_client_rtt_seconds_count") == 2
    assert metric(client, auth, "denis_client_rtt_seconds_sum") == pytest.approx(0.2005)
    assert metric(client, auth, "denis_voice_latency_seconds_count") == 1
    assert metric(client, auth, "denis_voice_latency_seconds_bucket", le="1.0") == 1
    assert signal_count(client, auth, "telemetry.latency") == 0
    assert signal_count(client, auth, "voice.latency") == 0
    assert post(client, auth).json() == {"accepted": 0}


def test_slow_round_trips_count_once_per_batch_and_log_once_per_slow_spell(
    make_client, auth
) -> None:
    client = make_client()
    assert post(client, auth, rtt(6000), rtt(100), rtt(7200.4)).status_code == 200
    assert signal_count(client, auth, "telemetry.latency") == 1  # once for the batch
    [slow] = recent(client, auth, "telemetry.latency")
    assert slow["fields"] == {"user": "alice", "slow": 2, "of": 3, "max_ms": 7201}

    assert post(client, auth, rtt(9000)).status_code == 200  # still slow
    assert signal_count(client, auth, "telemetry.latency") == 2
    assert len(recent(client, auth, "telemetry.latency")) == 1  # no new log line

    assert post(client, auth, {"type": "reconnect", "at": AT}).status_code == 200  # no rtt
    assert post(client, auth, rtt(5000)).status_code == 200  # at the threshold is not slow
    assert signal_count(client, auth, "telemetry.latency") == 2
    [recovered] = recent(client, auth, "dependency.recovered")
    assert recovered["fields"] == {"dependency": "telemetry.latency", "user": "alice"}

    assert post(client, auth, rtt(5001)).status_code == 200  # slow again: a new spell
    assert signal_count(client, auth, "telemetry.latency") == 3
    assert len(recent(client, auth, "telemetry.latency")) == 2
    assert metric(client, auth, "denis_client_rtt_seconds_count") == 6


def test_slow_voice_counts_voice_latency(make_client, auth) -> None:
    client = make_client()
    assert post(client, auth, voice(2999), voice(3500), rtt(50)).status_code == 200
    assert signal_count(client, auth, "voice.latency") == 1
    assert signal_count(client, auth, "telemetry.latency") == 0
    [slow] = recent(client, auth, "voice.latency")
    assert slow["fields"] == {"user": "alice", "slow": 1, "of": 2, "max_ms": 3500}
    assert metric(client, auth, "denis_voice_latency_seconds_count") == 2
    assert metric(client, auth, "denis_voice_latency_seconds_bucket", le="3.0") == 1


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-token"),
        pytest.param({"Authorization": "Bearer denis_" + "A" * 43}, id="unknown-token"),
        pytest.param({"Authorization": "Basic abc"}, id="not-bearer"),
    ],
)
def test_telemetry_needs_a_token(make_client, auth, headers: dict[str, str]) -> None:
    client = make_client()
    response = client.post("/telemetry", json={"events": [rtt(9000)]}, headers=headers)
    assert_error(response, 401, "unauthorized")
    assert signal_count(client, auth, "telemetry.latency") == 0


def test_a_batch_too_big_is_413(make_client, auth) -> None:
    client = make_client()
    too_many = {"events": [rtt(10)] * (MAX_EVENTS + 1)}
    assert_error(client.post("/telemetry", json=too_many, headers=auth), 413, "too_large")
    assert post(client, auth, *[rtt(10)] * MAX_EVENTS).json() == {"accepted": MAX_EVENTS}

    big = json.dumps({"events": [{"type": "error", "at": AT, "detail": "x" * MAX_BATCH_BYTES}]})
    response = client.post(
        "/telemetry", content=big, headers={**auth, "Content-Type": "application/json"}
    )
    assert_error(response, 413, "too_large")
    assert metric(client, auth, "denis_client_rtt_seconds_count") == MAX_EVENTS


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"not json", id="not-json"),
        pytest.param(b"[]", id="array"),
        pytest.param(b'{"events": {}}', id="events-not-a-list"),
        pytest.param(b"{}", id="no-events"),
        pytest.param(b'{"events": [1]}', id="event-not-an-object"),
        pytest.param(b'{"events": [{"type": "rtt"}]}', id="no-at"),
        pytest.param(b'{"events": [{"at": 1}]}', id="no-type"),
        pytest.param(b'{"events": [{"type": "rtt", "at": 1, "value": -5}]}', id="negative"),
        pytest.param(b'{"events": [{"type": "rtt", "at": 1, "value": true}]}', id="bool"),
        pytest.param(b'{"events": [{"type": "rtt", "at": 1, "value": "5"}]}', id="string"),
        pytest.param(b'{"events": [{"type": "rtt", "at": 1, "value": NaN}]}', id="nan"),
        pytest.param(b'{"events": [{"type": "rtt", "at": 1, "value": 1e300}]}', id="huge"),
        pytest.param(b'{"events": [{"type": "<script>", "at": 1}]}', id="odd-type"),
        pytest.param(b'{"events": [{"type": "error", "at": 1, "detail": 5}]}', id="detail"),
        pytest.param(b'{"events": [{"type": "rtt", "at": 1}, "x"]}', id="one-bad-event"),
        pytest.param(b'{"events": [{"type": "rtt", "at": 1, "value": 1}] \xff}', id="utf8"),
    ],
)
def test_a_malformed_batch_is_422_and_nothing_is_counted(make_client, auth, body: bytes) -> None:
    client = make_client()
    response = client.post(
        "/telemetry", content=body, headers={**auth, "Content-Type": "application/json"}
    )
    assert_error(response, 422, "invalid_input")
    assert metric(client, auth, "denis_client_rtt_seconds_count") == 0


def test_a_long_detail_is_refused(make_client, auth) -> None:
    event = {"type": "error", "at": AT, "detail": "d" * 501}
    assert_error(post(make_client(), auth, event), 422, "invalid_input")


def test_nothing_the_page_sent_is_logged(make_client, auth, token) -> None:
    client = make_client()
    secret = "page-said-something-private"
    with structlog.testing.capture_logs() as logs:
        response = post(
            client,
            auth,
            {"type": "error", "at": AT, "detail": secret},
            {"type": "rtt", "at": AT, "value": 8000, "detail": secret},
            voice(4000),
        )
        assert response.status_code == 200
    assert {entry["event"] for entry in logs} >= {"telemetry.latency", "voice.latency"}
    assert secret not in repr(logs)
    assert token not in repr(logs)
    assert secret not in client.get("/status", headers=auth).text
