"""Chaos for the async plane: the broker killed and hung, a worker killed mid-job, a publish
that times out after the broker stored it, the queue's disk over its threshold.

Every test runs real processes: ``redis-server`` as the broker (or kombu's filesystem
transport), ``python -m denis serve`` as the API and ``python -m denis worker`` process groups,
and causes the fault for real (SIGKILL, SIGSTOP, a TCP proxy that swallows Redis's replies, a
full tmpfs). Jobs are the diagnostics every Denis has: ``diag.echo.<queue>`` and
``diag.effect``, whose effect is one line in ``<data_dir>/effects.jsonl`` per run.

What must hold:

- with the broker dead or hung, every ``POST /jobs`` is answered (never a 5xx) within
  ``LATENCY_BOUND_S`` and runs in the API itself; ``celery.broker_down`` is counted once per
  outage; the API and the workers go back to the broker by themselves when it returns;
- a mutating job's effect happens exactly once per key: not lost when its worker is SIGKILLed
  mid-job (the journal sweep re-dispatches it), not doubled when the API also runs it;
- past the disk threshold background work is refused with a 503 and a signal, while ``/chat``
  and tool jobs keep working; with the queue's disk completely full, tool jobs fail open,
  the workers stay up, and all goes back to normal by itself once there is space again.

The latency bound is generous on purpose (a loaded 2-core machine runs other suites too): a
publish costs at most the 0.3 s broker timeout, three failures open the breaker, and then no
request touches the broker; the failure this guards against is a hang (``apply_async`` on a
hung Redis waits forever with Celery's defaults).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

import load
from denis.async_plane import JobLedger
from load import LoadRun, Step, record
from probes import signal_in
from servers import (
    DenisProcess,
    DenisWorker,
    RedisServer,
    create_token,
    missing_component,
    require_program,
)

pytestmark = pytest.mark.chaos

LATENCY_BOUND_S = 2.0
CLIENT_TIMEOUT_S = 20.0  # far above the bound, so a hang shows up as a slow or failed request
RECOVERY_WAIT_S = 10.0  # the API back on the broker: breaker cool-down 1 s + a monitor sample
WORKER_RECONNECT_WAIT_S = 20.0
EFFECT_WAIT_S = 30.0
CONCURRENCY = 8
WORKER_PROCESSES = 2
BROKER_DOWN = "celery.broker_down"
INTERACTIVE = "tools_mut,tools_ro"
BACKGROUND = "tts,graph_ingest,ha_playback,housekeeping"
BACKGROUND_QUEUES = BACKGROUND.split(",")
ALL = f"{INTERACTIVE},{BACKGROUND}"
HIGH_LIMIT = "1000000/minute"


def async_env(broker_url: str | None, **extra: str) -> dict[str, str]:
    """The same short timings for the API and every worker (they share one data dir)."""
    return {
        "DENIS_BROKER_URL": broker_url or "",
        "DENIS_WORKER_HEARTBEAT_S": "0.5",
        "DENIS_JOB_RETRY_BACKOFF_S": "0.2",
        "DENIS_HOUSEKEEPING_INTERVAL_S": "1",
        "DENIS_JOURNAL_STALE_AFTER_S": "1",
        "DENIS_BROKER_BREAKER_COOLDOWN_S": "1",
        "DENIS_RATE_LIMIT_USER": HIGH_LIMIT,
        "DENIS_RATE_LIMIT_CLIENT": HIGH_LIMIT,
        "DENIS_BUDGET_TOKENS_PER_DAY": "100000000",
        **extra,
    }


@dataclass(frozen=True, slots=True)
class Outcome:
    """One request as the client saw it; ``status`` is None when no HTTP answer came."""

    name: str
    started_s: float
    ended_s: float
    status: int | None
    body: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def latency_s(self) -> float:
        return self.ended_s - self.started_s


@dataclass(frozen=True, slots=True)
class Api:
    """One Denis process seen through an HTTP client, as an admin (jobs) and a user (chat)."""

    client: httpx.AsyncClient
    proc: DenisProcess
    admin: str
    user: str

    async def job(
        self,
        name: str,
        args: dict[str, Any] | None = None,
        *,
        key: str | None = None,
        wait: bool = True,
        timeout_s: float = CLIENT_TIMEOUT_S,
    ) -> Outcome:
        body: dict[str, Any] = {"name": name, "args": args or {}, "wait": wait}
        if key is not None:
            body["key"] = key
        return await self._post("/jobs", body, self.admin, name, timeout_s)

    async def chat(self, text: str = "hello") -> Outcome:
        return await self._post("/chat", {"text": text}, self.user, "chat", CLIENT_TIMEOUT_S)

    async def _post(
        self, path: str, body: dict[str, Any], token: str, name: str, timeout_s: float
    ) -> Outcome:
        started_s = time.monotonic()
        try:
            response = await self.client.post(
                f"{self.proc.url}{path}",
                json=body,
                headers={"Authorization": f"Bearer {token}"},
                timeout=timeout_s,
            )
            answer = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            return Outcome(name, started_s, time.monotonic(), None, error=repr(exc))
        return Outcome(name, started_s, time.monotonic(), response.status_code, answer)

    async def status(self) -> dict[str, Any]:
        response = await self.client.get(f"{self.proc.url}/status", headers=self._auth)
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def signal(self, name: str) -> float:
        response = await self.client.get(f"{self.proc.url}/metrics", headers=self._auth)
        assert response.status_code == 200, response.text
        return signal_in(response.text, name)

    @property
    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin}"}


@contextlib.asynccontextmanager
async def api_for(proc: DenisProcess) -> AsyncIterator[Api]:
    admin = create_token(proc.data_dir, "root", admin=True)
    user = create_token(proc.data_dir, "alice")
    async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT_S) as client:
        yield Api(client, proc, admin, user)


async def wait_for(
    what: str, probe: Callable[[], Awaitable[Any]], timeout_s: float, interval_s: float = 0.1
) -> float:
    """Poll until ``probe()`` is truthy; returns the seconds it took, fails past ``timeout_s``."""
    started_s = time.monotonic()
    last: Any = None
    while True:
        last = await probe()
        if last:
            return time.monotonic() - started_s
        if time.monotonic() - started_s > timeout_s:
            raise AssertionError(f"{what}: not within {timeout_s} s (last: {last!r})")
        await asyncio.sleep(interval_s)


def async_zone(status: dict[str, Any]) -> dict[str, Any]:
    return dict(status["zones"]["async"])


async def on_broker(api: Api, queues: str = INTERACTIVE) -> bool:
    """The API queues on the broker: normal mode, broker up, breaker closed, and a live worker
    for each of ``queues``."""
    status = await api.status()
    zone = async_zone(status)
    return (
        zone["mode"] == "normal"
        and zone["broker_state"] == "up"
        and status["breakers"]["broker"] == "closed"
        and all(zone["workers"][queue] for queue in queues.split(","))
    )


# -- load ---------------------------------------------------------------------------------

LOAD_JOBS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("diag.echo.tools_ro", {"n": 1}),
    ("diag.effect", {"label": "load"}),
)


async def under_load(api: Api, steps: Sequence[Step], *, tail_s: float) -> LoadRun[Outcome]:
    """``CONCURRENCY`` clients post jobs back to back (``wait=true``, a fresh key each), around
    the fault ``steps``."""

    def connect(index: int, client: httpx.AsyncClient) -> Callable[[int], Awaitable[Outcome]]:
        own = Api(client, api.proc, api.admin, api.user)

        def send(sent: int) -> Awaitable[Outcome]:
            name, args = LOAD_JOBS[sent % len(LOAD_JOBS)]
            return own.job(name, args)

        return send

    return await load.under_load(
        connect, steps, workers=CONCURRENCY, client_timeout_s=CLIENT_TIMEOUT_S, tail_s=tail_s
    )


def assert_all_answered(run: LoadRun[Outcome], request: pytest.FixtureRequest) -> None:
    """No request lost, every one a 200 with a finished job, none slower than the bound."""
    outcomes = run.outcomes
    assert len(outcomes) >= 5 * CONCURRENCY, f"the load barely ran: {len(outcomes)} requests"
    failed = [o.error for o in outcomes if o.error is not None]
    assert not failed, f"{len(failed)} requests got no answer, e.g. {failed[:3]}"
    statuses = Counter(o.status for o in outcomes)
    assert set(statuses) == {200}, (statuses, [o.body for o in outcomes if o.status != 200][:3])
    worst = max(outcomes, key=lambda o: o.latency_s)
    fault_s = run.marks[0].started_s
    worst_after = max(run.started_between(fault_s), key=lambda o: o.latency_s)
    record(request, "requests", len(outcomes))
    record(request, "worst_latency_s", round(worst.latency_s, 3))
    record(request, "worst_latency_after_fault_s", round(worst_after.latency_s, 3))
    slow = sorted(
        (round(o.started_s - fault_s, 2), round(o.latency_s, 2), o.body.get("state"))
        for o in outcomes
        if o.latency_s >= LATENCY_BOUND_S
    )
    assert not slow, f"(start vs fault s, latency s, state) over {LATENCY_BOUND_S} s: {slow}"
    states = Counter(o.body["state"] for o in outcomes)
    assert set(states) == {"done"}, states


def assert_failed_open(status: dict[str, Any]) -> None:
    zone = async_zone(status)
    assert zone["mode"] == "fail_open", status
    assert zone["broker"] == "redis", status
    assert zone["broker_state"] == "down", status
    assert status["breakers"]["broker"] in {"open", "half_open"}, status


async def back_on_worker(api: Api) -> Outcome | None:
    """One job with a short wait: the outcome if a worker ran it, else None."""
    outcome = await api.job("diag.echo.tools_ro", {"probe": True}, timeout_s=LATENCY_BOUND_S)
    if outcome.status == 200 and (outcome.body["state"], outcome.body["inline"]) == ("done", False):
        return outcome
    return None


def with_busy_workers(api: Api, fault: Callable[[], None]) -> Callable[[], None]:
    """A fault step: first hand every worker process a 1 s job and wait until they all run
    it, then cause ``fault``. The jobs finish while the broker is gone, so all their acks fail
    (which once left kombu's Redis consumer stalled for good behind a live heartbeat)."""
    ledger = JobLedger(api.proc.data_dir / "jobs.sqlite3")
    headers = {"Authorization": f"Bearer {api.admin}"}
    job = {"name": "diag.sleep.tools_ro", "args": {"seconds": 1.0}, "wait": False}

    def running(key: str) -> bool:
        record_ = ledger.get(key)
        return record_ is not None and record_.state == "running"

    def step() -> None:
        keys = []
        for _ in range(WORKER_PROCESSES):
            answer = httpx.post(f"{api.proc.url}/jobs", json=job, headers=headers, timeout=5.0)
            assert answer.json()["state"] == "queued", answer.text
            keys.append(answer.json()["key"])
        started_s = time.monotonic()
        while not all(running(key) for key in keys):
            assert time.monotonic() - started_s < 5.0, "the slow jobs did not start"
            time.sleep(0.02)
        fault()

    return step


async def broker_outage(
    request: pytest.FixtureRequest, redis_server: RedisServer, fault: str, heal: str
) -> None:
    """The broker fails under load (``redis_server.<fault>()``), then comes back (``heal``)."""
    env = async_env(redis_server.url)
    proc = request.getfixturevalue("denis_factory")(env)
    request.getfixturevalue("worker_factory")(INTERACTIVE, env, concurrency=WORKER_PROCESSES)
    async with api_for(proc) as api:
        await wait_for("the API sees the worker", lambda: on_broker(api), RECOVERY_WAIT_S)
        warm = await api.job("diag.echo.tools_ro")
        assert warm.status == 200, warm
        assert (warm.body["state"], warm.body["inline"]) == ("done", False), warm.body

        step = with_busy_workers(api, getattr(redis_server, fault))
        run = await under_load(api, [(1.5, step)], tail_s=2.5)

        assert_all_answered(run, request)
        faulted = run.marks[0]
        before = run.finished_before(faulted.started_s)
        after = run.started_between(faulted.ended_s)
        assert len(before) >= CONCURRENCY, "too little load before the fault"
        assert len(after) >= CONCURRENCY, "too little load after the fault"
        assert all(not o.body["inline"] for o in before), "jobs ran inline on a healthy broker"
        assert all(o.body["inline"] for o in after), "a job waited on the failed broker"
        assert await api.signal(BROKER_DOWN) == 1
        assert await api.signal("breaker.opened") >= 1
        assert_failed_open(await api.status())
        late = await api.job("diag.effect", {"label": "late"})
        assert late.status == 200, late
        assert late.latency_s < LATENCY_BOUND_S, late
        assert (late.body["state"], late.body["inline"]) == ("done", True), late.body

        getattr(redis_server, heal)()
        api_back_s = await wait_for("the API back on the broker", lambda: on_broker(api), 10.0)
        record(request, "api_back_on_broker_s", round(api_back_s, 3))
        assert await api.signal(BROKER_DOWN) == 1, "one outage, one count"
        # Workers go back to the broker by themselves: a job queued now runs on a worker.
        worker_back_s = await wait_for(
            "a worker runs jobs from the returned broker",
            lambda: back_on_worker(api),
            WORKER_RECONNECT_WAIT_S,
        )
        record(request, "worker_back_on_broker_s", round(worker_back_s, 3))
        assert await on_broker(api)
        assert await api.signal(BROKER_DOWN) == 1


async def test_broker_killed_during_dispatch_fails_open_then_recovers(
    redis_server: RedisServer, request: pytest.FixtureRequest
) -> None:
    # SIGKILL, then a new redis-server on the same port (empty: no persistence).
    await broker_outage(request, redis_server, "kill", "start")


async def test_broker_hung_during_dispatch_fails_open_then_recovers(
    redis_server: RedisServer, request: pytest.FixtureRequest
) -> None:
    # SIGSTOP: connections are accepted and nothing answers; then SIGCONT.
    await broker_outage(request, redis_server, "pause", "resume")


# -- exactly once -------------------------------------------------------------------------


def effects_for(data_dir: Path, key: str) -> list[dict[str, Any]]:
    path = data_dir / "effects.jsonl"
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line["key"] == key]


