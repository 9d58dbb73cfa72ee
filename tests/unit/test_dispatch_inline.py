"""``POST /jobs`` on an in-process app with no worker at all: every job fails open and runs
inline, inside the request, and the edge rules (auth, hops, body, disk threshold) still hold.

No worker heartbeat exists in the test's data dir, so the monitor serves no queue and the
dispatcher never publishes: these tests need no broker and never wait on one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from denis.async_plane import JobLedger
from denis.async_plane.monitor import WORK_QUEUES
from denis.async_plane.queues import POLICIES, Queue
from probes import assert_error, signal_count

BACKGROUND = [q.value for q, policy in POLICIES.items() if policy.background and q in WORK_QUEUES]
FOREGROUND = [q.value for q, policy in POLICIES.items() if not policy.background]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def post_job(client: TestClient, token: str, body: Any, **headers: str):
    return client.post("/jobs", json=body, headers={**bearer(token), **headers})


def effects(data_dir: Path) -> list[dict[str, Any]]:
    path = data_dir / "effects.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def client(make_client) -> TestClient:
    return make_client()


# -- inline runs -------------------------------------------------------------------------------


@pytest.mark.parametrize("queue", [q for q in Queue if q is not Queue.DEAD_LETTER])
def test_with_no_worker_every_queue_runs_the_job_inline(client, admin_token, queue) -> None:
    response = post_job(client, admin_token, {"name": f"diag.echo.{queue}", "args": {"n": 7}})

    assert response.status_code == 200, response.text
    outcome = response.json()
    assert set(outcome) == {"key", "state", "queue", "inline", "result", "error"}
    assert (outcome["state"], outcome["queue"], outcome["inline"]) == ("done", queue, True)
    assert outcome["result"] == {"echo": {"n": 7}, "pid": os.getpid(), "hops": 1}
    assert outcome["error"] is None
    assert outcome["key"]  # a key is made up when the caller gives none


def test_the_caller_key_is_the_job_key_and_it_is_journaled(client, admin_token, data_dir) -> None:
    response = post_job(
        client, admin_token, {"name": "diag.echo.tools_ro", "args": {}, "key": "job:42.a-b"}
    )

    assert response.json()["key"] == "job:42.a-b"
    record = JobLedger(data_dir / "jobs.sqlite3").get("job:42.a-b")
    assert record is not None
    assert (record.name, record.queue, record.state, record.attempts) == (
        "diag.echo.tools_ro",
        "tools_ro",
        "done",
        1,
    )


def test_a_failing_job_is_answered_as_failed_not_as_a_server_error(
    client, admin_token, data_dir
) -> None:
    response = post_job(client, admin_token, {"name": "diag.fail", "args": {"message": "no"}})

    assert response.status_code == 200, response.text
    outcome = response.json()
    assert (outcome["state"], outcome["queue"], outcome["inline"]) == ("failed", "tools_mut", True)
    assert outcome["error"] == "RuntimeError: no"
    assert outcome["result"] is None
    # Inline is one attempt: failed, not retried and not dead-lettered.
    assert JobLedger(data_dir / "jobs.sqlite3").get(outcome["key"]).state == "failed"
    assert client.get("/admin/dlq", headers=bearer(admin_token)).json() == {"dead_letters": []}


def test_a_job_sent_without_waiting_is_answered_at_once_as_running_inline(
    client, admin_token
) -> None:
    response = post_job(client, admin_token, {"name": "diag.echo.tools_ro", "wait": False})

    assert response.status_code == 200, response.text
    outcome = response.json()
    assert (outcome["state"], outcome["inline"], outcome["result"]) == ("running", True, None)


def test_a_key_reused_runs_the_effect_once_and_answers_the_stored_result(
    client, admin_token, data_dir
) -> None:
    body = {"name": "diag.effect", "args": {"label": "lamp on"}, "key": "lamp-1"}
    first = post_job(client, admin_token, body)
    second = post_job(client, admin_token, {**body, "args": {"label": "something else"}})

    assert first.status_code == second.status_code == 200
    assert first.json()["state"] == "done"
    assert first.json()["result"] == {"effect": "done", "pid": os.getpid()}
    assert second.json() == first.json()
    assert effects(data_dir) == [
        {"key": "lamp-1", "label": "lamp on", "pid": os.getpid(), "inline": True}
    ]


# -- refusals at the edge -----------------------------------------------------------------------


def test_an_unknown_job_type_is_invalid_input_and_nothing_is_journaled(
    client, admin_token, data_dir
) -> None:
    response = post_job(client, admin_token, {"name": "diag.nope", "key": "k-unknown"})

    assert_error(response, 422, "invalid_input")
    assert JobLedger(data_dir / "jobs.sqlite3").get("k-unknown") is None


def test_a_user_token_is_forbidden_and_no_token_is_unauthorized(client, token, data_dir) -> None:
    body = {"name": "diag.effect", "key": "k-auth"}

    assert_error(post_job(client, token, body), 403, "forbidden")
    assert_error(client.post("/jobs", json=body), 401, "unauthorized")
    assert effects(data_dir) == []
    assert JobLedger(data_dir / "jobs.sqlite3").get("k-auth") is None


def test_the_hop_count_goes_up_by_one_for_the_job(client, admin_token) -> None:
    response = post_job(client, admin_token, {"name": "diag.echo.tools_ro"}, **{"X-Denis-Hop": "2"})

    assert response.status_code == 200, response.text
    assert response.json()["result"]["hops"] == 3


def test_a_job_that_would_leave_past_the_hop_limit_is_refused(
    client, admin_token, data_dir
) -> None:
    body = {"name": "diag.effect", "key": "k-hops"}

    response = post_job(client, admin_token, body, **{"X-Denis-Hop": "3"})

    assert_error(response, 508, "hop_limit")
    assert_error(post_job(client, admin_token, body, **{"X-Denis-Hop": "9"}), 508, "hop_limit")
    assert effects(data_dir) == []
    assert JobLedger(data_dir / "jobs.sqlite3").get("k-hops") is None


@pytest.mark.parametrize("hop", ["abc", "-1", "1.5", "123456789"])
def test_a_malformed_hop_header_is_invalid_input(client, admin_token, hop: str) -> None:
    response = post_job(client, admin_token, {"name": "diag.echo.tools_ro"}, **{"X-Denis-Hop": hop})
    assert_error(response, 422, "invalid_input")


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({}, id="no-name"),
        pytest.param({"name": ""}, id="empty-name"),
        pytest.param({"name": 5}, id="name-not-a-string"),
        pytest.param({"name": "diag.echo.tts", "args": [1, 2]}, id="args-not-an-object"),
        pytest.param({"name": "diag.echo.tts", "wait": "yes"}, id="wait-not-a-bool"),
        pytest.param({"name": "diag.echo.tts", "key": "has space"}, id="key-bad-chars"),
        pytest.param({"name": "diag.echo.tts", "key": "k" * 129}, id="key-too-long"),
        pytest.param({"name": "diag.echo.tts", "queue": "tools_mut"}, id="extra-field"),
        pytest.param(["diag.echo.tts"], id="not-an-object"),
    ],
)
def test_a_bad_body_is_invalid_input(client, admin_token, body: Any) -> None:
    assert_error(post_job(client, admin_token, body), 422, "invalid_input")


def test_a_body_that_is_not_json_is_invalid_input(client, admin_token) -> None:
    response = client.post(
        "/jobs",
        content=b"{not json",
        headers={**bearer(admin_token), "Content-Type": "application/json"},
    )
    assert_error(response, 422, "invalid_input")


# -- status without workers -------------------------------------------------------------------


def test_status_says_fail_open_with_no_worker(client, admin_token) -> None:
    status = client.get("/status", headers=bearer(admin_token)).json()

    zone = status["zones"]["async"]
    assert zone["mode"] == "fail_open"
    assert zone["broker"] == "filesystem"
    assert zone["broker_state"] == "up"
    assert zone["workers"] == dict.fromkeys(WORK_QUEUES, False)
    assert zone["background_paused"] is False
    assert isinstance(zone["disk_percent"], float)
    assert status["breakers"]["broker"] == "closed"
    assert status["queues"] == dict.fromkeys(WORK_QUEUES, 0)
    assert signal_count(client, bearer(admin_token), "celery.worker_down") == 1
    assert signal_count(client, bearer(admin_token), "celery.broker_down") == 0


# -- the disk threshold ---------------------------------------------------------------------------


def test_over_the_disk_threshold_background_work_is_refused_and_the_rest_works(
    make_client, admin_token, auth, data_dir
) -> None:
    client = make_client(queue_disk_max_percent=0)  # any disk is "full"

    for queue in BACKGROUND:
        key = f"k-{queue}"
        response = post_job(client, admin_token, {"name": f"diag.echo.{queue}", "key": key})
        assert_error(response, 503, "unavailable")
        assert int(response.headers["Retry-After"]) >= 1
        assert JobLedger(data_dir / "jobs.sqlite3").get(key) is None  # refused, not queued

    for queue in FOREGROUND:
        ran = post_job(client, admin_token, {"name": f"diag.echo.{queue}"})
        assert ran.status_code == 200, ran.text
        assert ran.json()["state"] == "done"
    chat = client.post("/chat", json={"text": "hello"}, headers=auth)
    assert chat.status_code == 200, chat.text
    assert chat.json()["reply"]

    zone = client.get("/status", headers=bearer(admin_token)).json()["zones"]["async"]
    assert zone["background_paused"] is True
    assert zone["disk_percent"] > 0
    # once, not per refusal
    assert signal_count(client, bearer(admin_token), "queue.disk_percent") == 1


def test_under_the_disk_threshold_background_work_runs(make_client, admin_token) -> None:
    client = make_client(queue_disk_max_percent=100)

    response = post_job(client, admin_token, {"name": "diag.echo.housekeeping"})

    assert response.status_code == 200, response.text
    assert response.json()["state"] == "done"
    assert signal_count(client, bearer(admin_token), "queue.disk_percent") == 0


# -- the dead letter endpoints --------------------------------------------------------------------


def test_dead_letter_endpoints_are_admin_only(client, token) -> None:
    for method, path in [
        ("GET", "/admin/dlq"),
        ("POST", "/admin/dlq/replay"),
        ("POST", "/admin/dlq/k/replay"),
        ("DELETE", "/admin/dlq"),
    ]:
        assert_error(client.request(method, path, headers=bearer(token)), 403, "forbidden")
        assert_error(client.request(method, path), 401, "unauthorized")


def test_a_dead_letter_can_be_listed_replayed_inline_and_purged(
    client, admin_token, data_dir
) -> None:
    ledger = JobLedger(data_dir / "jobs.sqlite3")
    for key in ("dl-1", "dl-2"):
        ledger.journal(key, "diag.echo.tools_ro", "tools_ro", {"n": key}, 1)
        ledger.bury(key, "RuntimeError: boom")

    letters = client.get("/admin/dlq", headers=bearer(admin_token)).json()["dead_letters"]
    assert [(x["key"], x["name"], x["queue"], x["args"], x["error"]) for x in letters] == [
        ("dl-1", "diag.echo.tools_ro", "tools_ro", {"n": "dl-1"}, "RuntimeError: boom"),
        ("dl-2", "diag.echo.tools_ro", "tools_ro", {"n": "dl-2"}, "RuntimeError: boom"),
    ]

    replayed = client.post("/admin/dlq/dl-1/replay", headers=bearer(admin_token))
    assert replayed.status_code == 200, replayed.text
    assert replayed.json() == {"replayed": [{"key": "dl-1", "state": "running", "inline": True}]}
    assert_error(
        client.post("/admin/dlq/dl-1/replay", headers=bearer(admin_token)), 404, "not_found"
    )

    purged = client.delete("/admin/dlq", headers=bearer(admin_token))
    assert purged.json() == {"purged": 1}
    assert client.get("/admin/dlq", headers=bearer(admin_token)).json() == {"dead_letters": []}
