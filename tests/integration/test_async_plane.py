"""The async plane with real ``denis worker`` processes and a real API, on both brokers.

Every test runs twice: on kombu's ``filesystem://`` transport under the data dir (the embedded
default, ``DENIS_BROKER_URL`` unset) and on a real ``redis-server``. The API
(``python -m denis serve``) and the workers (``python -m denis worker``, prefork pool) share
one data dir, so they share the job ledger, the heartbeat files and, on the filesystem
transport, the queue folders. The workers are the groups ``denis up`` starts
(``denis.cli.UP_WORKERS``), started per test and never shared across tests.

What is proven here: jobs on every work queue run on the worker group that owns the queue
(the result's pid is a prefork child of that worker, not the API); ``tools_mut`` is not stuck
behind a ``housekeeping`` backlog; the hop count travels in the job's headers and a job
arriving over the limit is refused by the worker; a job that always fails lands in the dead
letter exactly once after its retries, and replay and the ``denis dlq`` CLI work; the soft
time limit stops a job on the prefork pool and the worker lives on; ``/status`` follows a
worker going away and coming back, counting ``celery.worker_down`` once.

Not covered: the hard time limit (a job that ignores its soft limit). Every diagnostic job
stops at the soft limit, and no job type that swallows ``SoftTimeLimitExceeded`` exists.

Timing: workers beat every 0.5 s; the API samples every 1 s and calls a worker gone after
3 s of silence, so a loaded machine does not fake a ``celery.worker_down`` (a stopped worker
removes its heartbeat file, so that is seen at the next sample anyway).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from denis.async_plane import JobLedger, default_registry, open_ledger
from denis.async_plane.celery_app import HOP_FIELD, RUN_TASK, make_celery
from denis.async_plane.monitor import WORK_QUEUES
from denis.async_plane.runner import JobRunner
from denis.cli import UP_WORKERS
from denis.settings import Settings
from probes import signal_counts
from servers import DenisProcess, DenisWorker, create_token

pytestmark = pytest.mark.integration

INTERACTIVE = UP_WORKERS[0]  # the worker groups exactly as `denis up` starts them
WORKER_ENV = {"DENIS_WORKER_HEARTBEAT_S": "0.5", "DENIS_JOB_RETRY_BACKOFF_S": "0.2"}
API_ENV = {"DENIS_WORKER_HEARTBEAT_S": "1", "DENIS_JOB_RETRY_BACKOFF_S": "0.2"}
WAIT_S = 20.0  # how long to poll for something that normally takes a second or two
SLEEPS = 6
SLEEP_S = 2.0


@dataclass(frozen=True, slots=True)
class Broker:
    name: str
    url: str | None

    def env(self) -> dict[str, str]:
        return {"DENIS_BROKER_URL": self.url} if self.url else {}


@pytest.fixture(params=["filesystem", "redis"])
def broker(request: pytest.FixtureRequest) -> Broker:
    if request.param == "redis":
        return Broker("redis", request.getfixturevalue("redis_server").url)
    return Broker("filesystem", None)


class Api:
    """A real API process and an admin client for it."""

    def __init__(self, proc: DenisProcess, token: str) -> None:
        self.proc = proc
        self.http = httpx.Client(
            base_url=proc.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )

    @property
    def pid(self) -> int:
        assert self.proc.proc is not None
        return self.proc.proc.pid

    def job(
        self,
        name: str,
        args: dict[str, Any] | None = None,
        *,
        key: str | None = None,
        wait: bool = True,
        hops: int | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name, "args": args or {}, "wait": wait}
        if key is not None:
            body["key"] = key
        headers = {} if hops is None else {"X-Denis-Hop": str(hops)}
        response = self.http.post("/jobs", json=body, headers=headers)
        assert response.status_code == 200, response.text
        outcome: dict[str, Any] = response.json()
        return outcome

    def status(self) -> dict[str, Any]:
        response = self.http.get("/status")
        assert response.status_code == 200, response.text
        status: dict[str, Any] = response.json()
        return status

    def signals(self) -> dict[str, float]:
        response = self.http.get("/metrics")
        assert response.status_code == 200, response.text
        return signal_counts(response.text)

    def dead_letters(self) -> list[dict[str, Any]]:
        response = self.http.get("/admin/dlq")
        assert response.status_code == 200, response.text
        letters: list[dict[str, Any]] = response.json()["dead_letters"]
        return letters


@pytest.fixture
def start_api(
    denis_factory: Callable[..., DenisProcess], data_dir: Path
) -> Iterator[Callable[..., Api]]:
    apis: list[Api] = []

    def start(env: dict[str, str]) -> Api:
        api = Api(denis_factory({**API_ENV, **env}), create_token(data_dir, "root", admin=True))
        apis.append(api)
        return api

    yield start
    for api in apis:
        api.http.close()


def start_workers(
    worker_factory: Callable[..., DenisWorker], env: dict[str, str], *, background: bool = True
) -> tuple[DenisWorker, DenisWorker | None]:
    """The worker groups of ``denis up``, started side by side (each waits for its heartbeat):
    the interactive one (``tools_mut,tools_ro``) and, unless not needed, the background one."""
    groups = UP_WORKERS if background else UP_WORKERS[:1]
    env = {**WORKER_ENV, **env}
    with ThreadPoolExecutor(len(groups)) as pool:
        futures = [
            pool.submit(worker_factory, queues, env, concurrency=concurrency, beat=beat)
            for queues, concurrency, beat in groups
        ]
        workers = [future.result() for future in futures]
    return workers[0], workers[1] if background else None


def consumes(worker: DenisWorker, queue: str) -> bool:
    return queue in worker.queues.split(",")


def eventually(check: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> Any:
    """Poll until ``check()`` is truthy; return its value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what} (last: {value!r})")
        time.sleep(0.1)