async def wait_for_one_effect(
    data_dir: Path, key: str, timeout_s: float, settle_s: float
) -> tuple[dict[str, Any], float]:
    """Poll until the key's effect shows up, then watch ``settle_s`` more for a second one;
    returns the one line and the seconds it took to show up."""

    async def appeared() -> bool:
        return bool(effects_for(data_dir, key))

    waited_s = await wait_for(f"the effect of {key}", appeared, timeout_s, interval_s=0.1)
    await asyncio.sleep(settle_s)
    lines = effects_for(data_dir, key)
    assert len(lines) == 1, lines
    return lines[0], waited_s


@pytest.mark.parametrize("broker", ["filesystem", "redis"])
async def test_worker_killed_mid_mutating_job_effect_happens_once(
    broker: str,
    denis_factory: Callable[..., DenisProcess],
    worker_factory: Callable[..., DenisWorker],
    data_dir: Path,
    request: pytest.FixtureRequest,
) -> None:
    redis_url = request.getfixturevalue("redis_server").url if broker == "redis" else None
    env = async_env(redis_url)
    proc = denis_factory(env)
    interactive = worker_factory(INTERACTIVE, env)
    worker_factory(BACKGROUND, env, beat=True)  # beat runs the journal sweep every second
    ledger = JobLedger(data_dir / "jobs.sqlite3")
    key = f"chaos-kill-{broker}"
    async with api_for(proc) as api:
        await wait_for("the API sees the workers", lambda: on_broker(api, ALL), RECOVERY_WAIT_S)
        sent = await api.job("diag.effect", {"delay_s": 3, "label": "x"}, key=key, wait=False)
        assert sent.status == 200, sent
        assert (sent.body["state"], sent.body["inline"]) == ("queued", False), sent.body

        async def started() -> bool:
            record_ = await asyncio.to_thread(ledger.get, key)
            return record_ is not None and record_.state == "running"

        try:
            await wait_for("the worker claims the job", started, 10.0, interval_s=0.05)
        except AssertionError as exc:
            log = interactive.log_path.read_text()[-3000:]
            raise AssertionError(f"{exc}; ledger: {ledger.get(key)}; worker log: {log}") from exc
        await asyncio.sleep(0.5)  # well inside the job's 3 s sleep
        interactive.kill()
        killed_s = time.monotonic()
        assert effects_for(data_dir, key) == [], "the effect ran before the crash"

        worker_factory(INTERACTIVE, env)
        ready_s = time.monotonic() - killed_s
        line, waited_s = await wait_for_one_effect(
            data_dir, key, EFFECT_WAIT_S - ready_s, settle_s=4.0
        )
        record(request, "new_worker_ready_s", round(ready_s, 3))
        record(request, "effect_after_kill_s", round(ready_s + waited_s, 3))
        assert line["label"] == "x"
        assert line["inline"] is False, "re-dispatched to the new worker, not run by the API"
        done = ledger.get(key)
        assert done is not None
        assert done.state == "done", done
        assert done.redispatches >= 1, done
        record(request, "redispatches", done.redispatches)
        assert ledger.dead_letters() == []


