"""Several real Denis processes share one real redis-server: a limit is a limit for all of them.

Three ``python -m denis serve`` processes point at the same Redis. A rate limit of N per window
admits N requests in total however they are spread over the processes (not N per process), and
a daily token budget is spent from one shared account.

The Redis timeout is raised to 1 s here: these tests are about sharing, not about detecting a
slow Redis, and a spurious 100 ms stall on a loaded machine would drop a process to its
in-memory fallback. Each test also checks that no process ever fell back, so a pass really
comes from the shared Redis state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from denis.sync_plane.budget import count_tokens
from probes import signal_in
from servers import DenisProcess, RedisServer, create_token

pytestmark = pytest.mark.integration

PROCESSES = 3
HIGH_LIMIT = "100000/minute"


def _env(redis_server: RedisServer, **extra: str) -> dict[str, str]:
    return {
        "DENIS_REDIS_URL": redis_server.url,
        "DENIS_REDIS_TIMEOUT_S": "1",
        "DENIS_RATE_LIMIT_USER": HIGH_LIMIT,
        "DENIS_RATE_LIMIT_CLIENT": HIGH_LIMIT,
        **extra,
    }


def _warnings(procs: list[DenisProcess]) -> str:
    """What the processes logged at warning level or about the responder: why a turn degraded."""
    lines = [
        line[:300]
        for proc in procs
        for line in proc.log_path.read_text(errors="replace").splitlines()
        if '"warning"' in line or '"error"' in line or "responder" in line
    ]
    return "\n".join(lines[-20:])


async def _start(factory: Callable[..., DenisProcess], env: dict[str, str]) -> list[DenisProcess]:
    return list(await asyncio.gather(*(asyncio.to_thread(factory, env) for _ in range(PROCESSES))))


async def _signal_count(
    client: httpx.AsyncClient, proc: DenisProcess, token: str, name: str
) -> float:
    response = await client.get(f"{proc.url}/metrics", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    return signal_in(response.text, name)


async def _assert_stayed_on_redis(
    client: httpx.AsyncClient, procs: list[DenisProcess], token: str
) -> None:
    for proc in procs:
        assert await _signal_count(client, proc, token, "rate_limit.redis_down") == 0
        status = await client.get(
            f"{proc.url}/status", headers={"Authorization": f"Bearer {token}"}
        )
        assert status.json()["zones"]["sync"]["rate_limiter"] == "redis"


async def test_rate_limit_is_shared_across_processes(
    denis_factory: Callable[..., DenisProcess], redis_server: RedisServer, data_dir: Path
) -> None:
    token = create_token(data_dir, "alice")
    procs = await _start(denis_factory, _env(redis_server, DENIS_RATE_LIMIT_USER="10/minute"))
    headers = {"Authorization": f"Bearer {token}"}

    async with httpx.AsyncClient(timeout=10) as client:
        responses = await asyncio.gather(
            *(
                client.post(
                    f"{procs[i % PROCESSES].url}/chat", json={"text": "hello"}, headers=headers
                )
                for i in range(30)
            )
        )
        ok = [r for r in responses if r.status_code == 200]
        limited = [r for r in responses if r.status_code == 429]
        assert len(ok) == 10, [r.status_code for r in responses]
        assert len(limited) == 20, [r.status_code for r in responses]
        for response in ok:
            assert response.json()["degraded"] == [], _warnings(procs)
        for response in limited:
            assert response.json()["error"]["code"] == "rate_limited"
            assert 1 <= int(response.headers["Retry-After"]) <= 60
        # Every process refuses once the shared count is spent, whichever admitted the 10.
        for proc in procs:
            late = await client.post(f"{proc.url}/chat", json={"text": "hello"}, headers=headers)
            assert late.status_code == 429
        await _assert_stayed_on_redis(client, procs, token)


async def test_daily_budget_is_shared_across_processes(
    denis_factory: Callable[..., DenisProcess], redis_server: RedisServer, data_dir: Path
) -> None:
    limit, reserve, text = 150, 64, "hello"
    token = create_token(data_dir, "alice")
    procs = await _start(
        denis_factory,
        _env(
            redis_server,
            DENIS_BUDGET_TOKENS_PER_DAY=str(limit),
            DENIS_BUDGET_REPLY_RESERVE_TOKENS=str(reserve),
        ),
    )
    headers = {"Authorization": f"Bearer {token}"}

    # One account, spent in order: a turn reserves its text plus the reply reserve and is
    # settled at its real size, so the expected verdict of each request follows from the ones
    # before it, whichever process served them. Separate budgets per process would admit all 24.
    used, admitted, refused_by = 0, 0, set()
    async with httpx.AsyncClient(timeout=10) as client:
        for i in range(24):
            proc = procs[i % PROCESSES]
            response = await client.post(f"{proc.url}/chat", json={"text": text}, headers=headers)
            if used + count_tokens(text) + reserve > limit:
                assert response.status_code == 403, (i, used, response.text)
                assert response.json()["error"]["code"] == "budget_exceeded"
                refused_by.add(proc.port)
            else:
                assert response.status_code == 200, (i, used, response.text)
                used += count_tokens(text) + count_tokens(response.json()["reply"])
                admitted += 1
        assert admitted > 0
        assert refused_by == {proc.port for proc in procs}
        for proc in procs:
            assert await _signal_count(client, proc, token, "gate.budget_exceeded") >= 1
        await _assert_stayed_on_redis(client, procs, token)