def children(worker: DenisWorker) -> set[int]:
    """The worker's prefork children (and beat process): every process whose parent it is."""
    assert worker.proc is not None
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == worker.proc.pid:
            found.add(int(stat.parent.name))
    return found


def effects(data_dir: Path, key: str) -> list[dict[str, Any]]:
    path = data_dir / "effects.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return [line for line in map(json.loads, lines) if line["key"] == key]


def letters_for(api: Api, key: str) -> list[dict[str, Any]]:
    return [letter for letter in api.dead_letters() if letter["key"] == key]


def assert_ran_on(outcome: dict[str, Any], worker: DenisWorker, api: Api) -> None:
    assert (outcome["state"], outcome["inline"]) == ("done", False), outcome
    pid = outcome["result"]["pid"]
    assert pid != api.pid
    assert pid in children(worker), (pid, children(worker))


def publish_raw(data_dir: Path, broker: Broker, name: str, key: str, hops: int) -> JobLedger:
    """Journal a job and publish it straight to the broker with a chosen hop header, as
    another Denis part would, bypassing the API's own hop check."""
    settings = Settings(data_dir=data_dir, broker_url=broker.url).async_plane
    ledger = open_ledger(settings)
    spec = default_registry().get(name)
    assert ledger.journal(key, name, spec.queue.value, {"label": key}, hops)
    app = make_celery(settings, JobRunner(default_registry(), ledger, data_dir, 60))
    try:
        app.send_task(
            RUN_TASK,
            args=(name, {"label": key}, key),
            queue=spec.queue.value,
            headers={HOP_FIELD: str(hops)},
            retry=False,
        )
    finally:
        app.close()
    return ledger


