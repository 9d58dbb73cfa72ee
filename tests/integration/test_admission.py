"""A turn's admission on a real ``redis-server``: the address's window, the user's window and the
budget in one script, in the pipeline's order and with its stops; settles that land before the
next reservation; the in-memory fallback when Redis dies or hangs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from denis.errors import BudgetExceededError, RateLimitedError
from denis.resilience import (
    BreakerState,
    CircuitBreaker,
    Clock,
    Deadline,
    ManualClock,
    MonotonicClock,
    Signal,
    Signals,
)
from denis.resilience.metrics import Metrics
from denis.sync_plane.admission import AdmissionGate, RateRules
from denis.sync_plane.budget import BudgetGate, MemoryBudgetStore
from denis.sync_plane.constants import BUDGET_PREFIX
from denis.sync_plane.limiter import MemoryRateLimiter, RateRule
from denis.sync_plane.redis_admission import rate_key
from denis.sync_plane.redis_link import RedisLink

if TYPE_CHECKING:
    from servers import RedisServer

pytestmark = pytest.mark.integration


@dataclass
class Gates:
    admission: AdmissionGate
    budget: BudgetGate
    link: RedisLink
    rules: RateRules
    registry: CollectorRegistry

    def signals(self, signal: Signal) -> float:
        value = self.registry.get_sample_value("denis_signal_total", {"signal": signal.value})
        return value or 0.0


def gates(  # noqa: PLR0913 - each test sets the few it cares about
    url: str,
    *,
    user: str = "100/minute",
    client: str = "100/minute",
    tokens_per_day: int = 1000,
    failure_threshold: int = 3,
    clock: Clock | None = None,
) -> Gates:
    clock = clock or MonotonicClock()
    registry = CollectorRegistry()
    signals = Signals(Metrics(registry))
    breaker = CircuitBreaker(
        "redis", failure_threshold=failure_threshold, cooldown_s=60, clock=clock
    )
    link = RedisLink(url, timeout_s=1.0, breaker=breaker, signals=signals)
    budget = BudgetGate(
        memory=MemoryBudgetStore(max_keys=1000, clock=clock),
        link=link,
        tokens_per_day=tokens_per_day,
        reply_reserve_tokens=0,
        signals=signals,
    )
    rules = RateRules(user=RateRule.parse("user", user), client=RateRule.parse("client", client))
    admission = AdmissionGate(
        rules=rules,
        limiter=MemoryRateLimiter(max_keys=1000, clock=clock),
        budget=budget,
        link=link,
    )
    return Gates(admission, budget, link, rules, registry)


MakeGates = Callable[..., Gates]


@pytest.fixture
async def make_gates(redis_server: RedisServer) -> AsyncIterator[MakeGates]:
    """``gates`` on this test's Redis; their links are closed after the test."""
    made: list[Gates] = []

    def make(**options: Any) -> Gates:
        made.append(gates(redis_server.url, **options))
        return made[-1]

    try:
        yield make
    finally:
        for each in made:
            await each.link.aclose()


def in_time() -> Deadline:
    return Deadline.start(MonotonicClock(), 5)


async def used_today(client: Redis, gates: Gates, user: str) -> int:
    return int(await client.get(f"{BUDGET_PREFIX}:{gates.budget.ask(user, 0).key}") or 0)


async def window(client: Redis, rule: RateRule, key: str) -> int:
    return int(await client.get(rate_key(rule, key)) or 0)


async def test_a_turn_is_admitted_in_one_command(
    make_gates: MakeGates, redis_client: Redis
) -> None:
    gates = make_gates()
    await gates.admission.admit("warm-up", "10.0.0.9", 1, in_time())  # loads the script
    before = gates.link.batcher.commands
    reservation, degraded = await gates.admission.admit("alice", "10.0.0.1", 7, in_time())

    assert gates.link.batcher.commands - before == 1
    assert (reservation.backend, reservation.tokens, degraded) == ("redis", 7, False)
    assert await window(redis_client, gates.rules.client, "10.0.0.1") == 1
    assert await window(redis_client, gates.rules.user, "alice") == 1
    assert await used_today(redis_client, gates, "alice") == 7


async def test_a_refused_address_leaves_the_user_s_window_and_budget_alone(
    make_gates: MakeGates, redis_client: Redis
) -> None:
    gates = make_gates(client="1/minute")
    await gates.admission.admit("alice", "10.0.0.1", 5, in_time())
    with pytest.raises(RateLimitedError) as refused:
        await gates.admission.admit("bob", "10.0.0.1", 5, in_time())

    assert "client" in refused.value.detail
    assert 55 <= refused.value.retry_after_s <= 60  # the window began a moment ago
    assert await window(redis_client, gates.rules.user, "bob") == 0
    assert await used_today(redis_client, gates, "bob") == 0


