"""One budget-store contract, run against the Redis store and the in-memory one.

``adjust_soon`` is not waited for: what it did is read back with the next reserve, which the
contract says comes after it (on Redis, the same connection, in order)."""

from __future__ import annotations

import asyncio

import pytest

from denis.sync_plane.budget import BudgetStore, RedisBudgetStore
from denis.sync_plane.constants import BUDGET_KEY_TTL_S, BUDGET_PREFIX


async def total(store: BudgetStore, key: str) -> int:
    """The key's total, read by a reserve of nothing."""
    return (await store.reserve(key, 0, 10**9))[1]


async def test_a_reserve_within_the_limit_is_granted_with_the_new_total(
    budget_store: BudgetStore, key: str
) -> None:
    assert await budget_store.reserve(key, 30, 100) == (True, 30)
    assert await budget_store.reserve(key, 45, 100) == (True, 75)
    assert await budget_store.reserve(key, 25, 100) == (True, 100)  # up to the limit exactly


async def test_a_reserve_over_the_limit_is_refused_and_changes_nothing(
    budget_store: BudgetStore, key: str
) -> None:
    assert await budget_store.reserve(key, 60, 100) == (True, 60)

    assert await budget_store.reserve(key, 41, 100) == (False, 60)
    assert await budget_store.reserve(key, 500, 100) == (False, 60)

    assert await budget_store.reserve(key, 40, 100) == (True, 100)
    assert await budget_store.reserve(key, 1, 100) == (False, 100)


async def test_a_first_reserve_bigger_than_the_limit_is_refused(
    budget_store: BudgetStore, key: str
) -> None:
    assert await budget_store.reserve(key, 101, 100) == (False, 0)
    assert await budget_store.reserve(key, 100, 100) == (True, 100)


async def test_adjust_moves_the_total_both_ways_never_below_zero(
    budget_store: BudgetStore, key: str
) -> None:
    assert await budget_store.reserve(key, 50, 100) == (True, 50)

    budget_store.adjust_soon(key, 10)
    assert await total(budget_store, key) == 60
    budget_store.adjust_soon(key, -25)
    assert await total(budget_store, key) == 35
    budget_store.adjust_soon(key, -1000)
    assert await total(budget_store, key) == 0
    budget_store.adjust_soon(key, 0)
    assert await total(budget_store, key) == 0
    assert await budget_store.reserve(key, 100, 100) == (True, 100)


async def test_adjust_on_an_unseen_key_starts_from_zero(
    budget_store: BudgetStore, key: str, other_key: str
) -> None:
    budget_store.adjust_soon(key, -5)
    assert await total(budget_store, key) == 0
    budget_store.adjust_soon(other_key, 12)
    assert await total(budget_store, other_key) == 12
    assert await budget_store.reserve(other_key, 88, 100) == (True, 100)


async def test_concurrent_reserves_never_overspend(budget_store: BudgetStore, key: str) -> None:
    results = await asyncio.gather(*(budget_store.reserve(key, 7, 100) for _ in range(100)))

    granted_totals = sorted(total for granted, total in results if granted)
    assert granted_totals == [7 * n for n in range(1, 15)]  # floor(100 / 7) == 14 grants
    assert all(total <= 100 for _, total in results)
    assert all(total == 98 for granted, total in results if not granted)
    budget_store.adjust_soon(key, 0)
    assert await total(budget_store, key) == 98


async def test_keys_are_independent(budget_store: BudgetStore, key: str, other_key: str) -> None:
    assert await budget_store.reserve(key, 100, 100) == (True, 100)
    assert await budget_store.reserve(key, 1, 100) == (False, 100)

    assert await budget_store.reserve(other_key, 70, 100) == (True, 70)
    budget_store.adjust_soon(other_key, -20)
    assert await total(budget_store, other_key) == 50
    budget_store.adjust_soon(key, 0)
    assert await total(budget_store, key) == 100


@pytest.mark.integration
async def test_redis_keys_sit_under_the_prefix_with_a_ttl(
    redis_connection, key: str, other_key: str
) -> None:
    store = RedisBudgetStore(redis_connection.batcher)
    client = redis_connection.client
    await store.reserve(key, 40, 100)
    store.adjust_soon(other_key, 5)
    await redis_connection.batcher.call("PING")  # sent after it, answered after it

    keys = sorted(raw.decode() for raw in await client.keys("*"))
    assert keys == sorted([f"{BUDGET_PREFIX}:{key}", f"{BUDGET_PREFIX}:{other_key}"])
    for name in keys:
        assert 0 < await client.ttl(name) <= BUDGET_KEY_TTL_S
    assert await client.get(f"{BUDGET_PREFIX}:{key}") == b"40"

    await client.persist(f"{BUDGET_PREFIX}:{key}")
    store.adjust_soon(key, -50)
    await redis_connection.batcher.call("PING")  # sent after it, answered after it
    assert (
        await client.get(f"{BUDGET_PREFIX}:{key}") == b"0"
    )  # settling renews the TTL, even at the floor
    assert 0 < await client.ttl(f"{BUDGET_PREFIX}:{key}") <= BUDGET_KEY_TTL_S