class ReplyDropProxy:
    """A TCP proxy in front of Redis. While ``dropping``, requests still reach Redis but its
    replies are swallowed: a publish stored by the broker whose answer never comes back."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.dropping = False
        self.dropped = bytearray()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> ReplyDropProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer, replies=False),
                self._pipe(up_reader, writer, replies=True),
            )
        finally:
            for end in (writer, up_writer):
                end.close()

    async def _pipe(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, replies: bool
    ) -> None:
        with contextlib.suppress(OSError):
            while data := await source.read(65536):
                if replies and self.dropping:
                    self.dropped += data
                    continue
                sink.write(data)
                await sink.drain()
        with contextlib.suppress(OSError):
            sink.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def lpush_calls(client: redis.Redis) -> int:
    stats: dict[str, Any] = client.info("commandstats")  # type: ignore[assignment]
    return int(stats.get("cmdstat_lpush", {}).get("calls", 0))


async def test_publish_stored_but_timed_out_runs_once(
    denis_factory: Callable[..., DenisProcess],
    worker_factory: Callable[..., DenisWorker],
    redis_server: RedisServer,
    data_dir: Path,
    request: pytest.FixtureRequest,
) -> None:
    """The API publishes through a proxy that passes the LPUSH to Redis and swallows the
    reply: the worker gets the message while the API's publish times out and the API runs the
    same key inline. The ledger's claim lets only one of them run the effect."""
    proxy = await ReplyDropProxy(redis_server.port).start()
    inspector = redis.Redis(port=redis_server.port, socket_timeout=2)
    try:
        # A high threshold, so the monitor's own probes through the proxy cannot open the
        # breaker before the publish under test; the processes are started from threads
        # because the proxy needs this event loop while they wait to be ready.
        env = async_env(proxy.url, DENIS_BROKER_BREAKER_THRESHOLD="100")
        proc = await asyncio.to_thread(denis_factory, env)
        await asyncio.to_thread(worker_factory, INTERACTIVE, async_env(redis_server.url))
        key = "chaos-stored-and-inline"
        async with api_for(proc) as api:
            await wait_for("the API sees the worker", lambda: on_broker(api), RECOVERY_WAIT_S)
            warm = await api.job("diag.effect", {"label": "warm"})
            assert (warm.body["state"], warm.body["inline"]) == ("done", False), warm.body
            pushed = lpush_calls(inspector)
            outages = await api.signal(BROKER_DOWN)

            proxy.dropping = True
            both = await api.job("diag.effect", {"delay_s": 1, "label": "dup"}, key=key)

            assert both.status == 200, both
            assert both.latency_s < LATENCY_BOUND_S, both
            # The publish timed out, so the API ran the key itself, found the worker holding its
            # claim, and answered with the worker's result: done, once, by the worker.
            assert both.body["state"] == "done", both.body
            assert both.body["inline"] is False, both.body
            record(request, "inline_outcome", both.body["state"])
            # ... and yet the broker stored it: Redis ran the LPUSH, its reply was swallowed.
            assert lpush_calls(inspector) > pushed
            assert proxy.dropped, "no reply was swallowed"
            line, _ = await wait_for_one_effect(data_dir, key, 10.0, settle_s=2.0)
            record(request, "effect_ran_inline", line["inline"])
            assert inspector.llen("tools_mut") == 0, "the stored message was never consumed"
            assert await api.signal(BROKER_DOWN) == outages + 1
    finally:
        inspector.close()
        await proxy.close()


