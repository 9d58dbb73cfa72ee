"""One rate-limiter contract, run against the Redis limiter and the in-memory one.

Both are fixed windows that start at a key's first hit, so a short real sleep is the only way to
see a window open again; every other test stays far inside a one-minute window.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import pytest
from prometheus_client import CollectorRegistry

from denis.resilience import (
    BreakerState,
    CircuitBreaker,
    Deadline,
    ManualClock,
    MonotonicClock,
    Signal,
    Signals,
)
from denis.resilience.metrics import Metrics
from denis.sync_plane.constants import RATE_LIMIT_PREFIX
from denis.sync_plane.limiter import (
    BatchedRedisStorage,
    FailoverRateLimiter,
    MemoryRateLimiter,
    RateLimiter,
    RateRule,
    RedisRateLimiter,
)
from denis.sync_plane.redis_link import RedisLink

if TYPE_CHECKING:
    from servers import RedisServer


async def hit_many(limiter: RateLimiter, rule: RateRule, key: str, times: int) -> list[bool]:
    return [(await limiter.hit(rule, key)).allowed for _ in range(times)]


async def test_exactly_the_limit_is_allowed_then_refused(
    rate_limiter: RateLimiter, backend: str, key: str
) -> None:
    rule = RateRule.parse("user", "5/minute")

    for _ in range(5):
        verdict = await rate_limiter.hit(rule, key)
        assert verdict.allowed
        assert verdict.backend == backend
    for _ in range(3):
        verdict = await rate_limiter.hit(rule, key)
        assert not verdict.allowed
        assert verdict.backend == backend
        # The window began a moment ago, at the first hit: its end is almost a minute away.
        assert rule.window_s - 5 <= verdict.retry_after_s <= rule.window_s


async def test_different_keys_are_independent(
    rate_limiter: RateLimiter, key: str, other_key: str
) -> None:
    rule = RateRule.parse("user", "3/minute")

    assert await hit_many(rate_limiter, rule, key, 4) == [True, True, True, False]
    assert await hit_many(rate_limiter, rule, other_key, 4) == [True, True, True, False]
    assert not (await rate_limiter.hit(rule, key)).allowed


async def test_different_rule_names_are_independent(rate_limiter: RateLimiter, key: str) -> None:
    per_user = RateRule.parse("user", "3/minute")
    per_address = RateRule.parse("ip", "3/minute")

    assert await hit_many(rate_limiter, per_user, key, 4) == [True, True, True, False]
    assert await hit_many(rate_limiter, per_address, key, 4) == [True, True, True, False]
    assert not (await rate_limiter.hit(per_user, key)).allowed


async def test_a_short_window_opens_again_after_it_passes(
    rate_limiter: RateLimiter, backend: str, key: str
) -> None:
    # Two seconds rather than one: three local hits must land inside the window even when a
    # noisy machine stalls the test for a moment.
    rule = RateRule.parse("user", "2 per 2 seconds")
    assert rule.window_s == 2

    assert await hit_many(rate_limiter, rule, key, 3) == [True, True, False]
    await asyncio.sleep(rule.window_s + 0.3)

    verdict = await rate_limiter.hit(rule, key)
    assert verdict.allowed
    assert verdict.backend == backend
    assert await hit_many(rate_limiter, rule, key, 2) == [True, False]


async def test_concurrent_hits_admit_exactly_the_limit(
    rate_limiter: RateLimiter, backend: str, key: str
) -> None:
    rule = RateRule.parse("user", "20/minute")

    verdicts = await asyncio.gather(*(rate_limiter.hit(rule, key) for _ in range(50)))

    assert sum(verdict.allowed for verdict in verdicts) == 20
    assert {verdict.backend for verdict in verdicts} == {backend}
    for verdict in verdicts:
        if not verdict.allowed:
            assert 1 <= verdict.retry_after_s <= rule.window_s
    assert not (await rate_limiter.hit(rule, key)).allowed


@pytest.mark.integration
async def test_redis_keys_sit_under_the_prefix_with_a_ttl(redis_connection, key: str) -> None:
    limiter = RedisRateLimiter(redis_connection.batcher)
    rule = RateRule.parse("user", "5/minute")
    await hit_many(limiter, rule, key, 6)

    keys = await redis_connection.client.keys("*")
    assert keys
    for raw in keys:
        assert raw.decode().startswith(f"{RATE_LIMIT_PREFIX}:")
        assert 0 < await redis_connection.client.ttl(raw) <= rule.window_s


@pytest.mark.integration
async def test_a_refused_check_on_redis_reads_only_the_window_end(
    redis_connection, key: str
) -> None:
    limiter = RedisRateLimiter(redis_connection.batcher)
    rule = RateRule.parse("user", "1/minute")
    assert (await limiter.hit(rule, key)).allowed
    before = redis_connection.batcher.commands

    verdict = await limiter.hit(rule, key)

    assert not verdict.allowed
    assert redis_connection.batcher.commands - before == 2  # the count, then its TTL


@pytest.mark.integration
async def test_the_limits_storage_answers_every_storage_call(redis_connection, key: str) -> None:
    """``BatchedRedisStorage`` is a whole ``limits`` storage, not only the ``incr`` a hit uses."""
    storage = BatchedRedisStorage(redis_connection.batcher)
    client = redis_connection.client
    await client.set("not-denis", "kept")

    assert await storage.check()
    assert await storage.incr(key, 60) == 1
    assert await storage.incr(key, 60, amount=3) == 4
    assert await storage.get(key) == 4
    assert await storage.get("never-hit") == 0
    assert time.time() < await storage.get_expiry(key) <= time.time() + 60
    await storage.incr("other", 60)
    await storage.clear(key)
    assert await storage.get(key) == 0
    assert await storage.get("other") == 1
    assert await storage.reset() == 1  # only keys under the limiter's prefix
    assert await storage.get("other") == 0
    assert await client.get("not-denis") == b"kept"


def signal_count(registry: CollectorRegistry, signal: Signal) -> float | None:
    return registry.get_sample_value("denis_signal_total", {"signal": signal.value})


@pytest.mark.integration
async def test_failover_limiter_falls_back_to_memory_when_redis_dies(
    redis_server: RedisServer, key: str, other_key: str
) -> None:
    registry = CollectorRegistry()
    signals = Signals(Metrics(registry))
    link = RedisLink(
        redis_server.url,
        timeout_s=1.0,
        breaker=CircuitBreaker("redis", failure_threshold=3, cooldown_s=60),
        signals=signals,
    )
    limiter = FailoverRateLimiter(
        MemoryRateLimiter(max_keys=1000, clock=MonotonicClock()),
        RedisRateLimiter(link.batcher),
        link,
    )
    deadline = Deadline.start(MonotonicClock(), 5)
    roomy = RateRule.parse("user", "100/minute")
    try:
        for _ in range(2):
            verdict = await limiter.hit(roomy, key, deadline)
            assert verdict.allowed
            assert verdict.backend == "redis"
        assert signal_count(registry, Signal.RATE_LIMIT_REDIS_DOWN) == 0

        redis_server.kill()

        for _ in range(6):
            verdict = await limiter.hit(roomy, key, deadline)
            assert verdict.allowed
            assert verdict.backend == "memory"
        assert signal_count(registry, Signal.RATE_LIMIT_REDIS_DOWN) == 1
        assert link.degraded
        assert link.breaker.state is BreakerState.OPEN
        assert registry.get_sample_value("denis_rate_limiter_on_redis") == 0

        # The fallback still limits.
        tight = RateRule.parse("user", "3/minute")
        verdicts = [await limiter.hit(tight, other_key, deadline) for _ in range(4)]
        assert [verdict.allowed for verdict in verdicts] == [True, True, True, False]
        assert {verdict.backend for verdict in verdicts} == {"memory"}
        assert signal_count(registry, Signal.RATE_LIMIT_REDIS_DOWN) == 1
    finally:
        await link.aclose()


async def test_a_request_out_of_time_says_nothing_about_redis(
    redis_server: RedisServer, key: str
) -> None:
    """A hung Redis call cut short by the request's deadline (not by the link's own timeout) is
    handed back without a verdict: no breaker failure, no redis_down, no fallback mode."""
    registry = CollectorRegistry()
    signals = Signals(Metrics(registry))
    clock = ManualClock()
    breaker = CircuitBreaker("redis", failure_threshold=1, cooldown_s=60, clock=clock)
    link = RedisLink(redis_server.url, timeout_s=1.0, breaker=breaker, signals=signals)
    limiter = FailoverRateLimiter(
        MemoryRateLimiter(max_keys=1000, clock=clock), RedisRateLimiter(link.batcher), link
    )
    rule = RateRule.parse("user", "100/minute")
    try:
        redis_server.pause()
        verdict = await limiter.hit(rule, key, Deadline.start(clock, 0.05))
        assert verdict.backend == "memory"
        spent = Deadline.start(clock, 1.0)
        clock.advance(2.0)
        verdict = await limiter.hit(rule, key, spent)  # no time left: Redis is not even tried
        assert verdict.backend == "memory"
        assert breaker.state is BreakerState.CLOSED
        assert not link.degraded
        assert signal_count(registry, Signal.RATE_LIMIT_REDIS_DOWN) == 0
    finally:
        redis_server.resume()
        await link.aclose()