def run_cli(data_dir: Path, broker: Broker, *args: str) -> list[str]:
    env = {**os.environ, "DENIS_DATA_DIR": str(data_dir), "DENIS_LOG_LEVEL": "WARNING"}
    env.pop("DENIS_BROKER_URL", None)
    env.update(broker.env())
    done = subprocess.run(
        [sys.executable, "-m", "denis", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


# -- routing, priority, hops -------------------------------------------------------------------


def test_jobs_run_on_their_worker_and_tools_mut_is_not_stuck_behind_a_backlog(
    broker: Broker, worker_factory, start_api, data_dir: Path
) -> None:
    interactive, background = start_workers(worker_factory, broker.env())
    assert background is not None
    api = start_api(broker.env())
    eventually(lambda: api.status()["zones"]["async"]["mode"] == "normal", "async mode normal")

    # Every work queue runs on the worker group that owns it.
    for queue in WORK_QUEUES:
        outcome = api.job(f"diag.echo.{queue}", {"queue": queue})
        assert outcome["queue"] == queue
        assert outcome["result"]["echo"] == {"queue": queue}
        owner = interactive if consumes(interactive, queue) else background
        assert_ran_on(outcome, owner, api)

    # A backlog of slow housekeeping keeps the background worker busy for SLEEPS * SLEEP_S...
    sleeps = [f"sleep-{i}" for i in range(SLEEPS)]
    for key in sleeps:
        queued = api.job("diag.sleep.housekeeping", {"seconds": SLEEP_S}, key=key, wait=False)
        assert (queued["state"], queued["inline"]) == ("queued", False)
    # ... and a device command still runs at once, on the interactive worker.
    urgent = api.job("diag.effect", {"label": "lamp on"}, key="urgent")
    ledger = JobLedger(data_dir / "jobs.sqlite3")
    states = [ledger.get(key).state for key in sleeps]  # type: ignore[union-attr]

    assert_ran_on(urgent, interactive, api)
    assert states.count("done") < SLEEPS, states
    assert states.count("pending") >= 1, states  # some were not even started yet
    assert effects(data_dir, "urgent") == [
        {"key": "urgent", "label": "lamp on", "pid": urgent["result"]["pid"], "inline": False}
    ]
    eventually(lambda: api.status()["queues"]["housekeeping"] > 0, "/status shows the backlog", 5)


def test_the_hop_count_travels_in_job_headers_and_the_worker_refuses_over_the_limit(
    broker: Broker, worker_factory, start_api, data_dir: Path
) -> None:
    interactive, _ = start_workers(worker_factory, broker.env(), background=False)
    api = start_api(broker.env())
    eventually(lambda: api.status()["zones"]["async"]["mode"] == "normal", "async mode normal")

    from_outside = api.job("diag.echo.tools_ro")
    second_hop = api.job("diag.echo.tools_ro", hops=2)

    assert_ran_on(from_outside, interactive, api)
    assert from_outside["result"]["hops"] == 1
    assert_ran_on(second_hop, interactive, api)
    assert second_hop["result"]["hops"] == 3

    # A message arriving at the worker with 4 hops (over MAX_HOPS = 3) is refused unrun.
    before = api.signals()["celery.task.failed"]
    ledger = publish_raw(data_dir, broker, "diag.effect", "over-the-limit", hops=4)
    record = eventually(
        lambda: (r := ledger.get("over-the-limit")) is not None and r.state != "pending" and r,
        "the worker answers the over-the-limit job",
    )
    assert (record.state, record.attempts) == ("failed", 0)
    assert record.error.startswith("refused: 4 hops")
    assert effects(data_dir, "over-the-limit") == []
    eventually(lambda: api.signals()["celery.task.failed"] == before + 1, "task.failed counted")
    assert letters_for(api, "over-the-limit") == []  # refused, not retried into the dead letter
    assert_ran_on(api.job("diag.echo.tools_mut"), interactive, api)  # and the worker goes on


# -- retries, dead letter, replay, CLI -----------------------------------------------------------


def test_a_job_that_always_fails_lands_in_the_dead_letter_once_and_can_be_replayed(
    broker: Broker, worker_factory, start_api, data_dir: Path
) -> None:
    start_workers(worker_factory, broker.env(), background=False)
    api = start_api(broker.env())
    eventually(lambda: api.status()["zones"]["async"]["mode"] == "normal", "async mode normal")

    failed = api.job("diag.fail", {"message": "boom", "n": 1}, key="always-fails")
    assert (failed["state"], failed["inline"], failed["queue"]) == ("dead", False, "tools_mut")

    letters = eventually(lambda: letters_for(api, "always-fails"), "the dead letter")
    assert len(letters) == 1
    letter = letters[0]
    assert (letter["name"], letter["queue"], letter["args"]) == (
        "diag.fail",
        "tools_mut",
        {"message": "boom", "n": 1},
    )
    assert letter["error"] == "RuntimeError: boom"
    assert letter["attempts"] == 4  # 1 + 3 retries

    def counts() -> tuple[float, float]:
        seen = api.signals()
        return seen["celery.task.failed"], seen["celery.dead_letter"]

    eventually(lambda: counts() == (4, 1), "4 failures and 1 dead letter counted")

    read_only = api.job("diag.fail_ro", key="ro-fails")
    assert read_only["state"] == "dead"
    assert [x["attempts"] for x in eventually(lambda: letters_for(api, "ro-fails"), "ro")] == [2]
    eventually(lambda: counts() == (6, 2), "2 more failures and 1 more dead letter counted")

    # Replay: it leaves the dead letter, fails its 4 attempts again, and is back exactly once.
    replayed = api.http.post("/admin/dlq/always-fails/replay")
    assert replayed.status_code == 200, replayed.text
    assert replayed.json() == {
        "replayed": [{"key": "always-fails", "state": "queued", "inline": False}]
    }
    eventually(lambda: counts() == (10, 3), "the replay failed 4 times and was buried again")
    again = letters_for(api, "always-fails")
    assert len(again) == 1
    assert (again[0]["attempts"], again[0]["error"]) == (4, "RuntimeError: boom")
    time.sleep(2)  # two more monitor samples: nothing is counted twice
    assert counts() == (10, 3)
    assert len(api.dead_letters()) == 2

    # The CLI sees the same dead letter and empties it.
    listed = [json.loads(line) for line in run_cli(data_dir, broker, "dlq", "list")]
    assert sorted(x["key"] for x in listed) == ["always-fails", "ro-fails"]
    assert {x["key"]: (x["name"], x["queue"], x["attempts"]) for x in listed} == {
        "always-fails": ("diag.fail", "tools_mut", 4),
        "ro-fails": ("diag.fail_ro", "tools_ro", 2),
    }
    assert run_cli(data_dir, broker, "dlq", "purge") == [json.dumps({"purged": 2})]
    assert api.dead_letters() == []
    assert run_cli(data_dir, broker, "dlq", "list") == []


# -- time limits on the prefork pool ------------------------------------------------------------


def test_the_soft_time_limit_stops_a_job_and_the_worker_lives_on(
    broker: Broker, worker_factory, start_api, data_dir: Path
) -> None:
    limits = {"DENIS_JOB_TIME_LIMIT_S": "2", "DENIS_JOB_SOFT_TIME_LIMIT_S": "1"}
    worker, _ = start_workers(worker_factory, {**broker.env(), **limits}, background=False)
    api = start_api({**broker.env(), **limits})
    eventually(lambda: api.status()["zones"]["async"]["mode"] == "normal", "async mode normal")

    quick = api.job("diag.sleep.tools_ro", {"seconds": 0.2})
    assert_ran_on(quick, worker, api)  # a job within its limit is not touched

    started = time.monotonic()
    slow = api.job("diag.sleep.tools_ro", {"seconds": 5}, key="too-slow")
    elapsed_s = time.monotonic() - started

    assert (slow["state"], slow["inline"], slow["result"]) == ("dead", False, None)
    assert slow["error"].startswith("SoftTimeLimitExceeded")
    assert elapsed_s < 10, "two 5 s attempts ran to the end: the limit was not enforced"
    (letter,) = eventually(lambda: letters_for(api, "too-slow"), "the dead letter")
    assert (letter["queue"], letter["attempts"]) == ("tools_ro", 2)  # 1 + 1 retry
    assert worker.proc is not None
    assert worker.proc.poll() is None
    assert_ran_on(api.job("diag.echo.tools_ro"), worker, api)


# -- status as `denis up` runs it ----------------------------------------------------------------


def test_status_follows_a_worker_going_away_and_coming_back(
    broker: Broker, worker_factory, start_api, data_dir: Path
) -> None:
    interactive, _ = start_workers(worker_factory, broker.env())
    api = start_api(broker.env())

    zone = api.status()["zones"]["async"]
    assert zone["mode"] == "normal"
    assert (zone["broker"], zone["broker_state"]) == (broker.name, "up")
    assert zone["workers"] == dict.fromkeys(WORK_QUEUES, True)
    assert zone["background_paused"] is False
    assert api.status()["breakers"]["broker"] == "closed"
    assert api.signals()["celery.worker_down"] == 0

    interactive.stop()  # SIGTERM: a warm shutdown that removes its heartbeat
    zone = eventually(
        lambda: (z := api.status()["zones"]["async"])["mode"] == "fail_open" and z,
        "fail_open after the interactive worker stops",
    )
    assert zone["workers"] == {q: not consumes(interactive, q) for q in WORK_QUEUES}
    assert zone["broker_state"] == "up"  # the broker is fine; only the worker is gone
    assert api.signals()["celery.worker_down"] == 1

    # Meanwhile a command runs in the API itself (fail-open), not into a queue nobody reads.
    inline = api.job("diag.effect", {"label": "door"}, key="while-down")
    assert (inline["state"], inline["inline"]) == ("done", True)
    assert inline["result"]["pid"] == api.pid
    assert [e["inline"] for e in effects(data_dir, "while-down")] == [True]

    queues, concurrency, beat = INTERACTIVE
    restarted = worker_factory(
        queues, {**WORKER_ENV, **broker.env()}, concurrency=concurrency, beat=beat
    )
    eventually(lambda: api.status()["zones"]["async"]["mode"] == "normal", "normal again")
    assert api.status()["zones"]["async"]["workers"] == dict.fromkeys(WORK_QUEUES, True)
    assert api.signals()["celery.worker_down"] == 1  # once for the whole outage
    assert_ran_on(api.job("diag.echo.tools_mut"), restarted, api)
