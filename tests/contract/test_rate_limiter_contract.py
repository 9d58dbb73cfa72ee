"""One rate-limiter contract, run against the Redis window (the turn's admission script, one
window at a time) and the in-memory limiter.

Both are fixed windows that start at a key's first hit, so a short real sleep is the only way to
see a window open again; every other test stays far inside a one-minute window.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import pytest
from limits.aio.storage import RedisStorage
from limits.aio.strategies import FixedWindowRateLimiter

from denis.sync_plane.constants import RATE_LIMIT_PREFIX
from denis.sync_plane.limiter import RateLimiter, RateRule
from denis.sync_plane.redis_admission import RedisAdmission

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
    limiter = RedisAdmission(redis_connection.batcher)
    rule = RateRule.parse("user", "5/minute")
    await hit_many(limiter, rule, key, 6)

    keys = await redis_connection.client.keys("*")
    assert keys
    for raw in keys:
        assert raw.decode().startswith(f"{RATE_LIMIT_PREFIX}:")
        assert 0 < await redis_connection.client.ttl(raw) <= rule.window_s


@pytest.mark.integration
async def test_a_refused_check_on_redis_is_one_command(redis_connection, key: str) -> None:
    limiter = RedisAdmission(redis_connection.batcher)
    rule = RateRule.parse("user", "1/minute")
    assert (await limiter.hit(rule, key)).allowed
    before = redis_connection.batcher.commands

    verdict = await limiter.hit(rule, key)

    assert not verdict.allowed
    assert redis_connection.batcher.commands - before == 1  # the count and its TTL, in one script


@pytest.mark.integration
async def test_the_windows_are_limits_own_fixed_windows(
    redis_connection, redis_server: RedisServer, key: str
) -> None:
    """``limits``'s ``FixedWindowRateLimiter`` on its own Redis storage and Denis's admission
    script count the same windows, on the same keys: hits from either are seen by both."""
    storage = RedisStorage(
        f"async+{redis_server.url}", implementation="redispy", key_prefix=RATE_LIMIT_PREFIX
    )
    theirs = FixedWindowRateLimiter(storage)
    ours = RedisAdmission(redis_connection.batcher)
    rule = RateRule.parse("user", "4/minute")

    try:
        assert await theirs.hit(rule.item, rule.name, key)
        assert (await ours.hit(rule, key)).allowed
        assert await theirs.hit(rule.item, rule.name, key)
        assert (await ours.hit(rule, key)).allowed  # the fourth hit, whoever made the others
        assert not await theirs.test(rule.item, rule.name, key)
        assert not (await ours.hit(rule, key)).allowed
        reset_at, remaining = await theirs.get_window_stats(rule.item, rule.name, key)
        assert remaining == 0
        assert time.time() < reset_at <= time.time() + rule.window_s
    finally:
        await storage.bridge.storage.aclose()  # limits closes nothing of its own
