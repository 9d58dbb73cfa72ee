"""Contract fixtures: every test here runs once per implementation (``redis`` and ``memory``).

The Redis side runs on a real ``redis-server`` (the function-scoped ``redis_server`` fixture),
through a batcher built the way the app builds it, and is closed after the test so no connection is
left open (warnings are errors). The memory side runs on the real monotonic clock, because the
Redis side runs on real time too.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import pytest
from redis.asyncio import Redis

from denis.resilience import MonotonicClock
from denis.sync_plane.budget import BudgetStore, MemoryBudgetStore, RedisBudgetStore
from denis.sync_plane.limiter import MemoryRateLimiter, RateLimiter
from denis.sync_plane.redis_admission import RedisAdmission
from denis.sync_plane.redis_batch import CommandBatcher

if TYPE_CHECKING:
    from servers import RedisServer

Backend = Literal["redis", "memory"]

MAX_KEYS = 10_000


@dataclass(frozen=True, slots=True)
class RedisConnection:
    batcher: CommandBatcher  # what the stores use
    client: Redis  # for looking at what they wrote


@pytest.fixture
async def redis_connection(
    redis_server: RedisServer, redis_client: Redis
) -> AsyncIterator[RedisConnection]:
    batcher = CommandBatcher(redis_server.url, timeout_s=1.0)
    try:
        yield RedisConnection(batcher, redis_client)
    finally:
        await batcher.aclose()


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.integration), "memory"])
def backend(request: pytest.FixtureRequest) -> Backend:
    name: Backend = request.param
    return name


@pytest.fixture
def rate_limiter(backend: Backend, request: pytest.FixtureRequest) -> RateLimiter:
    if backend == "redis":
        connection: RedisConnection = request.getfixturevalue("redis_connection")
        return RedisAdmission(connection.batcher)
    return MemoryRateLimiter(max_keys=MAX_KEYS, clock=MonotonicClock())


@pytest.fixture
def budget_store(backend: Backend, request: pytest.FixtureRequest) -> BudgetStore:
    if backend == "redis":
        connection: RedisConnection = request.getfixturevalue("redis_connection")
        return RedisBudgetStore(connection.batcher)
    return MemoryBudgetStore(max_keys=MAX_KEYS, clock=MonotonicClock())


@pytest.fixture
def key() -> str:
    return f"contract-{uuid.uuid4().hex}"


@pytest.fixture
def other_key() -> str:
    return f"contract-{uuid.uuid4().hex}"
