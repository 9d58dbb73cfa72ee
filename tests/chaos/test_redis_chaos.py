"""Chaos: the shared Redis is killed, hung and restarted under real concurrent load.

Each test starts its own ``redis-server`` and real ``python -m denis serve`` processes, drives
them with concurrent ``POST /chat`` requests, and causes the fault for real (SIGKILL, SIGSTOP,
kill + start on the same port) in the middle of the load. What must hold:

- every request gets an HTTP answer, never a 5xx, none slower than ``LATENCY_BOUND_S``;
- ``rate_limit.redis_down`` is counted once per outage per process, ``/status`` shows the sync
  zone in ``fallback`` with the in-memory limiter, replies list ``sync`` in ``degraded``;
- rate limits still hold during the outage, per process;
- Denis goes back to Redis by itself when it returns.

The latency bound is generous on purpose (a loaded 2-core machine runs other suites too): a
Redis call costs at most the 0.1 s timeout, the breaker then stops calls for its 1 s cool-down,
and a turn makes at most four Redis calls, so a healthy detection answers well under a second;
the failure this guards against is a hang (26 s with redis-py's default retries).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

import load
from load import LoadRun, Step, record
from probes import signal_in
from servers import DenisProcess, RedisServer, create_token

pytestmark = pytest.mark.chaos

LATENCY_BOUND_S = 2.0
RECOVERY_WAIT_S = 10.0
CLIENT_TIMEOUT_S = 10.0  # far above the bound, so a hang shows up as a failed request
WORKERS = 8
HIGH_LIMIT = "1000000/minute"
REDIS_DOWN = "rate_limit.redis_down"


def chaos_env(redis_server: RedisServer, **extra: str) -> dict[str, str]:
    return {
        "DENIS_REDIS_URL": redis_server.url,
        "DENIS_REDIS_TIMEOUT_S": "0.1",
        "DENIS_REDIS_BREAKER_COOLDOWN_S": "1",
        "DENIS_RATE_LIMIT_USER": HIGH_LIMIT,
        "DENIS_RATE_LIMIT_CLIENT": HIGH_LIMIT,
        "DENIS_BUDGET_TOKENS_PER_DAY": "100000000",
        **extra,
    }


@dataclass(frozen=True, slots=True)
class Outcome:
    """One request as the client saw it; ``status`` is None when no HTTP answer came."""

    started_s: float
    ended_s: float
    status: int | None
    body: dict[str, Any] = field(default_factory=dict)
    retry_after: str | None = None
    error: str | None = None

    @property
    def latency_s(self) -> float:
        return self.ended_s - self.started_s

    @property
    def degraded(self) -> list[str]:
        return list(self.body.get("degraded", []))


@dataclass(frozen=True, slots=True)
class Api:
    """One Denis process as seen through an HTTP client."""

    client: httpx.AsyncClient
    proc: DenisProcess
    token: str

    async def chat(
        self, token: str | None = None, *, text: str = "hello", timeout_s: float = CLIENT_TIMEOUT_S
    ) -> Outcome:
        headers = {"Authorization": f"Bearer {token or self.token}"}
        started_s = time.monotonic()
        try:
            response = await self.client.post(
                f"{self.proc.url}/chat", json={"text": text}, headers=headers, timeout=timeout_s
            )
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            return Outcome(started_s, time.monotonic(), None, error=repr(exc))
        return Outcome(
            started_s,
            time.monotonic(),
            response.status_code,
            body,
            response.headers.get("Retry-After"),
        )

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
        return {"Authorization": f"Bearer {self.token}"}


async def under_load(
    apis: Sequence[Api],
    tokens: Sequence[str],
    steps: Sequence[Step],
    *,
    tail_s: float,
) -> LoadRun[Outcome]:
    """``WORKERS`` workers send turns back to back, round-robin over ``apis`` (worker ``w`` as
    user ``tokens[w % len(tokens)]``), around the fault ``steps``."""

    def connect(index: int, client: httpx.AsyncClient) -> Callable[[int], Awaitable[Outcome]]:
        token = tokens[index % len(tokens)]
        own = [dataclasses.replace(api, client=client) for api in apis]
        return lambda sent: own[sent % len(own)].chat(token)

    return await load.under_load(
        connect, steps, workers=WORKERS, client_timeout_s=CLIENT_TIMEOUT_S, tail_s=tail_s
    )


def assert_all_answered(
    run: LoadRun[Outcome], request: pytest.FixtureRequest, *, allowed: frozenset[int]
) -> None:
    """No request lost, no 5xx (nor anything outside ``allowed``), none slower than the bound."""
    outcomes = run.outcomes
    assert len(outcomes) >= 5 * WORKERS, f"the load barely ran: {len(outcomes)} requests"
    failed = [o.error for o in outcomes if o.error is not None]
    assert not failed, f"{len(failed)} requests got no answer, e.g. {failed[:3]}"
    statuses = Counter(o.status for o in outcomes)
    assert set(statuses) <= allowed, statuses
    for outcome in outcomes:
        if outcome.status == 429:
            assert outcome.body["error"]["code"] == "rate_limited"
            assert outcome.retry_after is not None
            assert 1 <= int(outcome.retry_after) <= 60
    worst_s = max(o.latency_s for o in outcomes)
    assert worst_s < LATENCY_BOUND_S, f"a request took {worst_s:.2f} s"
    after_fault = run.started_between(run.marks[0].started_s)
    record(request, "requests", len(outcomes))
    record(request, "worst_latency_s", round(worst_s, 3))
    record(request, "worst_latency_after_fault_s", round(max(o.latency_s for o in after_fault), 3))


def assert_fallback(status: dict[str, Any]) -> None:
    sync = status["zones"]["sync"]
    assert sync["mode"] == "fallback", status
    assert sync["rate_limiter"] == "memory", status
    assert status["breakers"]["redis"] in {"open", "half_open"}, status


def assert_on_redis(status: dict[str, Any]) -> None:
    sync = status["zones"]["sync"]
    assert sync["mode"] == "normal", status
    assert sync["rate_limiter"] == "redis", status
    assert status["breakers"]["redis"] == "closed", status


async def wait_back_on_redis(api: Api, token: str) -> float:
    """Poll until the process uses Redis again (each round sends one turn, which is what gives
    the half-open breaker its probe); returns the seconds it took. A turn that gets no answer
    within the bound is simply retried: a probe that never came back would leave the breaker
    half-open, and that fails below."""
    started_s = time.monotonic()
    while True:
        await api.chat(token, timeout_s=LATENCY_BOUND_S)
        status = await api.status()
        sync = status["zones"]["sync"]
        if (
            sync["mode"] == "normal"
            and sync["rate_limiter"] == "redis"
            and status["breakers"]["redis"] == "closed"
        ):
            return time.monotonic() - started_s
        waited_s = time.monotonic() - started_s
        assert waited_s < RECOVERY_WAIT_S, f"not back on Redis after {waited_s:.1f} s: {status}"
        await asyncio.sleep(0.1)


async def assert_limit_shared(apis: Sequence[Api], token: str, limit: int) -> None:
    """``limit + 10`` concurrent turns spread over the processes: exactly ``limit`` pass."""
    outcomes = await asyncio.gather(*(apis[i % len(apis)].chat(token) for i in range(limit + 10)))
    statuses = Counter(o.status for o in outcomes)
    assert statuses == {200: limit, 429: 10}, statuses


async def test_redis_killed_under_load(
    denis_factory: Callable[..., DenisProcess],
    redis_server: RedisServer,
    data_dir: Path,
    request: pytest.FixtureRequest,
) -> None:
    token = create_token(data_dir, "alice")
    proc = denis_factory(chaos_env(redis_server))
    async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT_S) as client:
        api = Api(client, proc, token)
        assert (await api.chat()).status == 200
        assert_on_redis(await api.status())

        run = await under_load([api], [token], [(1.0, redis_server.kill)], tail_s=2.5)

        assert_all_answered(run, request, allowed=frozenset({200}))
        killed = run.marks[0]
        before = run.finished_before(killed.started_s)
        after = run.started_between(killed.ended_s)
        assert len(before) >= WORKERS, "too little load before the kill"
        assert len(after) >= WORKERS, "too little load after the kill"
        assert all(o.degraded == [] for o in before)
        assert all("sync" in o.degraded for o in after)
        assert await api.signal(REDIS_DOWN) == 1
        assert await api.signal("breaker.opened") >= 1
        assert_fallback(await api.status())
        late = await api.chat()
        assert late.status == 200
        assert "sync" in late.degraded


async def test_redis_hung_under_load_then_recovers(
    denis_factory: Callable[..., DenisProcess],
    redis_server: RedisServer,
    data_dir: Path,
    request: pytest.FixtureRequest,
) -> None:
    token = create_token(data_dir, "alice")
    proc = denis_factory(chaos_env(redis_server))
    async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT_S) as client:
        api = Api(client, proc, token)
        assert (await api.chat()).status == 200
        assert_on_redis(await api.status())

        run = await under_load([api], [token], [(1.0, redis_server.pause)], tail_s=2.5)

        assert_all_answered(run, request, allowed=frozenset({200}))
        paused = run.marks[0]
        before = run.finished_before(paused.started_s)
        after = run.started_between(paused.ended_s)
        assert len(before) >= WORKERS, "too little load before the pause"
        assert len(after) >= WORKERS, "too little load after the pause"
        assert all(o.degraded == [] for o in before)
        assert all("sync" in o.degraded for o in after)
        assert await api.signal(REDIS_DOWN) == 1
        assert_fallback(await api.status())

        redis_server.resume()
        record(request, "recovery_s", round(await wait_back_on_redis(api, token), 3))
        assert await api.signal(REDIS_DOWN) == 1  # still one outage
        after_recovery = await api.chat()
        assert after_recovery.status == 200
        assert after_recovery.degraded == []


async def test_redis_restarted_under_load(
    denis_factory: Callable[..., DenisProcess],
    redis_server: RedisServer,
    data_dir: Path,
    request: pytest.FixtureRequest,
) -> None:
    limit = 20
    token = create_token(data_dir, "alice")
    users = {name: create_token(data_dir, name) for name in ("before", "after", "probe")}
    first_load = [create_token(data_dir, f"load-a{w}") for w in range(WORKERS)]
    second_load = [create_token(data_dir, f"load-b{w}") for w in range(WORKERS)]
    env = chaos_env(redis_server, DENIS_RATE_LIMIT_USER=f"{limit}/minute")
    procs = [denis_factory(env), denis_factory(env)]
    async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT_S) as client:
        apis = [Api(client, proc, token) for proc in procs]
        await assert_limit_shared(apis, users["before"], limit)

        # Killed, then started again on the same port (empty: no persistence), under load.
        run = await under_load(
            apis, first_load, [(1.0, redis_server.kill), (1.5, redis_server.start)], tail_s=1.5
        )

        assert_all_answered(run, request, allowed=frozenset({200, 429}))
        killed, started = run.marks
        down = [
            o
            for o in run.started_between(killed.ended_s)
            if o.ended_s < started.started_s  # served while nothing listened
        ]
        assert len([o for o in down if o.status == 200]) >= WORKERS, "too little load in the outage"
        assert all("sync" in o.degraded for o in down if o.status == 200)
        recovery_s = max([await wait_back_on_redis(api, users["probe"]) for api in apis])
        record(request, "recovery_s", round(recovery_s, 3))
        # Back on the one shared Redis: the limit holds across both processes again.
        await assert_limit_shared(apis, users["after"], limit)
        for api in apis:
            assert await api.signal(REDIS_DOWN) == 1

        # A second outage is a second count, whatever the load does during it.
        second = await under_load(apis, second_load, [(0.3, redis_server.kill)], tail_s=1.5)
        assert_all_answered(second, request, allowed=frozenset({200, 429}))
        for api in apis:
            assert await api.signal(REDIS_DOWN) == 2
            assert_fallback(await api.status())


async def test_rate_limit_holds_per_process_while_redis_is_down(
    denis_factory: Callable[..., DenisProcess], redis_server: RedisServer, data_dir: Path
) -> None:
    limit = 5
    token = create_token(data_dir, "alice")
    env = chaos_env(redis_server, DENIS_RATE_LIMIT_USER=f"{limit}/minute")
    procs = [denis_factory(env), denis_factory(env)]
    async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT_S) as client:
        apis = [Api(client, proc, token) for proc in procs]
        for api in apis:
            assert_on_redis(await api.status())

        redis_server.kill()

        # Fail-open to the in-memory limiter: each process enforces the limit on its own.
        for api in apis:
            outcomes = await asyncio.gather(*(api.chat() for _ in range(limit + 3)))
            ok = [o for o in outcomes if o.status == 200]
            limited = [o for o in outcomes if o.status == 429]
            assert len(ok) == limit, Counter(o.status for o in outcomes)
            assert len(limited) == 3, Counter(o.status for o in outcomes)
            assert all("sync" in o.degraded for o in ok)
            for outcome in limited:
                assert outcome.body["error"]["code"] == "rate_limited"
                assert outcome.retry_after is not None
                assert 1 <= int(outcome.retry_after) <= 60
            assert (await api.chat()).status == 429
            assert await api.signal(REDIS_DOWN) == 1
            assert_fallback(await api.status())