async def test_a_refused_user_leaves_the_budget_alone(
    make_gates: MakeGates, redis_client: Redis
) -> None:
    gates = make_gates(user="1/minute")
    await gates.admission.admit("alice", "10.0.0.1", 5, in_time())
    with pytest.raises(RateLimitedError) as refused:
        await gates.admission.admit("alice", "10.0.0.2", 5, in_time())

    assert "user" in refused.value.detail
    assert await window(redis_client, gates.rules.client, "10.0.0.2") == 1  # checked, and passed
    assert await used_today(redis_client, gates, "alice") == 5  # the first turn's only


async def test_a_refused_budget_counts_the_windows_and_says_why(
    make_gates: MakeGates, redis_client: Redis
) -> None:
    gates = make_gates(tokens_per_day=10)
    await gates.admission.admit("alice", "10.0.0.1", 8, in_time())
    with pytest.raises(BudgetExceededError) as refused:
        await gates.admission.admit("alice", "10.0.0.1", 8, in_time())

    assert "8 used" in refused.value.detail
    assert gates.signals(Signal.GATE_BUDGET_EXCEEDED) == 1
    assert await window(redis_client, gates.rules.user, "alice") == 2  # the windows were hit
    assert await used_today(redis_client, gates, "alice") == 8


async def test_settles_and_releases_land_before_the_next_reservation(
    make_gates: MakeGates, redis_client: Redis
) -> None:
    gates = make_gates(tokens_per_day=20)
    first, _ = await gates.admission.admit("alice", "10.0.0.1", 15, in_time())
    gates.budget.settle(first, 5)  # not waited for: 10 tokens back
    second, _ = await gates.admission.admit("alice", "10.0.0.1", 15, in_time())  # 5 + 15
    gates.budget.release(second)  # refused later on: all 15 back
    await gates.admission.admit("alice", "10.0.0.1", 15, in_time())  # 5 + 15 again

    assert await used_today(redis_client, gates, "alice") == 20


async def test_no_settle_is_sent_while_the_breaker_is_open(
    make_gates: MakeGates, redis_client: Redis
) -> None:
    gates = make_gates(tokens_per_day=20)
    reservation, _ = await gates.admission.admit("alice", "10.0.0.1", 1, in_time())
    breaker = gates.link.breaker
    while breaker.state is BreakerState.CLOSED:  # as if Redis had failed, while it is fine
        permit = breaker.try_acquire()
        assert permit is not None
        breaker.record_failure(permit)

    gates.budget.settle(reservation, 9)  # left at its estimate: Redis is known bad
    await asyncio.sleep(0.05)

    assert await used_today(redis_client, gates, "alice") == 1


async def test_admission_falls_back_to_memory_when_redis_dies(
    make_gates: MakeGates, redis_server: RedisServer
) -> None:
    gates = make_gates(user="3/minute")
    for _ in range(2):
        reservation, degraded = await gates.admission.admit("alice", "a", 1, in_time())
        assert (reservation.backend, degraded) == ("redis", False)

    redis_server.kill()

    # Memory counts from zero: three more turns, the fourth refused; one signal.
    for _ in range(3):
        reservation, degraded = await gates.admission.admit("alice", "a", 1, in_time())
        assert (reservation.backend, degraded) == ("memory", True)
    with pytest.raises(RateLimitedError):
        await gates.admission.admit("alice", "a", 1, in_time())
    assert gates.signals(Signal.RATE_LIMIT_REDIS_DOWN) == 1
    assert gates.link.degraded
    assert gates.link.breaker.state is BreakerState.OPEN
    assert gates.registry.get_sample_value("denis_rate_limiter_on_redis") == 0


async def test_a_request_out_of_time_says_nothing_about_redis(
    make_gates: MakeGates, redis_server: RedisServer
) -> None:
    """A hung Redis call cut short by the request's deadline (not by the link's own timeout) is
    handed back without a verdict: no breaker failure, no redis_down, no fallback mode."""
    clock = ManualClock()
    gates = make_gates(failure_threshold=1, clock=clock)
    try:
        redis_server.pause()
        reservation, degraded = await gates.admission.admit(
            "alice", "a", 1, Deadline.start(clock, 0.05)
        )
        assert (reservation.backend, degraded) == ("memory", True)
        spent = Deadline.start(clock, 1.0)
        clock.advance(2.0)
        reservation, _ = await gates.admission.admit("alice", "a", 1, spent)  # not even tried
        assert reservation.backend == "memory"
        assert gates.link.breaker.state is BreakerState.CLOSED
        assert not gates.link.degraded
        assert gates.signals(Signal.RATE_LIMIT_REDIS_DOWN) == 0
    finally:
        redis_server.resume()
