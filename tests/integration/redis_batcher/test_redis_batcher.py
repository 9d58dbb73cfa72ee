"""The sync plane's ``CommandBatcher`` on a real ``redis-server``: shared round trips, each
caller's own reply or error, and a hung, dead or flushed server contained."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from denis.sync_plane.redis_batch import CommandBatcher, pack

if TYPE_CHECKING:
    from servers import RedisServer

pytestmark = pytest.mark.integration

TIMEOUT_S = 0.3


@pytest.fixture
async def batcher(redis_server: RedisServer) -> AsyncIterator[CommandBatcher]:
    batcher = CommandBatcher(redis_server.url, timeout_s=TIMEOUT_S)
    try:
        yield batcher
    finally:
        await batcher.aclose()


async def test_concurrent_calls_share_one_round_trip_and_each_gets_its_own_reply(
    batcher: CommandBatcher,
) -> None:
    replies = await asyncio.gather(*(batcher.call("INCRBY", f"k{i % 3}", i) for i in range(30)))

    assert batcher.batches == 1
    assert batcher.commands == 30
    totals = [0, 0, 0]
    for i, reply in enumerate(replies):  # in order on one connection: running totals per key
        totals[i % 3] += i
        assert reply == totals[i % 3]


async def test_calls_made_after_a_reply_go_in_a_later_batch(batcher: CommandBatcher) -> None:
    assert await batcher.call("SET", "a", "1") == b"OK"
    assert await batcher.call("GET", "a") == b"1"
    assert batcher.batches == 2


async def test_an_error_reply_reaches_only_its_own_caller(batcher: CommandBatcher) -> None:
    await batcher.call("SET", "text", "not a number")
    results = await asyncio.gather(
        batcher.call("INCR", "n"),
        batcher.call("INCR", "text"),
        batcher.call("INCR", "n"),
        return_exceptions=True,
    )

    assert results[0] == 1
    assert isinstance(results[1], ResponseError)
    assert results[2] == 2
    assert await batcher.call("GET", "n") == b"2"  # the connection is still in step


async def test_scripts_survive_a_flushed_script_cache(
    batcher: CommandBatcher, redis_client: Redis
) -> None:
    script = batcher.script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    assert await script(["s"], [5]) == 5  # not loaded yet: EVAL
    assert await script(["s"], [5]) == 10  # EVALSHA
    await redis_client.script_flush()
    assert await script(["s"], [5]) == 15


async def test_a_script_not_waited_for_is_loaded_on_every_connect_and_lands_in_order(
    batcher: CommandBatcher, redis_server: RedisServer
) -> None:
    script = batcher.script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    assert await batcher.call("PING") == b"PONG"
    redis_server.restart()  # an empty server: no scripts
    with pytest.raises(RedisConnectionError):
        await batcher.call("PING")  # the old connection is gone
    script.send_nowait(["s"], [5])  # on the new connection, whose hello loaded the script
    assert await batcher.call("GET", "s") == b"5"


async def test_a_script_made_while_connected_is_loaded_before_its_first_use(
    batcher: CommandBatcher,
) -> None:
    assert await batcher.call("PING") == b"PONG"  # connected, with no script to load
    script = batcher.script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    script.send_nowait(["late"], [4])  # in order: the SCRIPT LOAD went out before it
    assert await batcher.call("GET", "late") == b"4"


async def test_a_script_not_waited_for_after_a_live_script_flush_is_sent_again(
    batcher: CommandBatcher, redis_client: Redis
) -> None:
    script = batcher.script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    await script(["s"], [1])
    await redis_client.script_flush()
    script.send_nowait(["s"], [2])  # NOSCRIPT: sent again by EVAL once the error is back
    assert await batcher.call("PING") == b"PONG"
    assert await batcher.call("GET", "s") == b"3"


async def test_a_cancelled_caller_leaves_the_rest_of_its_batch_alone(
    batcher: CommandBatcher,
) -> None:
    calls = [asyncio.ensure_future(batcher.call("INCR", "c")) for _ in range(5)]
    await asyncio.sleep(0)  # queued, not yet answered
    calls[2].cancel()
    results = await asyncio.gather(*calls, return_exceptions=True)

    assert isinstance(results[2], asyncio.CancelledError)
    assert [results[i] for i in (0, 1, 3, 4)] == [1, 2, 4, 5]  # its INCR still ran, in order
    assert await batcher.call("GET", "c") == b"5"


async def test_a_hung_server_fails_the_whole_batch_at_its_timeout(
    batcher: CommandBatcher, redis_server: RedisServer
) -> None:
    assert await batcher.call("SET", "h", "before") == b"OK"
    redis_server.pause()
    try:
        started = time.monotonic()
        results = await asyncio.gather(
            *(batcher.call("INCR", "late") for _ in range(8)), return_exceptions=True
        )
        waited = time.monotonic() - started
    finally:
        redis_server.resume()

    assert all(isinstance(result, TimeoutError) for result in results)
    assert TIMEOUT_S <= waited < TIMEOUT_S + 1.0
    # The half-read connection was dropped: the next replies are this call's, not the
    # stale answers to the timed-out batch that the server sends once it runs again.
    await asyncio.sleep(0.1)
    assert await batcher.call("GET", "h") == b"before"
    assert await batcher.call("SET", "h", "after") == b"OK"
    assert await batcher.call("GET", "h") == b"after"


async def test_a_dead_server_fails_fast_and_a_restarted_one_is_used_again(
    batcher: CommandBatcher, redis_server: RedisServer
) -> None:
    assert await batcher.call("PING") == b"PONG"
    redis_server.kill()
    started = time.monotonic()
    results = await asyncio.gather(
        *(batcher.call("PING") for _ in range(4)), return_exceptions=True
    )
    assert all(isinstance(result, RedisConnectionError) for result in results)
    assert time.monotonic() - started < TIMEOUT_S

    redis_server.start()
    assert await batcher.call("PING") == b"PONG"


async def test_aclose_waits_for_the_batch_on_the_wire(
    redis_server: RedisServer,
) -> None:
    batcher = CommandBatcher(redis_server.url, timeout_s=TIMEOUT_S)
    call = asyncio.ensure_future(batcher.call("INCR", "w"))
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # the batch is sent, its reply not yet read
    await batcher.aclose()
    assert await call == 1  # a connection closed under it would have failed it


async def test_commands_not_waited_for_go_out_in_order_and_aclose_waits_for_them(
    redis_server: RedisServer, redis_client: Redis
) -> None:
    batcher = CommandBatcher(redis_server.url, timeout_s=TIMEOUT_S)
    batcher.send_nowait("SET", "n", "1")
    batcher.send_nowait("INCR", "text-is-not-a-number-but-nobody-waits")
    batcher.send_nowait("SET", "text-is-not-a-number-but-nobody-waits", "x")
    batcher.send_nowait("INCR", "text-is-not-a-number-but-nobody-waits")  # an error reply, dropped
    assert await batcher.call("INCR", "n") == 2  # after the SET queued before it
    batcher.send_nowait("INCRBY", "n", 5)
    await batcher.aclose()  # sent, and answered, before the connection closes

    assert await redis_client.get("n") == b"7"


async def test_aclose_sends_what_is_queued_and_leaves_no_connection_open(
    redis_server: RedisServer, redis_client: Redis
) -> None:
    batcher = CommandBatcher(redis_server.url, timeout_s=TIMEOUT_S)
    call = asyncio.ensure_future(batcher.call("INCR", "q"))
    await asyncio.sleep(0)  # queued: its batch goes out on the loop's next round
    await batcher.aclose()
    await asyncio.sleep(0.05)  # the flush that was scheduled runs now, and finds nothing

    assert call.result() == 1
    clients = await redis_client.client_list()
    assert len(clients) == 1  # only this test's own client


async def test_the_url_s_password_user_and_database_are_used(
    redis_server: RedisServer, redis_client: Redis
) -> None:
    await redis_client.execute_command("ACL", "SETUSER", "denis", "on", ">s3cret", "~*", "+@all")
    await redis_client.config_set("requirepass", "hunter2")  # the default user's password
    port = redis_server.port
    urls = [f"redis://:hunter2@127.0.0.1:{port}/3", f"redis://denis:s3cret@127.0.0.1:{port}/3"]
    for count, url in enumerate(urls, start=1):
        batcher = CommandBatcher(url, timeout_s=TIMEOUT_S)
        try:
            assert await batcher.call("INCR", "in-db-3") == count
        finally:
            await batcher.aclose()
    assert await redis_client.get("in-db-3") is None  # this client is on database 0
    await redis_client.execute_command("SELECT", 3)
    assert await redis_client.get("in-db-3") == b"2"


async def test_a_wrong_password_is_each_caller_s_clear_error(
    redis_server: RedisServer, redis_client: Redis
) -> None:
    await redis_client.config_set("requirepass", "hunter2")
    batcher = CommandBatcher(f"redis://:wrong@127.0.0.1:{redis_server.port}/0", timeout_s=5.0)
    try:
        started = time.monotonic()
        results = await asyncio.gather(
            batcher.call("PING"), batcher.call("PING"), return_exceptions=True
        )
        assert time.monotonic() - started < 1.0  # refused, not left to time out
        assert all(isinstance(result, ResponseError) for result in results)
        assert all("WRONGPASS" in str(result) for result in results)
    finally:
        await batcher.aclose()


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.lists(
            st.one_of(
                st.text(max_size=40),
                st.binary(max_size=40),
                st.integers(),
                st.floats(allow_nan=False, allow_infinity=False),
            ),
            max_size=6,
        ).map(lambda args: ["EVALSHA", *args]),  # redis-py splits a first argument with spaces
        min_size=1,
        max_size=5,
    )
)
def test_pack_writes_what_redis_py_writes(commands: list[list[str | bytes | int | float]]) -> None:
    assert pack(commands) == b"".join(Connection().pack_commands(commands))


def test_pack_refuses_what_redis_cannot_take() -> None:
    with pytest.raises(TypeError):
        pack([("SET", "k", None)])  # type: ignore[list-item]