# -- disk ---------------------------------------------------------------------------------


async def assert_background_paused(
    api: Api, data_dir: Path, request: pytest.FixtureRequest
) -> None:
    """Background jobs refused with a 503 and one ``queue.disk_percent``, while ``/chat`` and
    tool jobs (on the worker) keep working, all at once."""

    async def paused() -> bool:
        return bool(async_zone(await api.status())["background_paused"])

    await wait_for("background work paused", paused, RECOVERY_WAIT_S)
    refused = [api.job(f"diag.echo.{queue}") for queue in BACKGROUND_QUEUES]
    chats = [api.chat() for _ in range(4)]
    tools = [api.job("diag.echo.tools_ro"), api.job("diag.effect", {"label": "disk"})]
    outcomes = await asyncio.gather(*refused, *chats, *tools)
    record(request, "worst_latency_s", round(max(o.latency_s for o in outcomes), 3))
    assert all(o.latency_s < LATENCY_BOUND_S for o in outcomes), outcomes
    for outcome in outcomes[: len(refused)]:
        assert outcome.status == 503, outcome
        assert outcome.body["error"]["code"] == "unavailable", outcome.body
    for outcome in outcomes[len(refused) : len(refused) + len(chats)]:
        assert outcome.status == 200, outcome
        assert outcome.body["reply"], outcome.body
    for outcome in outcomes[len(refused) + len(chats) :]:
        assert outcome.status == 200, outcome
        assert (outcome.body["state"], outcome.body["inline"]) == ("done", False), outcome.body
    assert len(effects_for(data_dir, outcomes[-1].body["key"])) == 1
    await asyncio.sleep(1.5)  # three more samples, still over the threshold
    assert await api.signal("queue.disk_percent") == 1
    zone = async_zone(await api.status())
    assert zone["background_paused"] is True, zone
    assert zone["mode"] == "normal", zone  # tools still queue on their workers


