"""The Neo4j graph store, over Bolt with the official async driver.

Pool of ``pool_size`` (20), acquisition timeout 2 s, and our own timeout around every call:
a hung server ignores the driver's query timeout, and managed transactions retry for up to
30 s by default, so reads run as auto-commit queries and writes in one explicit transaction,
neither retried by the driver. Driver errors become ``GraphError`` with the signal that names
them: ``neo4j.connect_error``, ``neo4j.query_timeout``, ``neo4j.pool_exhausted``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import neo4j
from neo4j import exceptions as neo4j_errors

from denis.graph.store import CypherStore, GraphError, Statement
from denis.resilience import Signal
from denis.settings import GraphSettings

__all__ = ["Neo4jGraphStore"]

T = TypeVar("T")
# The trace writer MERGEs on trace_id: without an index each row scans every trace stored so far
# (writer throughput fell from 76 to 30 traces/s between 0 and 15,000 traces).
_TRACE_INDEX = (
    "CREATE INDEX denis_decisiontrace_id IF NOT EXISTS FOR (x:DecisionTrace) ON (x.trace_id)"
)


class Neo4jGraphStore(CypherStore):
    def __init__(self, settings: GraphSettings) -> None:
        auth = (settings.user, settings.password or "") if settings.user else None
        self._driver = neo4j.AsyncGraphDatabase.driver(
            settings.url or "",
            auth=auth,
            max_connection_pool_size=settings.pool_size,
            connection_acquisition_timeout=settings.acquire_timeout_s,
            connection_timeout=settings.acquire_timeout_s,
            max_transaction_retry_time=0,
            liveness_check_timeout=None,
        )
        self._abandoned: set[asyncio.Future[Any]] = set()  # strong refs until they finish
        self._indexed = False

    async def _run(self, fn: Callable[[], Awaitable[T]], timeout_s: float) -> T:
        # The driver works in a task of its own, cancelled at our timeout while we return at
        # once. Cancelling the caller instead (asyncio.timeout) is not safe with this driver:
        # when a cancellation lands in one of its one-cycle sleeps it cancels the current task
        # again, so a CancelledError, not a TimeoutError, escaped into the request.
        work = asyncio.ensure_future(fn())
        try:
            done, _ = await asyncio.wait((work,), timeout=timeout_s)
        except asyncio.CancelledError:
            self._abandon(work)
            raise
        if not done:
            self._abandon(work)
            raise GraphError("Neo4j did not answer in time", Signal.NEO4J_QUERY_TIMEOUT)
        try:
            return work.result()
        except TimeoutError as exc:
            raise GraphError("Neo4j did not answer in time", Signal.NEO4J_QUERY_TIMEOUT) from exc
        except neo4j_errors.ConnectionAcquisitionTimeoutError as exc:
            raise GraphError(
                "Neo4j's connection pool is exhausted", Signal.NEO4J_POOL_EXHAUSTED
            ) from exc
        except (neo4j_errors.ServiceUnavailable, neo4j_errors.SessionExpired, OSError) as exc:
            raise GraphError("Neo4j is unreachable", Signal.NEO4J_CONNECT_ERROR) from exc
        except neo4j_errors.Neo4jError as exc:
            raise GraphError(f"Neo4j refused the query: {exc.code}") from exc
        except neo4j_errors.DriverError as exc:
            raise GraphError(
                f"the Neo4j driver failed: {type(exc).__name__}", Signal.NEO4J_CONNECT_ERROR
            ) from exc

    async def _read(self, query: str, params: dict[str, Any], timeout_s: float) -> list[list[Any]]:
        async def read() -> list[list[Any]]:
            async with self._driver.session(default_access_mode=neo4j.READ_ACCESS) as session:
                result = await session.run(neo4j.Query(query, timeout=timeout_s), params)
                return [list(record.values()) async for record in result]

        return await self._run(read, timeout_s)

    async def _write(self, statements: list[Statement], timeout_s: float) -> None:
        async def write() -> None:
            if not self._indexed:  # a schema change may not share a transaction with writes
                async with self._driver.session() as session:
                    await (await session.run(_TRACE_INDEX)).consume()
                self._indexed = True
            async with (
                self._driver.session() as session,
                await session.begin_transaction(timeout=timeout_s) as tx,
            ):
                for query, params in statements:
                    await tx.run(query, params)
                await tx.commit()

        await self._run(write, timeout_s)

    def _abandon(self, work: asyncio.Future[Any]) -> None:
        """Cancel a driver call nobody waits for any more; it cleans up in the background."""
        work.cancel()
        self._abandoned.add(work)
        work.add_done_callback(_forget)
        work.add_done_callback(self._abandoned.discard)

    async def close(self) -> None:
        await self._driver.close()


def _forget(work: asyncio.Future[Any]) -> None:
    """Retrieve an abandoned call's outcome, so asyncio does not log it as never retrieved."""
    if not work.cancelled():
        work.exception()