async def test_disk_threshold_pauses_background_work_only(
    denis_factory: Callable[..., DenisProcess],
    worker_factory: Callable[..., DenisWorker],
    data_dir: Path,
    request: pytest.FixtureRequest,
) -> None:
    usage = shutil.disk_usage(data_dir)
    percent = 100.0 * usage.used / usage.total
    threshold = max(0.0, round(percent - 1.0, 2))  # just below what the disk holds now
    env = async_env(None, DENIS_QUEUE_DISK_MAX_PERCENT=str(threshold))
    proc = denis_factory(env)
    worker_factory(INTERACTIVE, env)
    worker_factory(BACKGROUND, env)
    async with api_for(proc) as api:
        await wait_for("the API sees the workers", lambda: on_broker(api, ALL), RECOVERY_WAIT_S)
        await assert_background_paused(api, data_dir, request)
        assert async_zone(await api.status())["disk_percent"] >= threshold


@pytest.fixture
def small_queue_disk(data_dir: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs mounted on the file queue's folder (``<data_dir>/broker``), when this
    machine lets the tests mount one (root, not a locked-down container); skipped otherwise,
    with the reason (a failure under CI=true, where the suite runs as root). Only the queue's
    disk fills up: the ledger, the tokens and the processes' log files (which the harness
    writes into the data dir) stay on the big disk."""
    mount = require_program("mount")
    path = data_dir / "broker"
    path.mkdir()
    if os.geteuid() != 0:
        missing_component("mounting a small tmpfs needs root")
    done = subprocess.run(
        [mount, "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        missing_component(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def fill(path: Path, up_to_percent: float | None) -> None:
    """Write a filler file until the filesystem is ``up_to_percent`` used (None: until full)."""
    with (path / "filler.bin").open("ab", buffering=0) as out:  # unbuffered: close can't fail
        chunk = b"\0" * 64 * 1024
        while True:
            usage = shutil.disk_usage(path)
            if up_to_percent is not None and 100.0 * usage.used / usage.total >= up_to_percent:
                return
            try:
                out.write(chunk)
            except OSError:
                return  # ENOSPC: full


async def test_queue_disk_filled_up_for_real(
    small_queue_disk: Path,
    denis_factory: Callable[..., DenisProcess],
    worker_factory: Callable[..., DenisWorker],
    data_dir: Path,
    request: pytest.FixtureRequest,
) -> None:
    """The real thing: the file queue's own (tiny) filesystem fills up under a running Denis,
    past the threshold, then completely."""
    env = async_env(None, DENIS_QUEUE_DISK_MAX_PERCENT="90")
    proc = denis_factory(env)
    workers = [worker_factory(INTERACTIVE, env), worker_factory(BACKGROUND, env)]
    async with api_for(proc) as api:
        await wait_for("the API sees the workers", lambda: on_broker(api, ALL), RECOVERY_WAIT_S)
        ok = await api.job("diag.echo.tts")
        assert (ok.status, ok.body["state"], ok.body["inline"]) == (200, "done", False), ok

        await asyncio.to_thread(fill, small_queue_disk, 95.0)
        await assert_background_paused(api, data_dir, request)

        # Completely full: no message can be written any more. Chat is untouched, background
        # work is still refused, and tool jobs fail open: the API runs them itself.
        await asyncio.to_thread(fill, small_queue_disk, None)
        refused = [api.job(f"diag.echo.{queue}") for queue in BACKGROUND_QUEUES]
        chats = [api.chat() for _ in range(4)]
        tools = [api.job("diag.echo.tools_ro"), api.job("diag.effect", {"label": "full"})]
        outcomes = await asyncio.gather(*refused, *chats, *tools)
        worst_s = max(o.latency_s for o in outcomes)
        record(request, "full_disk_worst_latency_s", round(worst_s, 3))
        assert worst_s < LATENCY_BOUND_S, outcomes
        assert [o.status for o in outcomes[: len(refused)]] == [503] * len(refused), outcomes
        for outcome in outcomes[len(refused) : len(refused) + len(chats)]:
            assert outcome.status == 200, outcome
            assert outcome.body["reply"], outcome.body
        for outcome in outcomes[len(refused) + len(chats) :]:
            assert outcome.status == 200, outcome
            assert (outcome.body["state"], outcome.body["inline"]) == ("done", True), outcome.body
        assert len(effects_for(data_dir, outcomes[-1].body["key"])) == 1
        zone = async_zone(await api.status())
        assert zone["background_paused"] is True, zone
        assert zone["mode"] == "fail_open", zone
        assert await api.signal(BROKER_DOWN) == 1
        assert await api.signal("queue.disk_percent") == 1
        await asyncio.sleep(1.5)  # the workers poll the queue every 0.1 s; liveness is 1.5 s
        served = async_zone(await api.status())["workers"]
        assert all(served.values()), f"a worker stopped consuming: {served}"
        assert all(worker.proc is not None and worker.proc.poll() is None for worker in workers)

        # Space again: background work is accepted and tools queue on their worker by themselves.
        (small_queue_disk / "filler.bin").unlink()

        async def resumed() -> bool:
            zone = async_zone(await api.status())
            return not zone["background_paused"] and bool(await back_on_worker(api))

        await wait_for("back to normal after the disk freed up", resumed, RECOVERY_WAIT_S)
        again = await api.job("diag.echo.tts")
        assert (again.status, again.body["state"], again.body["inline"]) == (200, "done", False)
        assert await on_broker(api, ALL)
        assert await api.signal("queue.disk_percent") == 1
